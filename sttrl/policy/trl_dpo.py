"""``policy.stage=dpo`` through TRL's ``DPOTrainer`` (the trl extra): the teacher pairs (better, worse action at one
state, :func:`sttrl.policy.data.dpo_pairs`) as token ids, exactly as the learned controller reads and writes them
(:meth:`sttrl.policy.stages.Learner.prompt_ids`: the chat template; :meth:`~sttrl.policy.stages.Learner.decision_ids`:
the decision's JSON then end of sequence), so TRL's sigmoid DPO loss is computed on the controller's own tokens.
TRL's preference collator takes such ids as they are; its text preparation (chat template, ``<|im_end|>`` turn
suffix) is skipped because the ids are already the controller's. The reference is a frozen copy of the starting
model. Logged per step: TRL's loss, rewards and accuracies, and ``margin`` (the mean log-ratio margin,
``rewards/margins / beta``, as the stage did by hand).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sttrl.policy import core
from sttrl.policy.stages import Learner, stage_items


def _trainer_class() -> type:
    from trl import DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer over rows that already hold ``prompt_ids``, ``chosen_ids`` and ``rejected_ids``."""

        def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
            return dataset

    return TokenizedDPOTrainer


def train_dpo(
    lr: Learner, ds: Any, on_step: Callable[[dict[str, float]], None] | None = None
) -> list[dict[str, float]]:
    """DPO on teacher pairs through TRL (see the module docstring)."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import DPOConfig

    p = lr.cfg.policy
    rows = [
        {
            "prompt_ids": lr.prompt_ids(b["prompt"]),
            "chosen_ids": lr.decision_ids(b["decision"]),
            "rejected_ids": lr.decision_ids(w["decision"]),
        }
        for b, w in stage_items("dpo", ds, lr.cfg)
    ]
    device = next(lr.model.parameters()).device.type
    args = DPOConfig(
        output_dir=str(Path(lr.cfg.run.out_dir) / "policy-dpo-trainer"),
        beta=p.dpo_beta,
        learning_rate=p.lr,
        weight_decay=p.weight_decay,
        max_grad_norm=p.grad_clip if p.grad_clip is not None else 0.0,
        max_steps=p.steps,
        per_device_train_batch_size=p.batch_size,
        max_length=None,  # the whole prompt: the controller reads all of it
        seed=p.seed,
        gradient_checkpointing=False,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )

    class Log(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if not logs or "train_runtime" in logs:
                return
            stats = {"step": float(state.global_step)}
            stats.update({k: float(v) for k, v in logs.items() if isinstance(v, (int, float))})
            if "rewards/margins" in stats:
                stats["margin"] = stats["rewards/margins"] / p.dpo_beta
            lr.log.append(stats)
            if on_step:
                on_step(stats)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="trl")
        trainer = _trainer_class()(
            model=lr.model,
            ref_model=core.make_reference(lr.model),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=lr.tok,
            callbacks=[Log()],
        )
    trainer.remove_callback(PrinterCallback)  # Log reports each step once, in sttrl.learn's format
    trainer.train()
    lr.model.eval()
    return lr.log
