"""Native numeric libraries at a command line's start: bounded thread pools, loaded up front under a guard, and a
watchdog for a library that spins.

Under an address-space limit (``prlimit --as``, a container's memory cap) the native libraries fail while they load,
before any sttrl code runs: OpenBLAS (bundled with numpy and scipy) starts one worker thread per core, each with its
own buffers, and under the limit a worker can loop forever in ``blas_memory_alloc → mmap`` (a hang at 97 % CPU) or
the library prints "Memory allocation still failed after 10 retries" and exits 1; ``import tokenizers`` fails with
"failed to map segment". So each command line:

1. :func:`bound_thread_pools` before anything imports numpy: one OpenBLAS thread (``OPENBLAS_NUM_THREADS=1``, and the
   same for the other BLAS builds numpy and scipy may carry). torch keeps its own pool (``run.threads``): its
   variables (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) are left alone, so an episode's numbers do not change.
   A variable already set in the environment wins.
2. :func:`load_guarded` with the libraries its work needs: a failure to load them that comes from memory is one line
   (what ran out, how to resume) and exit 3; a library that ends the process itself, or spins past
   ``STTRL_LOAD_TIMEOUT`` seconds (default 600), is reported by a watchdog process in the same words.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import select
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")
MEMORY_WORDS = (
    "failed to map segment",  # the dynamic loader, mapping a shared library
    "cannot allocate memory",
    "can't allocate memory",  # torch's CPU allocator
    "could not create a primitive",  # oneDNN's scratchpad under an address-space limit
    "out of memory",
    "can't start new thread",  # a thread's stack not mapped under an address-space limit (threading.start)
    "memory allocation",
)
OUT_OF_MEMORY_EXIT = 3
# what an episode or the judge loads: up front, under the guard, not in the middle of setup
# transformers' Whisper model last: importing it loads torch._dynamo and the rest of transformers' model machinery
# (2–3 s), which under a memory limit failed outside the guard (a SystemError traceback at 900 MiB, 2026-12-02).
EPISODE_LIBRARIES = (
    "scipy.linalg",
    "soundfile",
    "soxr",
    "tokenizers",
    "torch",
    "transformers",
    "transformers.models.whisper.modeling_whisper",
)
DEFAULT_TIMEOUT_S = 600.0
_DONE, _HANDLED = b"d", b"h"


def bound_thread_pools(threads: int = 1) -> None:
    """One worker thread for the BLAS libraries numpy and scipy bundle, unless the environment says otherwise."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))


def is_memory_failure(exc: BaseException) -> bool:
    """Whether loading a library failed for lack of memory (address space), not for a missing or broken package."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's (CUDA) type
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    text = str(exc).lower()
    if isinstance(exc, SystemError) and "without exception set" in text and _address_space_limited():
        # a C function that failed to allocate and returned NULL without setting MemoryError: seen once importing
        # torch._dynamo under a 900 MiB limit (test_faults, 2026-12-02); without a limit it is a bug, not memory
        return True
    return isinstance(exc, (ImportError, OSError, RuntimeError)) and any(w in text for w in MEMORY_WORDS)


def _address_space_limited() -> bool:
    """Whether an address-space limit (``ulimit -v``, RLIMIT_AS) is in force on this process."""
    try:
        import resource  # POSIX only; asked only when a SystemError is being classified
    except ImportError:
        return False
    return resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, at most 200 characters (its type when it has none)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def memory_line(what: str, resume: str) -> str:
    """The one line a command prints when memory ran out while loading ``what``."""
    return (
        f"out of memory while loading {what} (an address-space or container memory limit?); "
        f"raise the limit and resume with: {resume}"
    )


LOAD_ENDED = "the process ended while loading: a native library exited"


class _Watchdog:
    """A forked process that reports (and ends) a load that never finishes or a process a library ended itself."""

    def __init__(self, line: str, timeout_s: float | None, ended: str = LOAD_ENDED) -> None:
        self.pid = 0
        self.fd = -1
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            r, w = os.pipe()
            pid = os.fork()
        except OSError:  # no memory left even for the watchdog: load without one
            return
        if pid == 0:  # the watchdog: no Python buffers flushed, no atexit handlers (os._exit)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the loading process's to report
            os.close(w)
            self._watch(r, os.getppid(), line, timeout_s, ended)
        os.close(r)
        self.pid, self.fd = pid, w

    @staticmethod
    def _watch(fd: int, parent: int, line: str, timeout_s: float | None, ended: str) -> None:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        got = os.read(fd, 1) if ready else None
        if got is None:  # still loading after the timeout: a library spins (OpenBLAS under a memory limit)
            os.write(2, f"error: {line} (still loading after {timeout_s:.0f} s: stopped)\n".encode())
            os.kill(parent, signal.SIGKILL)
        elif got == b"":  # the watched process ended without a word: a native library exited or crashed
            os.write(2, f"error: {line} ({ended})\n".encode())
        os._exit(0)

    def close(self, word: bytes) -> None:
        """Tell the watchdog how the load ended and reap it (stopped if it has not exited within a second)."""
        if not self.pid:
            return
        os.write(self.fd, word)
        os.close(self.fd)
        for _ in range(100):
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.01)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        self.pid = 0


def load_guarded(modules: Iterable[str], resume: str, what: str | None = None) -> None:
    """Import ``modules`` (those installed) under the memory guard: a memory failure is one line on stderr and exit 3;
    any other import error propagates. ``resume``: the command that resumes the work."""
    names = [m for m in modules if m not in sys.modules]
    if not names:
        return
    label = what or ", ".join(names)
    timeout = float(os.environ.get("STTRL_LOAD_TIMEOUT") or DEFAULT_TIMEOUT_S)
    dog = _Watchdog(memory_line(label, resume), timeout)
    try:
        for name in names:
            if importlib.util.find_spec(name.split(".")[0]) is not None:
                importlib.import_module(name)
    except BaseException as exc:
        dog.close(_HANDLED)
        if not is_memory_failure(exc):
            raise
        print(f"error: {memory_line(f'{label}: {first_line(exc)}', resume)}", file=sys.stderr)
        sys.exit(OUT_OF_MEMORY_EXIT)
    dog.close(_DONE)


@contextmanager
def watch_for_native_end(resume: str, verb: str = "resume with") -> Iterator[None]:
    """Until the block exits, a watchdog process prints one line if this process ends without leaving the block: a
    native library ended it (Rust's and C's allocators abort when memory runs out, which no Python handler sees: a
    debug episode under a 1000 MiB address-space limit ended so, "memory allocation of 1048576 bytes failed"), or it
    was killed. ``resume``: the command that resumes the work (``verb`` says what it does)."""
    dog = _Watchdog(
        f"out of memory, or another native failure, ended the process; raise the limit and {verb}: {resume}",
        None,
        "no Python error was raised: a native library aborted or the process was killed",
    )
    try:
        yield
    finally:
        dog.close(_DONE)
