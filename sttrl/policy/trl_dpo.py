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

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from sttrl.policy import core
from sttrl.policy.stages import Learner, stage_items
from sttrl.policy.trl_common import train, training_arguments
from sttrl.train.exclusive import exclusive


class TokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer over rows that already hold ``prompt_ids``, ``chosen_ids`` and ``rejected_ids``."""

    def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        return dataset


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def train_dpo(
    lr: Learner, ds: Any, on_step: Callable[[dict[str, float]], None] | None = None
) -> list[dict[str, float]]:
    """DPO on teacher pairs through TRL (see the module docstring)."""
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
    out = Path(lr.cfg.run.out_dir) / "policy-dpo-trainer"
    args = DPOConfig(
        beta=p.dpo_beta,
        max_length=None,  # the whole prompt: the controller reads all of it
        **training_arguments(lr.cfg, out, device, p.batch_size),
    )

    def margin(stats: dict[str, float]) -> None:
        if "rewards/margins" in stats:
            stats["margin"] = stats["rewards/margins"] / p.dpo_beta

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="trl")
        trainer = TokenizedDPOTrainer(
            model=lr.model,
            ref_model=core.make_reference(lr.model),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=lr.tok,
        )
    return train(trainer, lr, on_step, derive=margin)
