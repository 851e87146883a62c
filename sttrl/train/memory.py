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

- Each new thread that runs torch ops keeps ~35 MB of its own buffers (OpenMP team, BLAS and oneDNN
  per-thread state) for the life of the process. LangGraph runs each node on whichever pool thread is
  free, so an episode's blocks ran on ever new threads: heap in use grew from 0.44 to 0.55 GB over six
  blocks on four rotating threads, and stayed flat on one. :func:`torch_thread` runs the decorated
  function on one dedicated thread (inline when called from the main thread or from that thread).

None of this changes what is computed, only where freed memory goes and which thread computes it.
"""

from __future__ import annotations

import contextvars
import ctypes
import ctypes.util
import functools
import gc
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import lru_cache
from typing import Any, TypeVar

from sttrl.train.exclusive import exclusive_compute

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


F = TypeVar("F", bound=Callable[..., Any])


class _TorchThread:
    """One daemon thread that runs submitted calls in order, each in a copy of the caller's context
    (so LangGraph's stream writer and other context variables still work inside)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def _loop(self) -> None:
        while True:
            fut, ctx, fn, args, kw = self._queue.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = ctx.run(fn, *args, **kw)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, which re-raises it
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    def run(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        current = threading.current_thread()
        if current is threading.main_thread() or current is self._thread:
            return fn(*args, **kw)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                # daemon: Ctrl-C and interpreter exit never wait for a block to finish (writes are atomic)
                self._thread = threading.Thread(target=self._loop, name="sttrl-torch", daemon=True)
                self._thread.start()
        fut: Future = Future()
        self._queue.put((fut, contextvars.copy_context(), fn, args, kw))
        return fut.result()


_TORCH_THREAD = _TorchThread()


def torch_thread(fn: F) -> F:
    """Run ``fn`` on the process's one torch thread (see the module docstring), under the machine's compute lock
    when one is set (:mod:`sttrl.train.exclusive`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        with exclusive_compute():  # the machine's compute lock, when STTRL_COMPUTE_LOCK is set
            return _TORCH_THREAD.run(fn, *args, **kw)

    return wrapper  # type: ignore[return-value]
