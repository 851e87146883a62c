"""``env.instances``: the schema of an instance set (the distribution of starting conditions);
drawing from it is :mod:`sttrl.env.instances`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Split = Literal["train", "test", "other"]


class InstancesConfig(BaseModel):
    """``env.instances``: a distribution of starting conditions; a field left null keeps the preset's value."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    lr: tuple[float, float] | None = Field(None, description="Starting lr, log-uniform between these bounds.")
    batch_sizes: list[int] | None = Field(None, min_length=1, description="Starting batch size, uniform over these.")
    freeze_layers: list[int] | None = Field(None, min_length=1, description="Starting frozen encoder layers.")
    noise_snr_db: list[float] | None = Field(
        None,
        min_length=1,
        description="Audio noise level (SNR dB) of the "
        "instance's data: a variation that changes the best learning rate.",
    )
    train_utterances: list[int] | None = Field(None, min_length=1, description="Training-set size of the instance.")
    memory_budget_gb: list[float] | None = Field(
        None,
        min_length=1,
        description="Training-memory budget (GB); big batches exceed a small one (an oom transition).",
    )
    train_seeds: list[int] = Field(
        default_factory=lambda: list(range(0, 16)),
        min_length=1,
        description="Instances for tuning anything (thresholds, prompts, schedules).",
    )
    test_seeds: list[int] = Field(
        default_factory=lambda: list(range(1000, 1016)),
        min_length=1,
        description="Instances for reported results only.",
    )

    @model_validator(mode="after")
    def _check(self) -> InstancesConfig:
        if self.lr is not None and not 0 < self.lr[0] <= self.lr[1]:
            raise ValueError(f"env.instances.lr must be an increasing pair of positive numbers (got {list(self.lr)})")
        for name in ("batch_sizes", "freeze_layers", "train_utterances"):
            values = getattr(self, name)
            if values is not None and min(values) < (0 if name == "freeze_layers" else 1):
                raise ValueError(f"env.instances.{name} holds an invalid value: {values}")
        overlap = sorted(set(self.train_seeds) & set(self.test_seeds))
        if overlap:
            raise ValueError(f"env.instances.train_seeds and env.instances.test_seeds overlap: {overlap[:5]}")
        for name in ("train_seeds", "test_seeds"):
            seeds = getattr(self, name)
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"env.instances.{name} repeats a seed")
        return self

    def check_bounds(self, lr_min: float, lr_max: float, batch_min: int, batch_max: int) -> None:
        """The distribution must lie inside the train bounds (called by the Config validator)."""
        if self.lr is not None and not (lr_min <= self.lr[0] and self.lr[1] <= lr_max):
            raise ValueError(
                f"env.instances.lr {list(self.lr)} must lie within [train.lr_min, train.lr_max] = [{lr_min}, {lr_max}]"
            )
        if self.batch_sizes is not None and not all(batch_min <= b <= batch_max for b in self.batch_sizes):
            raise ValueError(
                f"env.instances.batch_sizes {self.batch_sizes} must lie within [train.batch_min, "
                f"train.batch_max] = [{batch_min}, {batch_max}]"
            )

    def split_of(self, seed: int) -> Split:
        return "train" if seed in self.train_seeds else "test" if seed in self.test_seeds else "other"
