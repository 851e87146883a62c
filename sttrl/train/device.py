"""The device a run trains on, the one seeding function, and deterministic kernels.

Why :func:`deterministic` exists (measured, 2026-12-02): with two CPU threads, two identical backward passes of
the ``cpu`` preset's Whisper in one process gave different gradients for ``model.decoder.embed_positions.weight``
only, and every later number drifted (training loss 1e-7 after one block, then hidden WER). The positional
embedding is read as ``weight[position_ids]``; the backward of that index is ``index_put_(accumulate=True)``,
which torch runs as parallel atomic float adds on CPU when more than one thread is set and the gradient has at
least 32,768 elements (the debug preset's is smaller, and one thread runs it serially: both were bit-exact).
Atomic adds land in the order the threads reach them, so the sum changes from run to run, in a fresh process as
much as after other work. ``torch.use_deterministic_algorithms`` selects the serial kernel.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from sttrl.errors import ConfigError


def seed_everything(seed: int) -> None:
    """The one seeding function: Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def deterministic(enabled: bool = True) -> None:
    """Deterministic kernels for this process (``run.deterministic``; see the module docstring): torch's
    deterministic algorithms, warn-only so an op without a deterministic kernel still runs; on CUDA cuBLAS also
    needs ``CUBLAS_WORKSPACE_CONFIG`` before its first call, set here when the environment does not."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device=cuda but no CUDA device is available; use run.device=cpu or auto")
    return torch.device(name)
