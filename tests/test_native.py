"""Issue 24 item 4, the guard itself (sttrl.native): a library that fails to load for lack of memory, one that ends
the process on its own (OpenBLAS's "Memory allocation still failed"), and one that spins, each give one line that
says memory ran out and how to resume, and a non-zero exit, never a hang. The libraries here are small stand-in
modules in a temp folder; the real libraries under ``prlimit --as`` are in tests/test_faults.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sttrl.native import THREAD_VARIABLES, is_memory_failure

REPO = Path(__file__).resolve().parents[1]
STAND_INS = {
    "maps_no_segment": 'raise ImportError("libfoo.so: failed to map segment from shared object")',
    "exits_on_its_own": 'import os, sys\nsys.stderr.write("Memory allocation still failed after 10 retries\\n")\n'
    "sys.stderr.flush()\nos._exit(1)",
    "spins": "while True:\n    pass",
    "is_broken": 'raise ImportError("No module named something_else")',
}
LOAD = (
    "import sys; from sttrl.native import load_guarded; "
    "load_guarded([sys.argv[1]], 'python -m graph.run --thread-id T')"
)


def _load(tmp_path: Path, module: str, timeout_s: str = "120") -> tuple[subprocess.CompletedProcess, float]:
    for name, body in STAND_INS.items():
        (tmp_path / f"{name}.py").write_text(body + "\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", "STTRL_LOAD_TIMEOUT": timeout_s}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, module], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    return proc, time.monotonic() - t0


def _last(proc: subprocess.CompletedProcess) -> str:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()][-1]


def test_a_library_that_cannot_map_its_segments_is_one_line_and_exit_3(tmp_path):
    proc, _ = _load(tmp_path, "maps_no_segment")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert _last(proc).startswith("error: out of memory while loading maps_no_segment")
    assert "resume with: python -m graph.run --thread-id T" in _last(proc)


def test_a_library_that_ends_the_process_itself_is_reported_by_the_watchdog(tmp_path):
    proc, _ = _load(tmp_path, "exits_on_its_own")
    assert proc.returncode == 1, proc.stderr
    assert "out of memory while loading exits_on_its_own" in _last(proc) and "resume with:" in _last(proc)


def test_a_library_that_spins_is_stopped_by_the_watchdog(tmp_path):
    proc, seconds = _load(tmp_path, "spins", timeout_s="3")
    assert proc.returncode != 0 and seconds < 60, (proc.returncode, seconds)
    assert "out of memory while loading spins" in _last(proc) and "still loading after 3 s" in _last(proc)


def test_any_other_import_error_is_not_called_a_memory_failure(tmp_path):
    proc, _ = _load(tmp_path, "is_broken")
    assert proc.returncode == 1 and "No module named something_else" in proc.stderr
    assert "out of memory" not in proc.stderr


@pytest.mark.parametrize(
    ("exc", "memory"),
    [
        (MemoryError(), True),
        (OSError(12, "Cannot allocate memory"), True),
        (ImportError("x.so: failed to map segment from shared object"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"), True),
        (ImportError("No module named x"), False),
        (RuntimeError("shape mismatch"), False),
    ],
)
def test_what_counts_as_running_out_of_memory(exc, memory):
    assert is_memory_failure(exc) is memory


def test_a_null_return_without_an_exception_is_memory_only_under_an_address_space_limit():
    """CPython's SystemError for a C function that returned NULL without setting an error: what a failed allocation
    in an extension looks like (torch._dynamo's import under 900 MiB); a bug, not memory, when no limit is in force."""
    code = (
        "import resource, sys; from sttrl.native import is_memory_failure; "
        "e = SystemError('error return without exception set'); a = is_memory_failure(e); "
        "resource.setrlimit(resource.RLIMIT_AS, (64 * 2**30, resource.RLIM_INFINITY)); "
        "print(a, is_memory_failure(e), is_memory_failure(SystemError('something else')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "True", "False"], out


def test_the_entry_points_bound_the_blas_pools_before_numpy_loads():
    """``python -m graph.run`` and ``python -m sttrl.judge`` import sttrl.preload first: one OpenBLAS thread, unless the
    environment says otherwise; torch's own variables are left alone."""
    code = (
        "import sys, os; import graph.run; "
        "print(os.environ.get('OPENBLAS_NUM_THREADS'), os.environ.get('OMP_NUM_THREADS'), 'numpy' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in (*THREAD_VARIABLES, "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(REPO)

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)

    out = run()
    assert out.returncode == 0 and out.stdout.split() == ["1", "None", "True"], out.stderr
    env["OPENBLAS_NUM_THREADS"] = "2"
    assert run().stdout.split()[0] == "2"
