"""One machine's torch compute, one process at a time: a lock file that processes sharing a machine take around
every training block, evaluation and judge (everything :func:`sttrl.train.memory.torch_thread` runs), and around
the compute outside an episode: a decoder's evaluation, a local LLM's loading and generation, the learned
controller's training and decisions, weight conversions (each decorated with :func:`exclusive`).

Off unless ``STTRL_COMPUTE_LOCK`` names a file. Two torch processes computing at once on a small machine slow each
other 2–10× (measured on 2 cores: OpenMP teams spin against each other), and several workers sharing one GPU can
run out of its memory together; with the lock their imports, data loading, I/O and waiting still overlap, their
compute does not. The test suite sets it for its pytest-xdist workers (tests/conftest.py), so that no two trainings
ever run at once while the rest of the suite does.

The lock is ``flock`` on an open file: the kernel drops it when its process dies, so a killed episode never leaves
it held. Within one process it is re-entrant (a count): nested and concurrent calls of one process share it.
:func:`holding` keeps it for a whole block of code and hides the variable from child processes started inside,
which then compute under the parent's hold instead of waiting for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ENV = "STTRL_COMPUTE_LOCK"


class _ProcessLock:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._count = 0
        self._fd: int | None = None

    def acquire(self, path: str) -> None:
        with self._mutex:
            if self._count == 0:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._count += 1

    def release(self) -> None:
        with self._mutex:
            self._count -= 1
            if self._count == 0 and self._fd is not None:
                fd, self._fd = self._fd, None
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def pause(self) -> int | None:
        with self._mutex:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            return self._fd

    @property
    def held(self) -> bool:
        return self._count > 0


_LOCK = _ProcessLock()


@contextlib.contextmanager
def exclusive_compute() -> Iterator[None]:
    """Hold the machine's compute lock (when ``STTRL_COMPUTE_LOCK`` is set, else nothing) for the block."""
    path = os.environ.get(ENV)
    if not path and not _LOCK.held:
        yield
        return
    _LOCK.acquire(path or "")  # held already when path is empty: a re-entrant count, the file is not reopened
    try:
        yield
    finally:
        _LOCK.release()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Inside a hold, let other processes compute while this one only waits (a sleep, a network call, a human):
    the file lock is released for the block and taken again after it; the count stays, so this process's other
    threads do not wait meanwhile (use it where the holder computes on one thread). Nothing when not held."""
    fd = _LOCK.pause()
    try:
        yield
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)


def exclusive(fn: F) -> F:
    """Run ``fn`` under :func:`exclusive_compute`: for a library's compute entry points (re-entrant, so one such
    function may call another, or an episode's :func:`~sttrl.train.memory.torch_thread`, in the same process).
    Never for a function that waits for another process's compute: that process would wait for this hold."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        with exclusive_compute():
            return fn(*args, **kw)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def holding() -> Iterator[None]:
    """Hold the lock for the whole block, and start child processes inside it without ``STTRL_COMPUTE_LOCK``:
    they compute under this hold (waiting for it would deadlock the parent that waits for them)."""
    path = os.environ.get(ENV)
    if not path:
        yield
        return
    with exclusive_compute():
        del os.environ[ENV]
        try:
            yield
        finally:
            os.environ[ENV] = path
