"""``python -m graph.bench``: controllers side by side on the same compute budget.

Does an agent steering the run beat a fixed schedule, random control and a search method? Every
controller (``sttrl.controllers``: kind ``episode`` decides inside the real LangGraph episode, kind
``trials`` runs its own trials) gets the same training steps; the judge's WER on the hidden domain is the
outcome, paired by seed against a reference controller.

Modules
    ``budget``    the equal budget and the static search space
    ``trials``    the ``TrialsController`` interface and the context the benchmark hands it
    ``tpe``       Optuna TPE (``tpe``, alias ``optuna``), a trials controller
    ``episodes``  one episode: run, resume or read back (thread ``bench-<controller>-s<seed>``)
    ``results``   a run's numbers, the per-controller summary and the table
    ``stats``     paired statistics (bootstrap CI, Wilcoxon, Holm, probability of improvement, AUC)
    ``plot``      bench.png (validation WER over steps) and bench-paired.png (Δ hidden WER per instance)
    ``progress``  the progress display
    ``core``      ``Bench``: plan, run or resume, write bench.json
    ``cli``       the command line

Equal budget: an episode may spend ``env.max_actions x env.steps_per_action`` optimizer steps and
``max_actions + 1`` validation evaluations; what each run actually spent is recorded (``train_steps``
counts attempted steps, a rolled-back block included; ``evaluations`` the validation passes). Wall time is
reported, not matched. Resume: run the same command again; finished runs are skipped, unfinished ones
continue; ``DIR/bench.json`` is rewritten after every run.
"""

from __future__ import annotations

from graph.bench.budget import Budget, budget_of, encoder_layers, optuna_distributions, search_space, start_params, trial_hp
from graph.bench.cli import DEFAULT_CONTROLLERS, build_parser, main, plan_seeds
from graph.bench.common import FAULTS, SCHEMA, WallClock, config_differences, llm_unavailable, thread_id, with_seed
from graph.bench.core import Bench, check_controllers, run_bench
from graph.bench.results import curve_band, episode_result, markdown_table, summarize
from graph.bench.trials import BenchContext, TrialsController
from sttrl.errors import ConfigError

__all__ = [
    "Bench", "BenchContext", "Budget", "ConfigError", "DEFAULT_CONTROLLERS", "FAULTS", "SCHEMA", "TrialsController",
    "WallClock", "budget_of", "build_parser", "check_controllers", "config_differences", "curve_band",
    "encoder_layers", "episode_result", "llm_unavailable", "main", "markdown_table", "optuna_distributions",
    "plan_seeds", "run_bench", "search_space", "start_params", "summarize", "thread_id", "trial_hp", "with_seed",
]
