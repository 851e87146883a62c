"""sttrl.train.memory: the one torch thread, and the glibc allocator settings."""

from __future__ import annotations

import contextvars
import platform
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from sttrl.train.memory import limit_arenas, release_memory, torch_thread

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


@torch_thread
def where(fail: bool = False) -> tuple[str, str]:
    if fail:
        raise ValueError("raised on the torch thread")
    return threading.current_thread().name, VAR.get()


@torch_thread
def nested() -> tuple[str, tuple[str, str]]:
    return threading.current_thread().name, where()  # a decorated call from the torch thread runs inline


def test_calls_from_any_worker_thread_run_on_one_thread_with_their_context():
    def call(i: int) -> tuple[str, str]:
        VAR.set(f"caller {i}")
        return where()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, range(12)))
    assert {name for name, _ in results} == {"sttrl-torch"}
    assert [value for _, value in results] == [f"caller {i}" for i in range(12)]

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(nested).result() == ("sttrl-torch", ("sttrl-torch", "unset"))
        with pytest.raises(ValueError, match="raised on the torch thread"):
            pool.submit(where, True).result()
        assert pool.submit(where).result()[0] == "sttrl-torch"  # the thread survives an exception


def test_main_thread_calls_run_inline():
    assert threading.current_thread() is threading.main_thread()
    assert where()[0] == threading.main_thread().name


def test_allocator_settings_apply_on_glibc_only():
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert limit_arenas() is glibc and limit_arenas() is glibc  # idempotent; a no-op elsewhere


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"), reason="malloc_trim is glibc's"
)
def test_release_memory_returns_freed_heap_to_the_os():
    """Free 200 MB of heap blocks pinned apart by live ones: glibc cannot give them back by itself (no free
    top of heap), and they stay resident until release_memory() trims the heap's free pages."""
    import ctypes

    import psutil

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    proc = psutil.Process()
    size, n = 64 * 1024, 3200  # below the mmap threshold: the blocks live in the heap
    blocks, pins = [], []
    for _ in range(n):
        blocks.append(libc.malloc(size))
        ctypes.memset(blocks[-1], 1, size)  # touch every page: resident
        pins.append(libc.malloc(4096))
        ctypes.memset(pins[-1], 1, 4096)
    for b in blocks:
        libc.free(b)
    before = proc.memory_info().rss
    release_memory()
    after = proc.memory_info().rss
    for q in pins:
        libc.free(q)
    assert before - after > 150 * 2**20, f"RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MB"
