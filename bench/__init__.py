"""``python -m bench``: controllers side by side on the same compute budget.

Does an agent steering the run beat a fixed schedule, random control and a search method? Every
controller (``sttrl.control.registry``: kind ``episode`` decides inside the real LangGraph episode, kind
``trials`` runs its own trials) gets the same training budget; the judge's WER on the hidden domain is the
outcome, paired by test instance (``env.instances``: each run is drawn from a test instance, whose seed is
the pairing key recorded in bench.json) or, without an instance set, by seed, against a reference
controller (``schedule`` when it runs, else ``static``). With ``bench.replicates = R`` every controller runs R
times per instance, replicate ``r`` on the same data-order seed for every controller (common random numbers);
pairs are formed per (instance, replicate), and every comparison reports its minimum detectable effect.

Modules
    ``budget``         the equal budget (steps or samples) and the static search space
    ``trials``         the ``TrialsController`` interface, the context the benchmark hands it, judging a trial
    ``tpe``            Optuna TPE (``tpe``, alias ``optuna``), a trials controller
    ``sha``            successive halving whose promoted trials continue from their block checkpoints
    ``hybrid``         successive halving whose rung choices (who continues, the next lr) an LLM makes
    ``pbt``            Population Based Training through Ray Tune (weights carried by checkpoint)
    ``oracle``         the best static setting per instance in hindsight: regret only, not a contestant
    ``tune_schedule``  ``python -m bench.tune_schedule``: tunes the ``schedule`` controller (``sttrl.control.schedule``)
                       on train instances against hidden dev; writes the tuned file and its cost
    ``tune_contextual``, ``tune_lookahead``  the same for ``contextual`` (its map, chosen by cross-validation over
                       train instances) and ``lookahead`` (probe length, candidates, criterion, probe share)
    ``tuning``         what the tuning commands share (train instances only, hidden dev only, cost, --quick)
    ``lookahead``      the lookahead controller in the benchmark
    ``controllers``    registers every controller the benchmark runs (the driver and every worker import it)
    ``replicates``     replicates, their data-order seeds (common random numbers) and the run plan
    ``episodes``       one episode: run, resume or read back (thread ``bench-<controller>-s<seed>[-r<replicate>]``)
    ``executors``      local, a process pool (``--workers`` runs at once) or Ray (each run a Ray task)
    ``cluster``        the Ray cluster: loopback, or an existing one across machines (``--address``; code uploaded,
                       shared storage checked)
    ``results``        a run's numbers, the pairing key, the per-controller summary and the table
    ``stats``          paired statistics (bootstrap CI, Wilcoxon, Holm, probability of improvement, MDE by exact
                       noncentral t, regret, AUC) and the instances a target MDE needs
    ``plot``           bench.png (validation WER over the budget), bench-paired.png (Δ hidden WER per instance),
                       bench-actions.png (action raster: controller x instance x block)
    ``suites``         ``--suite smoke|cpu|full|decisive`` and their time estimates
    ``progress``       the progress display
    ``document``       bench.json and the figures
    ``core``           ``Bench``: plan, run or resume, write bench.json
    ``cli``            the command line

Equal budget (``env.budget_unit``): ``env.max_actions x env.steps_per_action`` optimizer steps, or
``env.max_actions x env.samples_per_action`` training samples (a trial of batch ``b`` trains ``samples / b``
steps), and ``max_actions + 1`` validation evaluations for an episode; what each run actually spent is
recorded (``train_steps`` counts attempted steps, a rolled-back block included; ``train_samples`` the
samples trained; ``evaluations`` the validation passes). Wall time is reported, not matched. Resume: run
the same command again; finished runs are skipped, unfinished ones continue; ``DIR/bench.json`` is
rewritten after every run.
"""

from __future__ import annotations

from bench.budget import Budget, budget_of, encoder_layers, optuna_distributions, search_space, start_params, trial_hp
from bench.cli import DEFAULT_CONTROLLERS, build_parser, main, plan_seeds
from bench.common import FAULTS, SCHEMA, WallClock, config_differences, llm_unavailable, with_seed
from bench.controllers import check_controllers
from bench.core import Bench, run_bench
from bench.replicates import Slot, data_seed, thread_id
from bench.results import curve_band, episode_result, markdown_table, pairing_key, summarize
from bench.suites import SUITES, get_suite
from bench.trials import BenchContext, TrialsController, judge_trial
from sttrl.errors import ConfigError

__all__ = [
    "Bench",
    "BenchContext",
    "Budget",
    "ConfigError",
    "DEFAULT_CONTROLLERS",
    "FAULTS",
    "SCHEMA",
    "SUITES",
    "Slot",
    "TrialsController",
    "WallClock",
    "budget_of",
    "build_parser",
    "check_controllers",
    "config_differences",
    "curve_band",
    "data_seed",
    "encoder_layers",
    "episode_result",
    "get_suite",
    "judge_trial",
    "llm_unavailable",
    "main",
    "markdown_table",
    "optuna_distributions",
    "pairing_key",
    "plan_seeds",
    "run_bench",
    "search_space",
    "start_params",
    "summarize",
    "thread_id",
    "trial_hp",
    "with_seed",
]
