"""The machine's compute lock (sttrl.train.exclusive): one holder at a time across processes, re-entrant inside one,
dropped by the kernel when its holder is killed, off without STTRL_COMPUTE_LOCK, and hidden from the children of
a whole-test hold."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

from sttrl.train import exclusive

HOLD = """
import sys
from sttrl.train.exclusive import exclusive_compute
with exclusive_compute():
    print("held", flush=True)
    sys.stdin.read()  # until the test closes the pipe
"""


def _holder(lock: Path) -> subprocess.Popen:
    env = {**os.environ, exclusive.ENV: str(lock)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _free(lock: Path) -> bool:
    """Whether nobody holds the lock file now (a non-blocking try, released at once)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops a lock taken here
    return True


def test_one_holder_at_a_time_across_processes(tmp_path, monkeypatch):
    lock = tmp_path / "compute.lock"
    proc = _holder(lock)
    assert not _free(lock)  # the other process holds it
    proc.stdin.close()
    proc.wait(timeout=60)
    assert _free(lock)
    monkeypatch.setenv(exclusive.ENV, str(lock))
    with exclusive.exclusive_compute(), exclusive.exclusive_compute():  # re-entrant: the inner one does not wait
        assert not _free(lock)
    assert _free(lock)


def test_a_killed_holder_releases_the_lock(tmp_path):
    lock = tmp_path / "compute.lock"
    proc = _holder(lock)
    assert not _free(lock)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert _free(lock)


def test_off_without_the_variable_and_children_of_a_hold_do_not_wait(tmp_path, monkeypatch):
    monkeypatch.delenv(exclusive.ENV, raising=False)
    with exclusive.exclusive_compute():
        assert not (tmp_path / "compute.lock").exists()
    monkeypatch.setenv(exclusive.ENV, str(tmp_path / "compute.lock"))
    with exclusive.holding():
        assert exclusive.ENV not in os.environ and not _free(tmp_path / "compute.lock")
        # a child started inside the hold computes at once (with the variable it would wait for this process, and
        # the timeout would fail the test)
        subprocess.run([sys.executable, "-c", HOLD], input="", check=True, capture_output=True, text=True, timeout=60)
    assert os.environ[exclusive.ENV] == str(tmp_path / "compute.lock")


def test_paused_lets_another_process_take_the_lock_and_retakes_it(tmp_path, monkeypatch):
    lock = tmp_path / "compute.lock"
    monkeypatch.setenv(exclusive.ENV, str(lock))
    with exclusive.exclusive_compute():
        with exclusive.paused():
            assert _free(lock)  # another process may compute while this one waits
            proc = _holder(lock)  # and does: it takes the lock at once
            proc.stdin.close()
            proc.wait(timeout=60)
        assert not _free(lock)  # held again after the pause
    assert _free(lock)
    with exclusive.paused():  # not held: nothing to release
        assert _free(lock)
