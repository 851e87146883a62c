"""The benchmark's equal budget and the static search space that trial-running controllers draw from.

The budget is counted in the config's unit (``env.budget_unit``). ``steps``: an episode may spend
``env.max_actions x env.steps_per_action`` optimizer steps; ``samples``: ``env.max_actions x
env.samples_per_action`` training samples, whatever the batch size; either way ``max_actions + 1`` validation
evaluations. A trials controller gets the same total: ``K`` trials (``--trials``, default ``K = max_actions``)
of ``floor(total / K)`` units each, one evaluation per trial; in samples, a trial of batch ``b`` (accumulation
``a``) trains ``ceil(units / (b x a))`` optimizer steps (exact when it divides, as an episode's block).

Search space: what an episode can reach from the preset's start within ``max_actions`` decisions, applying
sttrl's own actions and bounds per dimension (lr log-uniform between the lowest and highest reachable
values, batch sizes reachable, frozen layers an integer range); ``bench.tpe_lr_max`` caps the lr range
below values known to collapse the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from graph import live
from sttrl import extras
from sttrl.config import Config
from sttrl.env.actions import Action, apply
from sttrl.errors import ConfigError
from sttrl.train.blocks import Hyperparams


@dataclass(frozen=True)
class Budget:
    """What one episode may spend, and how a trials controller's trials share the same training budget
    (``unit``: steps or samples, see the module docstring)."""

    max_actions: int
    steps_per_action: int
    optuna_trials: int
    unit: Literal["steps", "samples"] = "steps"
    samples_per_action: int | None = None

    @property
    def per_action(self) -> int:
        """Units one block trains: optimizer steps, or training samples."""
        if self.unit == "samples":
            assert self.samples_per_action is not None
            return self.samples_per_action
        return self.steps_per_action

    @property
    def total(self) -> int:
        """The episode's training budget in ``unit``."""
        return self.max_actions * self.per_action

    @property
    def train_steps(self) -> int:
        """Optimizer steps of the budget (``unit=steps``); in samples, the steps at ``steps_per_action`` per
        block, used only to size progress bars."""
        return self.max_actions * self.steps_per_action

    @property
    def units_per_trial(self) -> int:
        return self.total // self.optuna_trials

    def steps_for(self, units: int, hp: Hyperparams) -> int:
        """Optimizer steps that train ``units`` of the budget at ``hp`` (at least one)."""
        if self.unit == "samples":
            return max(1, math.ceil(units / (hp.batch_size * hp.grad_accum)))
        return max(1, units)

    def spent(self, steps: int, hp: Hyperparams) -> int:
        """Units that ``steps`` optimizer steps at ``hp`` spend."""
        return steps * hp.batch_size * hp.grad_accum if self.unit == "samples" else steps

    @property
    def evaluations(self) -> int:
        return self.max_actions + 1

    @property
    def steps_per_trial(self) -> int:
        """Optimizer steps per trial (``unit=steps``; in samples see :meth:`steps_for`)."""
        return self.train_steps // self.optuna_trials

    @property
    def n_startup_trials(self) -> int:
        """Random trials before TPE models the history, fitted to the number of trials: half of them,
        at least 1 (the enqueued start) and at most Optuna's default 10."""
        return min(10, max(1, self.optuna_trials // 2))

    def to_dict(self) -> dict[str, Any]:
        if self.unit == "samples":
            return {
                "unit": "samples",
                "episode": {
                    "max_actions": self.max_actions,
                    "samples_per_action": self.samples_per_action,
                    "train_samples": self.total,
                    "evaluations": self.evaluations,
                },
                "optuna": {
                    "trials": self.optuna_trials,
                    "samples_per_trial": self.units_per_trial,
                    "train_samples": self.units_per_trial * self.optuna_trials,
                    "evaluations": self.optuna_trials,
                    "n_startup_trials": self.n_startup_trials,
                },
            }
        return {
            "episode": {
                "max_actions": self.max_actions,
                "steps_per_action": self.steps_per_action,
                "train_steps": self.train_steps,
                "evaluations": self.evaluations,
            },
            "optuna": {
                "trials": self.optuna_trials,
                "steps_per_trial": self.steps_per_trial,
                "train_steps": self.steps_per_trial * self.optuna_trials,
                "evaluations": self.optuna_trials,
                "n_startup_trials": self.n_startup_trials,
            },
        }


def budget_of(cfg: Config, optuna_trials: int | None = None) -> Budget:
    """The budget of ``cfg``; ``optuna_trials`` trials share its training steps (default ``max_actions``)."""
    trials = cfg.env.max_actions if optuna_trials is None else optuna_trials
    if trials < 1:
        raise ConfigError("--optuna-trials must be at least 1")
    env = cfg.env
    b = Budget(env.max_actions, env.steps_per_action, trials, env.budget_unit, env.samples_per_action)
    if b.units_per_trial < 1:
        raise ConfigError(
            f"--optuna-trials {trials} leaves less than one training {b.unit[:-1]} per trial "
            f"(budget {b.total} {b.unit})"
        )
    return b


def _reachable(start: Hyperparams, actions: Sequence[Action], cfg: Config, max_freeze: int) -> list[Hyperparams]:
    seen, frontier = {start}, {start}
    for _ in range(cfg.env.max_actions):
        nxt = {apply(hp, a, cfg.train, max_freeze).hp for hp in frontier for a in actions}
        frontier = {_rounded(hp) for hp in nxt} - seen
        seen |= frontier
    return sorted(seen, key=lambda h: (h.lr, h.batch_size, h.freeze_layers))


def _rounded(hp: Hyperparams) -> Hyperparams:
    """``hp`` with its lr rounded to 12 significant digits (x1.5 then /1.5 must meet the start again)."""
    return Hyperparams(float(f"{hp.lr:.12g}"), hp.batch_size, hp.grad_accum, hp.freeze_layers)


def search_space(cfg: Config, max_freeze: int, lr_cap: float | None = None) -> dict[str, Any]:
    """The static configurations an episode can reach within its budget, per dimension:
    ``{"lr": (lo, hi), "batch_size": [sizes], "freeze_layers": (lo, hi), "grad_accum": n}``; ``lr_cap``
    lowers the lr's upper end (never below its lower end)."""
    start = Hyperparams.from_config(cfg.train, max_freeze)
    enabled = set(cfg.env.actions)

    def dim(*names: Action) -> list[Hyperparams]:
        return _reachable(start, [a for a in names if a.value in enabled], cfg, max_freeze)

    lrs = [h.lr for h in dim(Action.LR_UP, Action.LR_DOWN)]
    lo, hi = min(lrs), max(lrs)
    if lr_cap is not None:
        hi = max(lo, min(hi, lr_cap))
    batches = sorted({h.batch_size for h in dim(Action.BATCH_UP, Action.BATCH_DOWN)})
    freezes = [h.freeze_layers for h in dim(Action.FREEZE_MORE, Action.FREEZE_LESS)]
    return {
        "lr": (lo, hi),
        "batch_size": batches,
        "freeze_layers": (min(freezes), max(freezes)),
        "grad_accum": start.grad_accum,
    }


def optuna_distributions(space: dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions of the dimensions that can move (a fixed dimension is left out)."""
    extras.require("optuna", extra="bench", what="the tpe controller")
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # optional: bench

    out: dict[str, Any] = {}
    lo, hi = space["lr"]
    if hi > lo:
        out["lr"] = FloatDistribution(lo, hi, log=True)
    if len(space["batch_size"]) > 1:
        out["batch_size"] = CategoricalDistribution(list(space["batch_size"]))
    lo_f, hi_f = space["freeze_layers"]
    if hi_f > lo_f:
        out["freeze_layers"] = IntDistribution(lo_f, hi_f)
    return out


def start_params(cfg: Config, space: dict[str, Any], max_freeze: int) -> dict[str, Any]:
    """The instance's starting hyperparameters as params of the moving dimensions (clipped into the space),
    for ``study.enqueue_trial``."""
    start = Hyperparams.from_config(cfg.train, max_freeze)
    dists = optuna_distributions(space)
    out: dict[str, Any] = {}
    if "lr" in dists:
        out["lr"] = min(max(start.lr, space["lr"][0]), space["lr"][1])
    if "batch_size" in dists:
        out["batch_size"] = start.batch_size
    if "freeze_layers" in dists:
        out["freeze_layers"] = start.freeze_layers
    return out


def trial_hp(space: dict[str, Any], params: dict[str, Any]) -> Hyperparams:
    """The hyperparameters of a trial: its sampled params, the fixed dimensions from ``space``."""
    return Hyperparams(
        lr=float(params.get("lr", space["lr"][0])),
        batch_size=int(params.get("batch_size", space["batch_size"][0])),
        grad_accum=int(space["grad_accum"]),
        freeze_layers=int(params.get("freeze_layers", space["freeze_layers"][0])),
    )


def encoder_layers(cfg: Config) -> int:
    """Encoder layers of the configured model, read from its config (no weights are loaded)."""
    if cfg.model.source == "builtin":
        return cfg.model.encoder_layers
    from transformers import WhisperConfig  # heavy: the benchmark's CLI and dry run stay without it

    from sttrl.train.model import resolve_model_dir  # torch, as above

    src = resolve_model_dir(cfg.model, cfg.data.cache_dir, progress=False)
    kw = {"revision": cfg.model.revision, "token": live.hf_token()} if cfg.model.source == "hub" else {}
    return int(WhisperConfig.from_pretrained(src, **kw).encoder_layers)
