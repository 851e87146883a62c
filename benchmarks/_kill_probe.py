"""The pieces of the kill-anywhere check (``benchmarks/kill_anywhere.py``): an episode process that can be
SIGKILLed, what the checkpointer and the run directory say about its thread, what a killed process was doing (from
the last event line it printed), and what must match between a resumed and an uninterrupted episode.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sttrl.rundir import JUDGE_REPORT, RUN_RECORD, TRAJECTORY  # noqa: E402 - after sys.path holds the repository


# ----- episodes in subprocesses ------------------------------------------------------------------
class Episode:
    """One ``python -m graph.run`` process in its own process group, output to a log file."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log
        env = {k: v for k, v in os.environ.items() if k not in ("GROQ_API_KEY", "OPENAI_API_KEY")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"  # every event line reaches the log before a kill
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env
            )
        self.started = time.perf_counter()

    def wait(self, seconds: float) -> bool:
        """True when the process exited within ``seconds``."""
        try:
            self.proc.wait(max(seconds, 0.0))
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the group this script started (start_new_session)
        self.proc.wait(60)

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def first_line(self, thread: str) -> str | None:
        for line in self.text.splitlines():
            if line.startswith(f"thread {thread} "):
                return line
        return None


def episode_cmd(args: argparse.Namespace, work: Path, thread: str) -> list[str]:
    cmd = [
        sys.executable,
        "-u",
        "-m",
        "graph.run",
        "--preset",
        "debug",
        "--agent",
        args.agent,
        "--seed",
        str(args.seed),
        "--steps-per-action",
        str(args.steps_per_action),
        "--max-actions",
        str(args.max_actions),
        "--set",
        "env.checkpoint_every=1",
        "--set",
        f"run.out_dir={work / 'runs'}",
    ]
    for item in args.overrides:
        cmd += ["--set", item]
    return cmd + ["--thread-id", thread]  # not --quiet: one line per event tells where a kill landed


# ----- what the checkpointer and the run directory say ---------------------------------------------
class Checkpoints:
    """Read-only looks at the episodes' thread states in ``work/runs/checkpoints.sqlite``."""

    def __init__(self, work: Path) -> None:
        self.path = work / "runs" / "checkpoints.sqlite"

    def state(self, thread: str) -> dict[str, Any]:
        from graph.checkpointer import open_checkpointer
        from graph.graph import build_graph

        if not self.path.is_file():
            return {"checkpointed": False}
        with open_checkpointer(str(self.path)) as saver:
            snap = build_graph().compile(checkpointer=saver).get_state({"configurable": {"thread_id": thread}})
        values = snap.values or {}
        if not values and not snap.next:
            return {"checkpointed": False}
        return {
            "checkpointed": True,
            "next": list(snap.next),
            "step": values.get("step", 0),
            "finished": bool(values.get("judge")),
            "setup_done": bool(values.get("run_id")) and values.get("step") is not None,
        }


def partial_steps(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "checkpoints" / "partial" / "state.json").read_text())["meta"]["losses"])
    except (OSError, ValueError, KeyError):
        return 0


def thread_at(state: dict[str, Any], run_dir: Path) -> str:
    """Where the checkpointer says the thread stands: the node that runs next (and saved block steps)."""
    if not state["checkpointed"]:
        return "nothing checkpointed"
    if state["finished"]:
        return "finished"
    node = ", ".join(state["next"]) or "?"
    saved = partial_steps(run_dir) if node == "train" else 0
    return f"{node} after step {state['step']}" + (f" ({saved} block steps saved)" if saved else "")


# the last event line a process printed -> what it was doing when it was killed
LINE_PHASES: tuple[tuple[str, str], ...] = (
    (r"^thread \S+ \(new episode", "setup"),
    (r"^thread \S+ resumes at setup, which never finished", "setup"),
    (r"^thread \S+ resumes at (train|evaluate|judge)\b", r"\1 (restoring the runtime)"),
    (r"^thread \S+ resumes at (\w+)", r"\1"),
    (r"^thread \S+ is finished", "summary"),
    (r"^setup: building", "setup"),
    (r"^setup: start WER", "observe / decide"),
    (r"^step \d+ decide: stop ", "judge"),
    (r"^step \d+ decide:", "train (starting)"),
    (r"^train block \d+: \d+ steps", "train"),
    (r"^train block \d+ step", "train"),
    (r"^train block \d+: ", "evaluate"),
    (r"^evaluate block \d+ on", "evaluate"),
    (r"^evaluate block \d+: WER", "reward (trajectory, plot)"),
    (r"^step \d+ reward", "observe / decide"),
    (r"^judge: episode ended", "judge"),
    (r"^judge: WER", "judge (finishing)"),
    (r"^warning:", "reward (trajectory, plot)"),
)


def phase_of(text: str) -> str:
    """What a killed process was doing, from the last event line it printed."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return "startup (interpreter, imports)"
    for line in reversed(lines):
        for pattern, phase in LINE_PHASES:
            m = re.match(pattern, line)
            if m:
                return m.expand(phase)
        if line.startswith(("  PASS", "  FAIL", "judge (hidden", "files:")) or "│" in line or "─" in line:
            return "summary"
    return "startup (config, checkpointer)"


def expected_first_line(thread: str, state: dict[str, Any]) -> str:
    if not state["checkpointed"]:
        return f"thread {thread} (new episode"
    if state["finished"]:
        return f"thread {thread} is finished"
    if not state.get("setup_done", True):  # killed before setup's end: setup runs again with the recorded config
        return f"thread {thread} resumes at setup, which never finished"
    where = ", ".join(state["next"]) or "its last saved writes"
    return f"thread {thread} resumes at {where} after step {state['step']} "


def outcome(run_dir: Path) -> dict[str, Any]:
    """Everything that must match between a resumed and an uninterrupted episode."""
    recs = [json.loads(line) for line in (run_dir / TRAJECTORY).read_text().splitlines() if line.strip()]
    report = json.loads((run_dir / JUDGE_REPORT).read_text())
    final = json.loads((run_dir / RUN_RECORD).read_text())["final"]
    return {
        "steps": [r["step"] for r in recs],
        "decisions": [[r["action"], r["source"], r["status"], r["hp_after"], r["reward"]] for r in recs],
        "wer": [[r["observation"]["wer"], r["observation"]["cer"]] for r in recs],
        "losses": [r["train"]["losses"] if r["train"] else None for r in recs],
        "judge": [report["wer"], report["cer"], report["score"], report["passed_all_checks"]],
        "final_sha256": final["sha256"],
    }


def compare(got: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    steps = got["steps"]
    return {
        "lost_steps": len(set(ref["steps"]) - set(steps)),
        "duplicated_steps": len(steps) - len(set(steps)),
        "steps_equal": steps == ref["steps"],
        "numbers_equal": all(got[k] == ref[k] for k in ("decisions", "wer", "losses")),
        "weights_equal": got["final_sha256"] == ref["final_sha256"],
        "judge_equal": got["judge"] == ref["judge"],
    }
