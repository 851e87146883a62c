"""The device a run trains on and the one seeding function."""

from __future__ import annotations

import random

import numpy as np
import torch

from sttrl.errors import ConfigError


def seed_everything(seed: int) -> None:
    """The one seeding function: Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device=cuda but no CUDA device is available; use run.device=cpu or auto")
    return torch.device(name)
