"""The machine's compute lock (sttrl.train.exclusive): one holder at a time across processes, re-entrant inside one,
dropped by the kernel when its holder is killed, off without STTRL_COMPUTE_LOCK, and hidden from the children of
a whole-test hold."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sttrl.train import exclusive

HOLD = """
import sys, time
from sttrl.train.exclusive import exclusive_compute
with exclusive_compute():
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def _holder(lock: Path, seconds: float) -> subprocess.Popen:
    env = {**os.environ, exclusive.ENV: str(lock)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(seconds)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _wait_for_lock(monkeypatch: pytest.MonkeyPatch, lock: Path) -> float:
    monkeypatch.setenv(exclusive.ENV, str(lock))
    t0 = time.monotonic()
    with exclusive.exclusive_compute(), exclusive.exclusive_compute():  # re-entrant: the inner one does not wait
        return time.monotonic() - t0


def test_one_holder_at_a_time_across_processes(tmp_path, monkeypatch):
    proc = _holder(tmp_path / "compute.lock", 1.5)
    try:
        waited = _wait_for_lock(monkeypatch, tmp_path / "compute.lock")
    finally:
        proc.wait(timeout=30)
    assert waited > 0.8, waited  # the other process held it for 1.5 s after printing "held"


def test_a_killed_holder_releases_the_lock(tmp_path, monkeypatch):
    proc = _holder(tmp_path / "compute.lock", 600)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert _wait_for_lock(monkeypatch, tmp_path / "compute.lock") < 5


def test_off_without_the_variable_and_children_of_a_hold_do_not_wait(tmp_path, monkeypatch):
    monkeypatch.delenv(exclusive.ENV, raising=False)
    with exclusive.exclusive_compute():
        assert not (tmp_path / "compute.lock").exists()
    monkeypatch.setenv(exclusive.ENV, str(tmp_path / "compute.lock"))
    with exclusive.holding():
        assert exclusive.ENV not in os.environ
        t0 = time.monotonic()
        # a child started inside the hold computes at once (with the variable it would wait for this process)
        subprocess.run([sys.executable, "-c", HOLD, "0"], check=True, capture_output=True, timeout=60)
        assert time.monotonic() - t0 < 30
    assert os.environ[exclusive.ENV] == str(tmp_path / "compute.lock")
