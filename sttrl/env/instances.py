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
from typing import Any

import numpy as np

from sttrl.config import Config, config_from_dict
from sttrl.config.instances import InstancesConfig, Split  # noqa: F401 - Split: the split names, used by callers


def draw(spec: InstancesConfig, seed: int) -> dict[str, Any]:
    """The instance of ``seed``: the same seed always gives the same instance (NumPy's seeded generator)."""
    rng = np.random.default_rng([int(seed), 0x5EED])
    out: dict[str, Any] = {"seed": int(seed), "split": spec.split_of(int(seed))}
    if spec.lr is not None:
        lo, hi = math.log(spec.lr[0]), math.log(spec.lr[1])
        out["lr"] = float(math.exp(rng.uniform(lo, hi))) if hi > lo else spec.lr[0]
    for name, key in (
        ("batch_sizes", "batch_size"),
        ("freeze_layers", "freeze_layers"),
        ("noise_snr_db", "noise_snr_db"),
        ("train_utterances", "train_utterances"),
        ("memory_budget_gb", "memory_budget_gb"),
    ):
        values = getattr(spec, name)
        if values is not None:
            v = values[int(rng.integers(len(values)))]
            out[key] = float(v) if isinstance(v, float) else int(v)
    return out


def apply(cfg: Config, seed: int) -> Config:
    """``cfg`` with the instance of ``seed`` written in (``env.instance`` records it); ``cfg`` unchanged when
    ``env.instances`` is not set."""
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
