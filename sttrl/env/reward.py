"""The reward-kind registry and the reward of a step: a WER gain in the kind's units, minus a per-step penalty and a
fault penalty (``env.reward``).

A reward kind is added in one place: one :class:`RewardKind` registered below (and, so that an LLM controller is
told how it pays, one line in ``prompts/rewards.yaml``; the prompt refuses a kind without one). ``env.reward.kind``
is validated against this registry. Built in:

- ``seed``: the seed's formula, previous WER - current WER.
- ``log_ratio``: log(min(prev, clip) / min(cur, clip)) with both WERs floored: scale-free, so the first block of
  an untuned model (WER 3.4 from hallucination loops) does not dominate the return, and returns compare
  across presets. Fault penalties and the step penalty are subtracted in the same units as the gain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sttrl.errors import ConfigError
from sttrl.train.blocks import STATUSES

if TYPE_CHECKING:  # config imports this module (to validate env.reward.kind); the section is only read at call time
    from sttrl.config import RewardConfig

GainFn = Callable[[float, float, "RewardConfig"], float]


@dataclass(frozen=True)
class RewardKind:
    """One reward kind: ``gain(previous_wer, current_wer, cfg)`` in its own units, and what it pays in one line."""

    name: str
    description: str
    gain: GainFn


REWARD_KINDS: dict[str, RewardKind] = {}


def register(kind: RewardKind) -> RewardKind:
    """Add ``kind`` to the registry (a name is registered once)."""
    if kind.name in REWARD_KINDS:
        raise ValueError(f"reward kind {kind.name!r} is already registered")
    REWARD_KINDS[kind.name] = kind
    return kind


def reward_kind(name: str) -> RewardKind:
    """The registered kind ``name``; a ConfigError names the field and the valid kinds."""
    if name not in REWARD_KINDS:
        raise ConfigError(f"env.reward.kind={name!r} is not a reward kind; valid: {', '.join(sorted(REWARD_KINDS))}")
    return REWARD_KINDS[name]


def _seed_gain(previous_wer: float, current_wer: float, cfg: RewardConfig) -> float:
    return previous_wer - current_wer


def _log_ratio_gain(previous_wer: float, current_wer: float, cfg: RewardConfig) -> float:
    clip = lambda w: min(max(w, cfg.wer_floor), cfg.wer_clip)
    return math.log(clip(previous_wer) / clip(current_wer))


register(RewardKind("seed", "previous WER - current WER (the seed's formula; scale: the starting WER)", _seed_gain))
register(
    RewardKind(
        "log_ratio",
        "log(previous / current WER), both within [wer_floor, wer_clip]: scale-free, bounded at the start",
        _log_ratio_gain,
    )
)


def gain(previous_wer: float, current_wer: float, cfg: RewardConfig) -> float:
    """The WER improvement of one block in the units of ``cfg.kind``."""
    return reward_kind(cfg.kind).gain(previous_wer, current_wer, cfg)


def reward(previous_wer: float, current_wer: float, status: str, cfg: RewardConfig) -> float:
    """gain(previous WER, current WER) - step_penalty - the penalty for ``status``.

    After a fault the model is rolled back, so ``current_wer`` is the restored model's WER and the
    gain is normally zero; the fault penalty carries the signal.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    penalty = {"ok": 0.0, "oom": cfg.oom_penalty, "nan": cfg.nan_penalty, "diverged": cfg.divergence_penalty}[status]
    return gain(previous_wer, current_wer, cfg) - cfg.step_penalty - penalty
