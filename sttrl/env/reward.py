"""The reward of a step, by kind (``env.reward.kind``): a WER gain minus a per-step penalty and a fault penalty.

- ``seed``: the seed's formula, previous WER - current WER.
- ``log_ratio``: log(min(prev, clip) / min(cur, clip)) with both WERs floored: scale-free, so the first block of
  an untuned model (WER 3.4 from hallucination loops) does not dominate the return, and returns compare
  across presets. Fault penalties and the step penalty are subtracted in the same units as the gain.
"""

from __future__ import annotations

import math

from sttrl.config import RewardConfig
from sttrl.train.blocks import STATUSES


def gain(previous_wer: float, current_wer: float, cfg: RewardConfig) -> float:
    """The WER improvement of one block in the units of ``cfg.kind``."""
    if cfg.kind == "log_ratio":
        clip = lambda w: min(max(w, cfg.wer_floor), cfg.wer_clip)
        return math.log(clip(previous_wer) / clip(current_wer))
    return previous_wer - current_wer


def reward(previous_wer: float, current_wer: float, status: str, cfg: RewardConfig) -> float:
    """gain(previous WER, current WER) - step_penalty - the penalty for ``status``.

    After a fault the model is rolled back, so ``current_wer`` is the restored model's WER and the
    gain is normally zero; the fault penalty carries the signal.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    penalty = {"ok": 0.0, "oom": cfg.oom_penalty, "nan": cfg.nan_penalty, "diverged": cfg.divergence_penalty}[status]
    return gain(previous_wer, current_wer, cfg) - cfg.step_penalty - penalty
