"""Crash and resume through the CLI: ``python -m graph.run`` in a subprocess, killed with SIGKILL during a
training block, during a decision and during the judge, then resumed by thread id (SQLite), and once
more across two workers sharing a real PostgreSQL server. Each resumed episode must end with one
trajectory record per step and the same numbers as an uninterrupted run with the same seed (CPU).

The kills are made deterministic by a small child script (below) that wraps the CLI: it slows each
optimizer step, or blocks in the decision or the judge after printing a marker. Training, evaluation
and judging stay real; nothing in sttrl or graph knows about these tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sttrl.rundir import JUDGE_REPORT, PLOT, RUN_RECORD, TRAJECTORY

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time
mode, argv = sys.argv[1], sys.argv[2:]
agent = None
if mode == "slow-train":  # each optimizer step waits first, so a kill lands between two steps
    import sttrl.train.trainer as T
    from sttrl.train.exclusive import paused
    real_step = T.Trainer._step
    def slow_step(self, hp):
        with paused():  # waiting is not compute: the suite's other worker may train meanwhile (tests/conftest.py)
            time.sleep(1.5)
        return real_step(self, hp)
    T.Trainer._step = slow_step
elif mode.startswith("slow-decide:"):  # block inside the decision of step `at`
    at, seed = (int(x) for x in mode.split(":")[1:])
    from sttrl.control.classical import RandomPolicy
    inner = RandomPolicy(seed=seed)
    class SlowDecide:
        name = "random"
        def decide(self, observation, history):
            if len(history) + 1 >= at:
                print(f"MARK deciding step {len(history) + 1}", flush=True)
                time.sleep(600)
            return inner.decide(observation, history)
    agent = SlowDecide()
elif mode.startswith("die-after-writes:"):  # exit like SIGKILL right after a node's writes are saved, before
    channel, at = mode.split(":")[1], int(mode.split(":")[2])  # the next checkpoint (the window of a real kill)
    import os
    from langgraph.checkpoint.sqlite import SqliteSaver
    real_put_writes = SqliteSaver.put_writes
    def put_writes(self, config, writes, task_id, task_path=""):
        real_put_writes(self, config, writes, task_id, task_path)
        if any(c == channel and isinstance(v, dict) and v.get("step") == at for c, v in writes):
            print(f"MARK died after the writes of {channel} {at}", flush=True)
            os._exit(137)
    SqliteSaver.put_writes = put_writes
elif mode == "slow-setup":  # block inside setup, before any data or model is built
    import sttrl.env.runtime as R
    def slow_init(self, *args, **kwargs):
        print("MARK setting up", flush=True)
        time.sleep(600)
    R.EpisodeRuntime.__init__ = slow_init
elif mode == "slow-judge":  # block inside the judge, after the final model is saved
    import sttrl.judge.scoring as J
    def slow_evaluate(*args, **kwargs):
        print("MARK judging", flush=True)
        time.sleep(600)
    J.evaluate_with = slow_evaluate
from graph.run import main
sys.exit(main(argv, agent=agent))
"""

SEED = 3


class Child:
    """A CLI process whose output lines are collected by a reader thread."""

    def __init__(self, mode: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", CHILD, mode, *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=env or child_env(),
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, ready: Callable[[], bool], timeout: float = 240) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ready():
                return
            if self.proc.poll() is not None:
                self.reader.join(5)
                raise AssertionError(f"child exited ({self.proc.returncode}) before the kill point:\n{self.text}")
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"kill point not reached in {timeout} s:\n{self.text}")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # our own process group (start_new_session)
        self.proc.wait(30)
        self.reader.join(5)

    def finish(self, timeout: float = 300) -> str:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.reader.join(5)
        assert self.proc.returncode == 0, self.text
        return self.text


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GROQ_API_KEY", "OPENAI_API_KEY")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli_args(cache: Path, out: Path, thread: str, checkpointer: str | None = None) -> list[str]:
    args = [
        "--preset",
        "debug",
        "--agent",
        "random",
        "--seed",
        str(SEED),
        "--steps-per-action",
        "4",
        "--max-actions",
        "3",
        "--set",
        "env.checkpoint_every=1",
        "--set",
        f"data.cache_dir={cache}",
        "--set",
        f"run.out_dir={out}",
        "--thread-id",
        thread,
    ]
    return args + (["--checkpointer", checkpointer] if checkpointer else [])


def partial_steps(run_dir: Path) -> int:
    """Optimizer steps saved in the run's intra-block checkpoint (0 when there is none)."""
    path = run_dir / "checkpoints" / "partial" / "state.json"
    try:
        return len(json.loads(path.read_text())["meta"]["losses"])
    except (OSError, ValueError, KeyError):
        return 0


def steps_written(run_dir: Path) -> list[int]:
    path = run_dir / TRAJECTORY
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.is_file() else []


def outcome(run_dir: Path) -> dict:
    """Everything that must match between a resumed and an uninterrupted episode."""
    recs = [json.loads(line) for line in (run_dir / TRAJECTORY).read_text().splitlines()]
    report = json.loads((run_dir / JUDGE_REPORT).read_text())
    final = json.loads((run_dir / RUN_RECORD).read_text())["final"]
    return {
        "steps": [r["step"] for r in recs],
        "decisions": [(r["action"], r["source"], r["status"], r["hp_after"], r["reward"]) for r in recs],
        "wer": [(r["observation"]["wer"], r["observation"]["cer"]) for r in recs],
        "losses": [r["train"]["losses"] if r["train"] else None for r in recs],
        "judge": (report["wer"], report["cer"], report["score"], report["passed_all_checks"]),
        "final_sha256": final["sha256"],
    }


@pytest.fixture(scope="module")
def reference(data_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted episode every resumed one is compared with."""
    out = tmp_path_factory.mktemp("reference")
    t0 = time.perf_counter()
    text = Child("plain", cli_args(data_cache, out, "ref"), cwd=out).finish()
    assert "thread ref (new episode" in text
    result = outcome(out / "ref")
    result["seconds"] = time.perf_counter() - t0
    print(f"\nreference episode: {result['seconds']:.1f} s, WER per step {result['wer']}, judge {result['judge']}")
    return result


def same_as_reference(run_dir: Path, reference: dict) -> None:
    got = outcome(run_dir)
    for key in ("steps", "decisions", "wer", "losses", "judge", "final_sha256"):
        assert got[key] == reference[key], key


def test_kill_during_train_decide_and_judge_then_resume(data_cache, reference, tmp_path):
    out, tid = tmp_path / "runs", "crashy"
    run_dir = out / tid
    args = cli_args(data_cache, out, tid)
    timings = {}

    # 1. SIGKILL in the middle of training block 2, right after its intra-block checkpoint at step 2
    t0 = time.perf_counter()
    c = Child("slow-train", args, cwd=tmp_path)
    partial = run_dir / "checkpoints" / "partial" / "state.json"
    c.wait_for(lambda: "train block 2 step 2/4" in c.text and partial_steps(run_dir) == 2)
    c.kill()
    assert steps_written(run_dir) == [1]
    assert json.loads(partial.read_text())["meta"]["block"] == 2 and partial_steps(run_dir) == 2

    # 2. resume: block 2 continues from its partial checkpoint; SIGKILL inside the decision of step 3
    c = Child(f"slow-decide:3:{SEED}", ["--thread-id", tid, "--set", f"run.out_dir={out}"], cwd=tmp_path)
    c.wait_for(lambda: "MARK deciding step 3" in c.text)
    c.kill()
    assert "resumes at train after step 1" in c.text
    block2 = [line for line in c.lines if line.startswith("train block 2 step")]
    assert block2 == [line for line in block2 if "step 3/4" in line or "step 4/4" in line] and len(block2) == 2
    assert steps_written(run_dir) == [1, 2]

    # 3. resume: the decision is asked again, block 3 trains; SIGKILL inside the judge
    c = Child("slow-judge", ["--thread-id", tid, "--set", f"run.out_dir={out}"], cwd=tmp_path)
    c.wait_for(lambda: "MARK judging" in c.text)
    c.kill()
    assert "resumes at decide after step 2" in c.text
    assert steps_written(run_dir) == [1, 2, 3] and not (run_dir / JUDGE_REPORT).exists()

    # 4. resume: the judge runs again from its start and the episode ends
    text = Child("plain", ["--thread-id", tid, "--set", f"run.out_dir={out}"], cwd=tmp_path).finish()
    assert "resumes at judge after step 3" in text and "judge (hidden domain government)" in text
    timings["total"] = time.perf_counter() - t0
    same_as_reference(run_dir, reference)
    assert (run_dir / PLOT).is_file()

    # 5. a finished thread prints its summary and trains nothing
    text = Child("plain", ["--thread-id", tid, "--set", f"run.out_dir={out}"], cwd=tmp_path).finish()
    assert f"thread {tid} is finished" in text and "train block" not in text
    text = Child("plain", ["--list", "--set", f"run.out_dir={out}"], cwd=tmp_path).finish()
    assert tid in text and "finished" in text and "3/3" in text
    print(f"\nkill/resume chain (4 processes): {timings['total']:.1f} s")


def test_kill_between_a_nodes_writes_and_the_next_checkpoint_then_resume(data_cache, reference, tmp_path):
    """Issue items 1, 2 and 5: the kill window after a node's writes are saved; a cut trajectory file; options
    a resume ignores (an invalid one among them) are named and do not block it."""
    out, tid = tmp_path / "runs", "between"
    run_dir = out / tid
    c = Child("die-after-writes:decision:2", cli_args(data_cache, out, tid), cwd=tmp_path)
    c.proc.wait(240)
    c.reader.join(5)
    assert c.proc.returncode == 137 and "MARK died after the writes of decision 2" in c.text, c.text
    listing = Child("plain", ["--list", "--set", f"run.out_dir={out}"], cwd=tmp_path).finish()
    assert tid in listing and "unfinished" in listing and "ended" not in listing
    # a crash also cut the trajectory mid-line: the state is the source of truth
    path = run_dir / TRAJECTORY
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    resumed = Child(
        "plain",
        ["--thread-id", tid, "--set", f"run.out_dir={out}", "--preset", "cpu", "--set", "train.lr=-1"],
        cwd=tmp_path,
    ).finish()
    # the kill lands after decision 2's writes: either before the next checkpoint (no next node yet) or just
    # after it, depending on how LangGraph batches the superstep's writes; both must resume
    assert (
        "resumes at its last saved writes after step 1 of 3" in resumed
        or "resumes at train after step 1 of 3" in resumed
    ), resumed
    assert "ignored on resume: --preset cpu, --set train.lr=-1\n" in resumed, resumed
    same_as_reference(run_dir, reference)


def test_a_thread_cut_off_in_setup_resumes_with_the_config_it_started_with(data_cache, tmp_path):
    """Issue 24 item 5: the resume hint (``--thread-id T`` alone) restarted such a thread on the default preset
    (cpu: minutes of unintended training); the thread's config is now recorded before setup runs."""
    out, tid = tmp_path / "runs", "cut-in-setup"
    args = ["--preset", "debug", "--agent", "static", "--max-actions", "1", "--steps-per-action", "2"]
    first = Child(
        "slow-setup",
        [*args, "--set", f"data.cache_dir={data_cache}", "--set", f"run.out_dir={out}", "--thread-id", tid],
        cwd=tmp_path,
    )
    first.wait_for(lambda: "MARK setting up" in first.text)
    first.kill()
    text = Child("plain", ["--thread-id", tid, "--set", f"run.out_dir={out}", "--quiet"], cwd=tmp_path).finish()
    assert f"thread {tid} resumes at setup, which never finished (with the config it started with)" in text, text
    config = json.loads((out / tid / RUN_RECORD).read_text())["config"]
    assert config["preset"] == "debug" and config["env"]["max_actions"] == 1 and config["env"]["steps_per_action"] == 2
    assert steps_written(out / tid) == [1] and (out / tid / JUDGE_REPORT).is_file()


def test_one_process_per_thread(data_cache, reference, tmp_path):
    """Issue item 3: a second process on a running thread is refused with one line; the first is untouched."""
    out, tid = tmp_path / "runs", "leased"
    first = Child("slow-train", cli_args(data_cache, out, tid), cwd=tmp_path)
    first.wait_for(lambda: "train block 1 step 2/4" in first.text)
    second = Child("plain", cli_args(data_cache, out, tid), cwd=tmp_path)
    second.proc.wait(120)
    second.reader.join(5)
    assert second.proc.returncode == 2, second.text
    assert f"thread {tid} is running in process {first.proc.pid}" in second.text and "Traceback" not in second.text
    first.finish()
    same_as_reference(out / tid, reference)


def test_a_failed_setup_leaves_no_thread_and_can_be_rerun(data_cache, tmp_path):
    """Issue item 4: a config that passes the schema but fails at setup leaves no thread and no run directory."""
    out, tid = tmp_path / "runs", "badvoice"
    args = cli_args(data_cache, out, tid)
    bad = Child("plain", [*args, "--set", "data.voices=[zz]"], cwd=tmp_path)
    bad.proc.wait(120)
    bad.reader.join(5)
    assert bad.proc.returncode == 2 and "zz" in bad.text and "Traceback" not in bad.text, bad.text
    assert not (out / tid).exists()
    listing = Child("plain", ["--list", "--set", f"run.out_dir={out}"], cwd=tmp_path).finish()
    assert tid not in listing
    text = Child("plain", [*args, "--max-actions", "1"], cwd=tmp_path).finish()  # corrected: a new episode
    assert f"thread {tid} (new episode" in text and (out / tid / JUDGE_REPORT).is_file()


# ----- PostgreSQL --------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if found:
        return found[-1].parent
    which = shutil.which("pg_ctl")
    if which:
        return Path(which).parent
    raise AssertionError(
        "PostgreSQL server binaries not found: run scripts/setup.sh --test (Debian: apt-get install -y postgresql)"
    )


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port (as the postgres user when run as root)."""
    bindir = _pg_bin()
    base = Path(tempfile.mkdtemp(prefix="sttrl-pg-"))
    data, port = base / "data", _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)
    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "sttrl", "-E", "UTF8", "--no-sync")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "-t", "60", "start")
    try:
        yield f"postgresql://sttrl@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


def test_postgres_workers_share_and_resume_a_thread(data_cache, reference, postgres_url, tmp_path):
    out, tid = tmp_path / "runs", "pg-thread"
    run_dir = out / tid
    worker_a = Child("slow-train", cli_args(data_cache, out, tid, postgres_url), cwd=tmp_path)
    worker_a.wait_for(lambda: "train block 2 step 2/4" in worker_a.text and partial_steps(run_dir) == 2)
    worker_a.kill()
    assert steps_written(run_dir) == [1]
    assert not (out / "checkpoints.sqlite").exists()  # the thread lives in Postgres only

    worker_b = Child("plain", ["--thread-id", tid, "--checkpointer", postgres_url], cwd=tmp_path)
    text = worker_b.finish()
    assert "resumes at train after step 1" in text
    same_as_reference(run_dir, reference)
    listing = Child("plain", ["--list", "--checkpointer", postgres_url], cwd=tmp_path).finish()
    assert tid in listing and "finished" in listing


# ----- CLI errors --------------------------------------------------------------------------------
def test_help_and_missing_api_key(data_cache, tmp_path):
    text = Child("plain", ["--help"], cwd=tmp_path).finish()
    for flag in (
        "--preset",
        "--config",
        "--set",
        "--agent",
        "--model",
        "--max-actions",
        "--steps-per-action",
        "--seed",
        "--run-dir",
        "--thread-id",
        "--list",
        "--checkpointer",
    ):
        assert flag in text
    c = Child(
        "plain",
        [
            "--preset",
            "debug",
            "--agent",
            "llm",
            "--set",
            f"data.cache_dir={data_cache}",
            "--set",
            f"run.out_dir={tmp_path / 'runs'}",
        ],
        cwd=tmp_path,
    )
    c.proc.wait(120)
    c.reader.join(5)
    assert c.proc.returncode == 2 and "GROQ_API_KEY" in c.text and "Traceback" not in c.text
    assert not any((tmp_path / "runs").glob("*/run.json"))  # nothing trained
    c = Child("plain", ["--preset", "nope"], cwd=tmp_path)
    c.proc.wait(60)
    c.reader.join(5)
    assert c.proc.returncode == 2 and "unknown preset" in c.text


def test_rejudge_a_finished_thread_against_its_checkpointed_state(data_cache, tmp_path, capsys):
    """``graph.run --thread-id T --judge SPLIT`` re-scores a finished thread with the hashes and step records of
    its checkpointed state: a run directory that lost a step fails there although it is self-consistent."""
    from graph.run import main

    out = tmp_path / "runs"
    common = ["--set", f"data.cache_dir={data_cache}", "--set", f"run.out_dir={out}", "--quiet"]
    assert main(["--preset", "debug", "--agent", "static", "--max-actions", "1", *common, "--thread-id", "rj"]) == 0
    capsys.readouterr()
    assert main([*common, "--thread-id", "rj", "--judge", "test"]) == 0
    assert "all checks passed" in capsys.readouterr().out
    (out / "rj" / TRAJECTORY).unlink()
    assert main([*common, "--thread-id", "rj", "--judge", "test"]) == 1
    assert "FAILED checks" in capsys.readouterr().out
    assert main([*common, "--thread-id", "nope", "--judge", "test"]) == 2
    assert "has not finished" in capsys.readouterr().out
    # issue 24 item 3: a check that fails before scoring (tampered weights) prints the failed checks, exits 1, and
    # gives no "resume with" hint for a finished thread (it crashed formatting a WER that was never measured)
    weights = out / "rj" / "final" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert main([*common, "--thread-id", "rj", "--judge", "test"]) == 1
    text = capsys.readouterr().out
    assert "not measured" in text and "FAIL hash_matches_record" in text and "resume" not in text, text
