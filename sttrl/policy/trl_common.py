"""What sttrl's stages on TRL's trainers share (:mod:`sttrl.policy.grpo`, :mod:`sttrl.policy.trl_dpo`): the
``policy`` section's optimizer settings as ``transformers.TrainingArguments`` fields, a callback that reports each
logged step in ``sttrl.learn``'s format, and training without TRL's own console printer. Needs the trl extra."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, TrainerCallback

from sttrl.config import Config
from sttrl.policy.stages import Learner


def training_arguments(cfg: Config, out: Path, device: str, batch_size: int) -> dict[str, Any]:
    """``policy.lr``, ``weight_decay``, ``grad_clip``, ``steps`` and ``seed`` as TrainingArguments fields, on
    ``device``, logging every step, saving nothing (``sttrl.learn`` writes the model directory)."""
    p = cfg.policy
    return {
        "output_dir": str(out),
        "learning_rate": p.lr,
        "weight_decay": p.weight_decay,
        "max_grad_norm": p.grad_clip if p.grad_clip is not None else 0.0,
        "max_steps": p.steps,
        "per_device_train_batch_size": batch_size,
        "seed": p.seed,
        "gradient_checkpointing": False,
        "use_cpu": device == "cpu",
        "bf16": device == "cuda",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
    }


def train(
    trainer: Any,
    lr: Learner,
    on_step: Callable[[dict[str, float]], None] | None,
    derive: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Run ``trainer``; every logged step's numbers go to ``lr.log`` and ``on_step`` (``derive`` adds fields)."""

    class Log(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if not logs or "train_runtime" in logs:  # the closing summary is not a step
                return
            stats = {"step": float(state.global_step)}
            stats.update({k: float(v) for k, v in logs.items() if isinstance(v, (int, float))})
            if derive is not None:
                derive(stats)
            lr.log.append(stats)
            if on_step:
                on_step(stats)

    trainer.remove_callback(PrinterCallback)  # Log reports each step once
    trainer.add_callback(Log())
    trainer.train()
    lr.model.eval()
    return lr.log
