"""sttrl.memory: the one torch thread, and the glibc allocator settings."""

from __future__ import annotations

import contextvars
import platform
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from sttrl.memory import limit_arenas, release_memory, torch_thread

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
    release_memory()
    release_memory(collect=True)
