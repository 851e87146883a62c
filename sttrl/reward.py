"""The reward: WER gain minus a per-step penalty, minus a penalty for each fault."""

from __future__ import annotations

from typing import Literal

from sttrl.config import RewardConfig

Status = Literal["ok", "oom", "nan", "diverged"]
STATUSES: tuple[Status, ...] = ("ok", "oom", "nan", "diverged")


def reward(previous_wer: float, current_wer: float, status: str, cfg: RewardConfig) -> float:
    """(previous WER - current WER) - step_penalty - the penalty for ``status``.

    After a fault the model is rolled back, so ``current_wer`` is the restored model's WER and the
    gain is normally zero; the fault penalty carries the signal.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    penalty = {"ok": 0.0, "oom": cfg.oom_penalty, "nan": cfg.nan_penalty, "diverged": cfg.divergence_penalty}[status]
    return (previous_wer - current_wer) - cfg.step_penalty - penalty
