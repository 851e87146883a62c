"""Keeping a long CPU episode's resident memory close to what its tensors need (glibc only; no-op elsewhere).

Two measured causes made a ``cpu`` episode's peak RSS 0.6–0.8 GB larger than its live data
(``benchmarks/memory.py``, README "Benchmarks"):

- glibc gives each thread that allocates its own arena (up to 8 per core). LangGraph runs sync nodes
  in worker threads, so training and evaluation filled different arenas and neither reused the
  other's freed blocks: RSS grew by ~0.3 GB per evaluation. :func:`limit_arenas` caps the arenas at one
  (``mallopt(M_ARENA_MAX, 1)``, the same as ``MALLOC_ARENA_MAX=1``); it has to run before the threads
  allocate, so every entry point calls it first.
- Freed activations and generation buffers stay in the heap until glibc trims it, which it rarely does
  for a fragmented heap. :func:`release_memory` (``malloc_trim(0)``) hands them back at block
  boundaries: before a checkpoint is written, after an evaluation, before the judge.

Both only change when freed memory goes back to the operating system, never what is computed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import lru_cache

M_ARENA_MAX = -8  # from glibc's malloc.h


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl and other C libraries have neither function: leave the allocator alone there.
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_arenas_limited = False


def limit_arenas(n: int = 1) -> bool:
    """Cap glibc's malloc arenas at ``n`` for this process (idempotent); True when applied."""
    global _arenas_limited
    libc = _libc()
    if libc is None:
        return False
    if not _arenas_limited:
        _arenas_limited = bool(libc.mallopt(M_ARENA_MAX, n))
    return _arenas_limited


def release_memory(collect: bool = False) -> None:
    """Return the allocator's free memory to the operating system (``malloc_trim(0)``: ~0.3 ms here).

    ``collect`` runs ``gc.collect()`` first, for when a large object graph with cycles was just dropped
    (a whole episode runtime); it costs ~0.2 s with transformers loaded, so block boundaries skip it:
    tensors are freed by reference counting."""
    if collect:
        gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
