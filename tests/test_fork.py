"""Forks through the CLI (``python -m graph.run --fork … --at … [--action …]``): a fork that repeats the parent's
next action ends with the parent's numbers (losses, WERs, final hash, judge); another action diverges and is
judged on its own; a fork of a parent killed with SIGKILL; a checkpoint that was not kept; the one-line errors
that write nothing; the fork tree. Real debug-preset training throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graph.run import main
from sttrl.rundir import CONFIG_FILE, JUDGE_REPORT, RUN_RECORD, TRAJECTORY

REPO = Path(__file__).resolve().parents[1]
SEED = 3
BASE = ["--preset", "debug", "--agent", "random", "--seed", str(SEED), "--steps-per-action", "4", "--max-actions", "3"]


def common(cache: Path, out: Path) -> list[str]:
    return ["--set", f"data.cache_dir={cache}", "--set", f"run.out_dir={out}", "--quiet"]


def outcome(run_dir: Path) -> dict:
    recs = [json.loads(line) for line in (run_dir / TRAJECTORY).read_text().splitlines()]
    report = json.loads((run_dir / JUDGE_REPORT).read_text())
    return {
        "actions": [r["action"] for r in recs],
        "wer": [(r["observation"]["wer"], r["observation"]["cer"]) for r in recs],
        "losses": [r["train"]["losses"] for r in recs],
        "rewards": [r["reward"] for r in recs],
        "judge": (report["wer"], report["cer"], report["score"], report["passed_all_checks"]),
        "final_sha256": json.loads((run_dir / RUN_RECORD).read_text())["final"]["sha256"],
    }


@pytest.fixture(scope="module")
def parent(data_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished 3-step episode that keeps every block checkpoint (env.keep_checkpoints=0)."""
    out = tmp_path_factory.mktemp("fork")
    assert main([*BASE, "--set", "env.keep_checkpoints=0", *common(data_cache, out), "--thread-id", "p"]) == 0
    assert sorted(p.name for p in (out / "p" / "checkpoints").glob("block-*")) == [
        "block-0000",
        "block-0001",
        "block-0002",
        "block-0003",
    ]
    return {"out": out, "args": common(data_cache, out), "outcome": outcome(out / "p")}


def test_fork_repeating_the_next_action_ends_with_the_parents_numbers(parent, capsys):
    out, ref = parent["out"], parent["outcome"]
    assert (
        main(["--fork", "p", "--at", "1", "--action", ref["actions"][1], "--thread-id", "same", *parent["args"]]) == 0
    )
    assert "thread same forked from p after step 1" in capsys.readouterr().out
    child = out / "same"
    assert outcome(child) == ref  # losses, WERs, rewards, final hash, judge
    recs = [json.loads(line) for line in (child / TRAJECTORY).read_text().splitlines()]
    assert [r["source"] for r in recs][1] == "fork"
    # the block checkpoint and the files neither run rewrites are shared, not copied
    shared = child / "checkpoints" / "block-0001" / "model.safetensors"
    assert shared.stat().st_ino == (out / "p" / "checkpoints" / "block-0001" / "model.safetensors").stat().st_ino
    assert (child / CONFIG_FILE).stat().st_nlink == 2
    record = json.loads((child / RUN_RECORD).read_text())
    parent_ckpt = json.loads((out / "p" / "checkpoints" / "block-0001" / "state.json").read_text())
    assert record["parent"]["thread"] == "p" and record["parent"]["step"] == 1
    assert record["parent"]["checkpoint_sha256"] == parent_ckpt["hashes"]["model.safetensors"]
    assert record["run_id"] != json.loads((out / "p" / RUN_RECORD).read_text())["run_id"]
    # training resumed from block 1: block 2 starts at optimizer step 4 of the parent's run
    assert recs[1]["train"]["global_step"] == 8


def test_fork_with_another_action_diverges_and_is_judged(parent):
    out, ref = parent["out"], parent["outcome"]
    other = "lr_up" if ref["actions"][1] != "lr_up" else "lr_down"
    assert main(["--fork", "p", "--at", "1", "--action", other, "--thread-id", "other", *parent["args"]]) == 0
    got = outcome(out / "other")
    assert got["actions"][:2] == [ref["actions"][0], other]
    assert got["losses"][0] == ref["losses"][0] and got["losses"][1] != ref["losses"][1]
    assert got["final_sha256"] != ref["final_sha256"]
    assert got["judge"][3] is True and (out / "other" / JUDGE_REPORT).is_file()


def test_fork_errors_are_one_line_and_write_nothing(parent, capsys):
    out, args = parent["out"], parent["args"]
    before = sorted(p.name for p in out.iterdir())
    cases = [
        (["--fork", "nope", "--at", "1"], "unknown thread 'nope'"),
        (["--fork", "p", "--at", "7"], "--at 7 is outside the history of thread p: the steps it completed are 0..3"),
        (["--fork", "p", "--at", "1", "--action", "dance"], "--action 'dance' is not in the action set of thread p"),
        (["--fork", "p", "--at", "1", "--thread-id", "p"], "must differ"),
    ]
    if (out / "same").is_dir():
        cases.append((["--fork", "p", "--at", "1", "--thread-id", "same"], "thread 'same' already exists"))
    for argv, message in cases:
        capsys.readouterr()
        assert main([*argv, *args]) == 2, argv
        text = capsys.readouterr().out.strip()
        assert text.startswith("error: ") and message in text and "\n" not in text, text
    assert sorted(p.name for p in out.iterdir()) == before
    assert "''s" not in text  # issue 24: no doubled quote
    leases = out / "checkpoints.sqlite.leases"  # issue 24: a refused fork leaves no lease file behind
    assert not leases.is_dir() or not list(leases.iterdir()), sorted(p.name for p in leases.iterdir())
    with pytest.raises(SystemExit):
        main(["--at", "1", *args])


def test_tree_prints_every_branch_and_plots_their_curves(parent, capsys):
    out = parent["out"]
    capsys.readouterr()
    assert main(["--tree", "p", *parent["args"]]) == 0
    text = capsys.readouterr().out
    for tid in [t for t in ("same", "other") if (out / t).is_dir()]:
        assert f"fork at step 1: {tid} (finished)" in text
    assert "judge WER" in text and "val WER" in text
    png = out / "p" / "fork-tree.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SLOW_CHILD = r"""
import sys, time
import sttrl.train.trainer as T
real_step = T.Trainer._step
def slow_step(self, hp):  # marks block 3's training (the parent's state after step 2 is saved by then)
    if self.state.global_step >= 8:
        open("in-block-3", "w").close()
    time.sleep(0.5)
    return real_step(self, hp)
T.Trainer._step = slow_step
from graph.run import main
sys.exit(main(sys.argv[1:]))
"""


def test_fork_after_a_kill_of_the_parent_and_a_checkpoint_not_kept(parent, data_cache, tmp_path, capsys):
    """The parent (default env.keep_checkpoints=2) is killed with SIGKILL while training block 3; a fork after
    step 2 ends with the numbers of the uninterrupted episode; a fork after step 0 names the missing checkpoint."""
    out = tmp_path / "runs"
    args = common(data_cache, out)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CHILD, *BASE, *args, "--thread-id", "killed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    marker, end = tmp_path / "in-block-3", time.monotonic() + 240
    try:
        while not marker.is_file():
            assert proc.poll() is None and time.monotonic() < end, "the parent ended before block 3"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert len((out / "killed" / TRAJECTORY).read_text().splitlines()) == 2
    assert main(["--fork", "killed", "--at", "2", "--thread-id", "k2", *args]) == 0
    assert outcome(out / "k2") == parent["outcome"]
    capsys.readouterr()
    assert main(["--fork", "killed", "--at", "0", "--thread-id", "k0", *args]) == 2
    text = capsys.readouterr().out.strip()
    assert "checkpoint" in text and "block-0000 was not kept" in text and "env.keep_checkpoints=0" in text, text
    assert not (out / "k0").exists()
