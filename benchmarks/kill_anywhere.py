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
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python benchmarks/kill_anywhere.py` from anywhere
    sys.path.insert(0, str(REPO))

from _kill_probe import (  # noqa: E402 - a sibling module, found next to this script
    Checkpoints,
    Episode,
    compare,
    episode_cmd,
    expected_first_line,
    outcome,
    partial_steps,
    phase_of,
    thread_at,
)
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from sttrl.io import atomic_write_json  # noqa: E402 - after sys.path holds the repository


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


# ----- the check ---------------------------------------------------------------------------------
def run_reference(start: Any, work: Path, timeout: float, console: Console) -> tuple[float, dict[str, Any]]:
    """The uninterrupted episode: its wall time and its outcome."""
    console.print("reference: one uninterrupted episode", highlight=False)
    ref_ep = start("reference")
    if not ref_ep.wait(timeout) or ref_ep.proc.returncode != 0:
        raise RuntimeError(f"the reference episode failed:\n{ref_ep.text[-3000:]}")
    t_ref = time.perf_counter() - ref_ep.started
    ref = outcome(work / "runs" / "reference")
    console.print(
        f"reference: {t_ref:.1f} s, {len(ref['steps'])} steps, judge WER {ref['judge'][0]:.3f} "
        f"CER {ref['judge'][1]:.3f}",
        highlight=False,
    )
    return t_ref, ref


def kill_record(n: int, thread: str, delay: float, ep: Episode, ckpts: Checkpoints, work: Path) -> dict[str, Any]:
    """What a kill hit: the process's phase and where the checkpointer had the thread."""
    state = ckpts.state(thread)
    run_dir = work / "runs" / thread
    return {
        "kill": n,
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


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def kill_loop(
    args: argparse.Namespace,
    start: Any,
    ckpts: Checkpoints,
    work: Path,
    t_ref: float,
    ref: dict[str, Any],
    console: Console,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Start, kill and resume threads until ``args.n`` kills are spent and the last thread ran to its end."""
    rng = random.Random(args.seed)
    kills: list[dict[str, Any]] = []
    chains: list[dict[str, Any]] = []
    chain, thread = 1, "kill-1"
    chain_kills: list[int] = []
    pending: list[int] = []  # kills whose resume line has not been seen yet
    bar = progress_bar(console)
    task = bar.add_task("kills", total=args.n, info="")
    with bar:
        while True:
            ep = start(thread)
            delay = rng.uniform(0.0, t_ref) if len(kills) < args.n else None
            exited = ep.wait(delay if delay is not None else args.timeout)
            if not exited:
                ep.kill()
                if delay is None:
                    raise RuntimeError(f"thread {thread} did not finish within {args.timeout} s:\n{ep.text[-3000:]}")
            line = ep.first_line(thread)
            if line is not None:  # the graph started: the pending kills were resumed (or not) by this process
                for k in pending:
                    kills[k]["resume_line"] = line
                    kills[k]["resumed"] = line.startswith(kills[k]["expected"])
                pending = []
            if not exited:
                kill = kill_record(len(kills) + 1, thread, delay or 0.0, ep, ckpts, work)
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
            cmp = compare(outcome(work / "runs" / thread), ref)
            chains.append({"thread": thread, "kills": chain_kills, **cmp})
            console.print(
                f"thread {thread} finished after {len(chain_kills)} kills: "
                + ", ".join(f"{k} {v}" for k, v in cmp.items()),
                highlight=False,
                markup=False,
            )
            if len(kills) >= args.n:
                return kills, chains
            chain += 1
            thread, chain_kills = f"kill-{chain}", []


def run_check(args: argparse.Namespace, work: Path, console: Console) -> dict[str, Any]:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ckpts = Checkpoints(work)
    n_proc = 0

    def start(thread: str) -> Episode:
        nonlocal n_proc
        n_proc += 1
        return Episode(episode_cmd(args, work, thread), logs / f"{n_proc:03d}-{thread}.log")

    t_ref, ref = run_reference(start, work, args.timeout, console)
    kills, chains = kill_loop(args, start, ckpts, work, t_ref, ref, console)
    finished = {c["thread"] for c in chains}
    for k in kills:  # a kill counts as resumed only when its thread also ran to its end
        k["resumed"] = bool(k["resumed"]) and k["thread"] in finished
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
        "resumed": sum(1 for k in kills if k["resumed"]),
        "lost_steps": sum(c["lost_steps"] for c in chains),
        "duplicated_steps": sum(c["duplicated_steps"] for c in chains),
        **{
            key: all(c[key] for c in chains) for key in ("steps_equal", "numbers_equal", "weights_equal", "judge_equal")
        },
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
    atomic_write_json(args.out, result)
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
