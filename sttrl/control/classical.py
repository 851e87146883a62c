"""Classical controllers that read the observation: rule-based, random, and static (keep every step).

Each is an episode controller (``sttrl.control.registry``): ``decide(observation, history) -> Decided``;
``history`` is the list of trajectory records so far (dicts with ``action``, ``status``,
``observation``…). Policies keep no hidden state, so an episode resumed from its trajectory decides
exactly as an uninterrupted one. They register themselves at the bottom of this module.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sttrl.control.spec import ControllerSpec, register
from sttrl.env.actions import ALL_ACTIONS, Action
from sttrl.env.decision import Decided
from sttrl.errors import ConfigError


def _allowed(actions: list[str] | tuple[str, ...], *wanted: Action) -> Action | None:
    for a in wanted:
        if a.value in actions:
            return a
    return None


@dataclass
class RulePolicy:
    """Repair faults first, keep while validation WER falls, cool the lr on a rise or a plateau, then stop.

    - nan/diverged -> lr_down; oom -> batch_down (or freeze_more at the smallest batch).
    - WER rose by more than ``rise_tol`` -> lr_down.
    - WER fell by less than ``min_delta`` -> lr_down once per plateau, then stop on the next flat block.
    - otherwise keep.
    """

    actions: tuple[str, ...] = ALL_ACTIONS
    min_delta: float = 0.01
    rise_tol: float = 0.02
    name: str = "rule"

    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided:
        action, why = self._choose(observation, history)
        return Decided(action, why, self.name)

    def _choose(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> tuple[Action, str]:
        o = observation
        keep = _allowed(self.actions, Action.KEEP, Action.LR_DOWN) or Action(self.actions[0])
        status = o.get("status", "ok")
        if status in ("nan", "diverged"):
            a = _allowed(self.actions, Action.LR_DOWN, Action.BATCH_UP) or keep
            return a, f"the last block ended {status} and was rolled back: lower the learning rate ({o['lr']:.3g})"
        if status == "oom":
            if o["batch_size"] > 1:
                a = _allowed(self.actions, Action.BATCH_DOWN, Action.FREEZE_MORE) or keep
            else:
                a = _allowed(self.actions, Action.FREEZE_MORE) or keep
            return a, f"out of memory at batch {o['batch_size']}: reduce memory"
        if not history:
            return keep, f"first block: train with the starting settings (WER {o['wer']:.3f})"
        gain = o["previous_wer"] - o["wer"]
        if gain < -self.rise_tol:
            a = _allowed(self.actions, Action.LR_DOWN) or keep
            return a, f"WER rose by {-gain:.3f} to {o['wer']:.3f}: lower the learning rate"
        if gain < self.min_delta:
            last = history[-1]
            cooled = last.get("action") == Action.LR_DOWN.value and last.get("status") == "ok"
            if cooled and Action.STOP.value in self.actions:
                return Action.STOP, f"WER flat ({gain:+.3f}) even after lowering the lr: stop at {o['wer']:.3f}"
            a = _allowed(self.actions, Action.LR_DOWN) or keep
            return a, f"WER gain {gain:+.3f} below {self.min_delta}: lower the learning rate"
        return keep, f"WER fell by {gain:.3f} to {o['wer']:.3f}: keep going"


@dataclass
class RandomPolicy:
    """Uniform over the enabled actions except ``stop`` (so the budget is spent), seeded by step index."""

    actions: tuple[str, ...] = ALL_ACTIONS
    seed: int = 0
    name: str = "random"

    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided:
        rng = random.Random(self.seed * 100_003 + len(history))
        choices = [a for a in self.actions if a != Action.STOP.value] or list(self.actions)
        a = Action(rng.choice(choices))
        return Decided(a, f"random choice among {len(choices)} actions", self.name)


@dataclass
class StaticPolicy:
    """The fixed schedule: the preset's starting hyperparameters, ``keep`` every step."""

    actions: tuple[str, ...] = ALL_ACTIONS
    name: str = "static"

    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided:
        return Decided(Action.KEEP, "fixed schedule: keep the starting hyperparameters", self.name)


def _static(cfg: Any, seed: int = 0, **_: Any) -> StaticPolicy:
    acts = tuple(cfg.env.actions)
    if Action.KEEP.value not in acts:
        raise ConfigError("the static policy needs the 'keep' action; enable it in env.actions")
    return StaticPolicy(acts)


register(
    ControllerSpec(
        "rule",
        "episode",
        lambda cfg, seed=0, **_: RulePolicy(tuple(cfg.env.actions)),
        "repair faults, cool the lr on a rise or plateau, stop when flat",
        color="#2ca02c",
    )
)
register(
    ControllerSpec(
        "random",
        "episode",
        lambda cfg, seed=0, **_: RandomPolicy(tuple(cfg.env.actions), seed),
        "a uniformly random action per step (never stop), seeded",
        color="#ff7f0e",
    )
)
register(ControllerSpec("static", "episode", _static, "keep the starting hyperparameters every step", color="#1f77b4"))
