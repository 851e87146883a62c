"""Instance sets (DACBench's term): the distribution of starting conditions an episode is drawn from.

An *instance* is a starting configuration a user brings (learning rate, batch size, frozen layers) and a
*problem variation* that changes which settings are best (audio noise, training-set size, a memory budget
that makes big batches fail). ``env.instances`` declares the distribution; :func:`draw` turns a reset seed
into one instance deterministically, and :func:`apply` writes it into a config (recorded as
``env.instance``, so the run record, the trajectory and the judge all carry it). Two fixed, disjoint seed
lists: *train* instances, on which anything is tuned, and *test* instances, used only for reported results.
A controller sees the starting configuration and the observable conditions (the memory budget), never the
best setting.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from sttrl.config import Config

Split = Literal["train", "test", "other"]


class InstancesConfig(BaseModel):
    """``env.instances``: a distribution of starting conditions; a field left null keeps the preset's value."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    lr: tuple[float, float] | None = Field(None, description="Starting lr, log-uniform between these bounds.")
    batch_sizes: list[int] | None = Field(None, min_length=1, description="Starting batch size, uniform over these.")
    freeze_layers: list[int] | None = Field(None, min_length=1, description="Starting frozen encoder layers.")
    noise_snr_db: list[float] | None = Field(None, min_length=1, description="Audio noise level (SNR dB) of the "
                                             "instance's data: a variation that changes the best learning rate.")
    train_utterances: list[int] | None = Field(None, min_length=1, description="Training-set size of the instance.")
    memory_budget_gb: list[float] | None = Field(None, min_length=1, description="Training-memory budget (GB); big "
                                                 "batches exceed a small one (an oom transition).")
    train_seeds: list[int] = Field(default_factory=lambda: list(range(0, 16)), min_length=1,
                                   description="Instances for tuning anything (thresholds, prompts, schedules).")
    test_seeds: list[int] = Field(default_factory=lambda: list(range(1000, 1016)), min_length=1,
                                  description="Instances for reported results only.")

    @model_validator(mode="after")
    def _check(self) -> "InstancesConfig":
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
            raise ValueError(f"env.instances.lr {list(self.lr)} must lie within [train.lr_min, train.lr_max] = "
                             f"[{lr_min}, {lr_max}]")
        if self.batch_sizes is not None and not all(batch_min <= b <= batch_max for b in self.batch_sizes):
            raise ValueError(f"env.instances.batch_sizes {self.batch_sizes} must lie within [train.batch_min, "
                             f"train.batch_max] = [{batch_min}, {batch_max}]")

    def split_of(self, seed: int) -> Split:
        return "train" if seed in self.train_seeds else "test" if seed in self.test_seeds else "other"


def draw(spec: InstancesConfig, seed: int) -> dict[str, Any]:
    """The instance of ``seed``: the same seed always gives the same instance (NumPy's seeded generator)."""
    rng = np.random.default_rng([int(seed), 0x5EED])
    out: dict[str, Any] = {"seed": int(seed), "split": spec.split_of(int(seed))}
    if spec.lr is not None:
        lo, hi = math.log(spec.lr[0]), math.log(spec.lr[1])
        out["lr"] = float(math.exp(rng.uniform(lo, hi))) if hi > lo else spec.lr[0]
    for name, key in (("batch_sizes", "batch_size"), ("freeze_layers", "freeze_layers"),
                      ("noise_snr_db", "noise_snr_db"), ("train_utterances", "train_utterances"),
                      ("memory_budget_gb", "memory_budget_gb")):
        values = getattr(spec, name)
        if values is not None:
            v = values[int(rng.integers(len(values)))]
            out[key] = float(v) if isinstance(v, float) else int(v)
    return out


def apply(cfg: "Config", seed: int) -> "Config":
    """``cfg`` with the instance of ``seed`` written in (``env.instance`` records it); ``cfg`` unchanged when
    ``env.instances`` is not set."""
    from sttrl.config import config_from_dict

    spec = cfg.env.instances
    if spec is None:
        return cfg
    inst = draw(spec, seed)
    data = cfg.to_dict()
    train, dcfg = data["train"], data["data"]
    if "lr" in inst:
        train["lr"] = inst["lr"]
    if "batch_size" in inst:
        train["batch_size"] = inst["batch_size"]
    if "freeze_layers" in inst:
        train["freeze_layers"] = inst["freeze_layers"]
    if "memory_budget_gb" in inst:
        train["memory_budget_gb"] = inst["memory_budget_gb"]
    if "noise_snr_db" in inst:
        dcfg["noise_snr_db"] = inst["noise_snr_db"]
    if "train_utterances" in inst:
        dcfg["max_train_utterances"] = inst["train_utterances"]
    data["env"]["instance"] = inst
    return config_from_dict(data)


def observable(instance: dict[str, Any] | None) -> dict[str, Any]:
    """What a controller may see of an instance: its seed and split, and the conditions a user would know
    (the memory budget, the training-set size); not the noise level, which it must infer from the numbers."""
    if not instance:
        return {}
    return {k: instance[k] for k in ("seed", "split", "memory_budget_gb", "train_utterances") if k in instance}
