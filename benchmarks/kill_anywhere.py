"""Kill-anywhere check: SIGKILL a real ``debug`` episode at N random moments, resume it each time, and
compare the end with an uninterrupted episode.

    python benchmarks/kill_anywhere.py --n 20 --seed 0

1. A reference episode runs uninterrupted (``python -u -m graph.run --preset debug --agent random
   --seed S --steps-per-action 8 --max-actions 6 --set env.checkpoint_every=1``, its own thread id),
   and its wall time T is measured.
2. The same command (another thread id) starts again and again; each process gets a delay drawn
   uniformly from [0, T] (``random.Random(seed)``) and is killed with SIGKILL (its whole process group)
   when the delay ends first. So kills land anywhere a process spends time: interpreter start and
   imports, setup, restoring the runtime after a resume, decisions, training steps, evaluations,
   reward and plot, the judge, the summary. What the process was doing is read from the last event
   line it printed (the CLI prints one per event when its output is not a terminal); where the thread
   stood is read from the LangGraph checkpointer (the node to run next, steps saved mid-block).
3. After a kill the next process must pick the thread up where the checkpointer says it stopped: its
   first line is ``resumes at <node> after step <k>`` (or ``new episode`` when nothing was checkpointed
   yet, or ``is finished``). A thread that ends before all N kills are spent is compared and a new
   thread starts; after the N-th kill the thread runs to its end.
4. Every finished thread is compared with the reference: trajectory steps (lost / duplicated), per-step
   action, source, status, hyperparameters, reward, validation WER/CER and training losses, the final
   weights' SHA-256 (``run.json``) and the judge's WER/CER/score.

Prints ``resumed runs N/N, lost steps 0, duplicated steps 0, judge equal: yes`` and a markdown table,
writes JSON (default ``benchmarks/out/kill_anywhere.json``), and exits 1 when any of these fails.
Only one training process runs at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python benchmarks/kill_anywhere.py` from anywhere
    sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from sttrl.rundir import JUDGE_REPORT, RUN_RECORD, TRAJECTORY  # noqa: E402 - after sys.path holds the repository


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/kill_anywhere.py",
        description="SIGKILL a debug episode at N random moments, resume it each time, and check that it ends "
        "exactly like an uninterrupted one.",
    )
    p.add_argument("--n", type=int, default=20, help="kills (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill delays and of the episode (default 0)")
    p.add_argument(
        "--agent",
        default="random",
        choices=("random", "rule", "static"),
        help="the episode's controller (default random: many actions, never stops early)",
    )
    p.add_argument("--steps-per-action", type=int, default=8, help="optimizer steps per block (default 8)")
    p.add_argument("--max-actions", type=int, default=6, help="decisions per episode (default 6)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for the episodes, e.g. data.cache_dir=DIR (repeatable)",
    )
    p.add_argument("--workdir", type=Path, help="where runs, checkpoints and logs go (default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "out" / "kill_anywhere.json",
        help="JSON result file (default benchmarks/out/kill_anywhere.json)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one process may take (default 600)")
    return p


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


# ----- the check ---------------------------------------------------------------------------------
def run_check(args: argparse.Namespace, work: Path, console: Console) -> dict[str, Any]:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ckpts = Checkpoints(work)
    n_proc = 0

    def start(thread: str) -> Episode:
        nonlocal n_proc
        n_proc += 1
        return Episode(episode_cmd(args, work, thread), logs / f"{n_proc:03d}-{thread}.log")

    console.print("reference: one uninterrupted episode", highlight=False)
    ref_ep = start("reference")
    if not ref_ep.wait(args.timeout) or ref_ep.proc.returncode != 0:
        raise RuntimeError(f"the reference episode failed:\n{ref_ep.text[-3000:]}")
    t_ref = time.perf_counter() - ref_ep.started
    ref = outcome(work / "runs" / "reference")
    console.print(
        f"reference: {t_ref:.1f} s, {len(ref['steps'])} steps, judge WER {ref['judge'][0]:.3f} "
        f"CER {ref['judge'][1]:.3f}",
        highlight=False,
    )

    rng = random.Random(args.seed)
    kills: list[dict[str, Any]] = []
    chains: list[dict[str, Any]] = []
    chain, thread = 1, "kill-1"
    chain_kills: list[int] = []
    pending: list[int] = []  # kills whose resume line has not been seen yet
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    task = bar.add_task("kills", total=args.n, info="")
    with bar:
        while True:
            ep = start(thread)
            delay = rng.uniform(0.0, t_ref) if len(kills) < args.n else None
            exited = ep.wait(delay if delay is not None else args.timeout)
            if not exited and delay is None:
                ep.kill()
                raise RuntimeError(f"thread {thread} did not finish within {args.timeout} s:\n{ep.text[-3000:]}")
            if not exited:
                ep.kill()
            line = ep.first_line(thread)
            if line is not None:  # the graph started: the pending kills were resumed (or not) by this process
                for k in pending:
                    kills[k]["resume_line"] = line
                    kills[k]["resumed"] = line.startswith(kills[k]["expected"])
                pending = []
            if not exited:
                state = ckpts.state(thread)
                run_dir = work / "runs" / thread
                kill = {
                    "kill": len(kills) + 1,
                    "thread": thread,
                    "after_s": round(delay, 2),
                    "phase": phase_of(ep.text),
                    "thread_at": thread_at(state, run_dir),
                    "step": state.get("step"),
                    "partial_steps": partial_steps(run_dir),
                    "expected": expected_first_line(thread, state),
                    "resumed": None,
                    "resume_line": None,
                    "log": ep.log.name,
                }
                kills.append(kill)
                chain_kills.append(kill["kill"])
                pending.append(len(kills) - 1)
                bar.update(task, advance=1, info=f"{kill['phase']}")
                console.print(
                    f"kill {kill['kill']}/{args.n} after {delay:.1f} s: {kill['phase']} "
                    f"(thread {thread} at {kill['thread_at']})",
                    highlight=False,
                    markup=False,
                )
                continue
            if ep.proc.returncode != 0:
                raise RuntimeError(f"thread {thread} failed (exit {ep.proc.returncode}):\n{ep.text[-3000:]}")
            got = outcome(work / "runs" / thread)
            cmp = compare(got, ref)
            chains.append({"thread": thread, "kills": chain_kills, **cmp})
            console.print(
                f"thread {thread} finished after {len(chain_kills)} kills: "
                + ", ".join(f"{k} {v}" for k, v in cmp.items()),
                highlight=False,
                markup=False,
            )
            if len(kills) >= args.n:
                break
            chain += 1
            thread, chain_kills = f"kill-{chain}", []
    finished = {c["thread"] for c in chains}
    for k in kills:  # a kill counts as resumed only when its thread also ran to its end
        k["resumed"] = bool(k["resumed"]) and k["thread"] in finished
    resumed = sum(1 for k in kills if k["resumed"])
    return {
        "n": args.n,
        "seed": args.seed,
        "episode": {
            "preset": "debug",
            "agent": args.agent,
            "steps_per_action": args.steps_per_action,
            "max_actions": args.max_actions,
            "checkpoint_every": 1,
            "overrides": args.overrides,
        },
        "reference": {"seconds": t_ref, **ref},
        "kills": kills,
        "phases": {p: sum(1 for k in kills if k["phase"] == p) for p in dict.fromkeys(k["phase"] for k in kills)},
        "chains": chains,
        "processes": n_proc,
        "resumed": resumed,
        "lost_steps": sum(c["lost_steps"] for c in chains),
        "duplicated_steps": sum(c["duplicated_steps"] for c in chains),
        "steps_equal": all(c["steps_equal"] for c in chains),
        "numbers_equal": all(c["numbers_equal"] for c in chains),
        "weights_equal": all(c["weights_equal"] for c in chains),
        "judge_equal": all(c["judge_equal"] for c in chains),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| kill | thread | after s | process was in | checkpointer had the thread at | resumed |",
        "|---:|---|---:|---|---|---|",
    ]
    for k in result["kills"]:
        lines.append(
            f"| {k['kill']} | {k['thread']} | {k['after_s']:.1f} | {k['phase']} | {k['thread_at']} | "
            f"{'yes' if k['resumed'] else 'NO'} |"
        )
    return "\n".join(lines)


def summary_line(result: dict[str, Any]) -> str:
    return (
        f"resumed runs {result['resumed']}/{result['n']}, lost steps {result['lost_steps']}, "
        f"duplicated steps {result['duplicated_steps']}, judge equal: {'yes' if result['judge_equal'] else 'no'}"
    )


def passed(result: dict[str, Any]) -> bool:
    return (
        result["resumed"] == result["n"]
        and result["lost_steps"] == 0
        and result["duplicated_steps"] == 0
        and result["judge_equal"]
        and result["numbers_equal"]
        and result["weights_equal"]
        and result["steps_equal"]
        and bool(result["chains"])
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        print("error: --n must be at least 1", file=sys.stderr)
        return 2
    console = Console()
    if not console.is_terminal:  # logs and pipes: one line per kill
        console = Console(width=max(console.width, 160))
    temp = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="sttrl-kill-")) if temp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        result = run_check(args, work, console)
    except RuntimeError as exc:
        console.print(f"error: {exc}", highlight=False, markup=False)
        return 1
    finally:
        if temp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = time.perf_counter() - t0
    result["passed"] = passed(result)
    result["workdir"] = str(work) if (not temp or args.keep) else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(markdown(result), highlight=False, markup=False)
    console.print("kills landed in: " + ", ".join(f"{p} {c}" for p, c in result["phases"].items()), highlight=False)
    console.print(
        f"{len(result['chains'])} threads finished, {result['processes']} processes, "
        f"{result['seconds']:.0f} s; per-step numbers equal: {'yes' if result['numbers_equal'] else 'no'}, "
        f"final weights equal: {'yes' if result['weights_equal'] else 'no'}",
        highlight=False,
    )
    console.print(summary_line(result), highlight=False, markup=False)
    console.print(f"written: {args.out}", highlight=False, markup=False)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
