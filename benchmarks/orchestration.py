"""Orchestration overhead: the share of an episode's wall time spent outside the training and evaluation
tools (graph machinery, LangGraph's SQLite checkpointer, trajectory, plotting, decisions, printing).

Runs one episode as a subprocess, by default the LangGraph episode with its SQLite checkpointer
(``python -m graph.run``, rule agent), or the Gymnasium path (``--gym``: ``python -m sttrl.run``), and
measures it two ways:

1. From the run's files only (works for any runner that writes ``trajectory.jsonl``): each record holds
   ``train.seconds`` (the training loop), ``eval.seconds`` (decoding) and ``time`` (when the record was
   made). Between two consecutive records lies exactly one step, so for steps 2..N
   ``overhead = (time_k - time_{k-1}) - train.seconds - eval.seconds``. This counts *everything* outside
   sttrl's loops as overhead: the graph, checkpointer, trajectory and plot, but also sttrl's own block
   block checkpoint writes.
2. With timers (default; ``--no-instrument`` turns them off): the episode runs under
   ``benchmarks/_instrument.py``, which times sttrl's tool-level calls (``EpisodeRuntime.train_block`` /
   ``.evaluate``, what the LangChain tools call), setup, the final save and the judge, and the
   orchestration pieces it can name (trajectory append, plot, checkpointer put/put_writes/get_tuple).
   The rest of the wall time between them (graph scheduling, state serialization, decide, printing) is
   the untimed residual. Orchestration = residual + the named pieces.

Reported shares: orchestration ÷ the stepping loop (wall time minus process start-up, setup, judge and
exit: the part of the episode the target is about), and ÷ the whole process wall time. Target ≤ 2 %
on the cpu preset.

``--from-run DIR`` analyses an existing run directory's ``trajectory.jsonl`` (way 1 only).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from sttrl.rundir import TRAJECTORY

NAME = "orchestration"
GRAPH_ARGS = "--preset {preset} --quiet --run-dir {run_dir} --checkpointer {work}/checkpoints.sqlite"
GYM_ARGS = "--preset {preset} --quiet --no-judge --run-dir {run_dir}"
TARGET = 0.02


def parse_args(argv: list[str] | None = None):
    p = common.base_parser(NAME, __doc__)
    p.add_argument("--preset", default=None, help="preset (default cpu; debug with --quick)")
    p.add_argument(
        "--gym", action="store_true", help="measure the Gymnasium path (python -m sttrl.run) instead of the graph"
    )
    p.add_argument("--module", default=None, help="module to run (default graph.run, or sttrl.control.run with --gym)")
    p.add_argument(
        "--args",
        dest="module_args",
        default=None,
        help=f"its arguments, with placeholders {{preset}} {{run_dir}} {{work}} (graph default: {GRAPH_ARGS!r}; "
        f"gym default: {GYM_ARGS!r})",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override passed on as --set (repeatable); --threads N becomes --set run.threads=N",
    )
    p.add_argument("--no-instrument", action="store_true", help="no timers: trajectory and process wall time only")
    p.add_argument("--from-run", type=Path, default=None, metavar="DIR", help="analyse an existing run directory only")
    p.add_argument("--keep", action="store_true", help="keep the run directory")
    return p.parse_args(argv)


# ----- way 1: the trajectory ---------------------------------------------------------------------
def analyse_trajectory(run_dir: Path) -> dict[str, Any]:
    path = run_dir / TRAJECTORY
    if not path.is_file():
        return {"error": f"{path} does not exist"}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    trained = [r for r in records if r.get("train") and r.get("eval")]
    out: dict[str, Any] = {"records": len(records), "trained_steps": len(trained)}
    if not trained:
        return out
    train_s = sum(float(r["train"]["seconds"]) for r in trained)
    eval_s = sum(float(r["eval"]["seconds"]) for r in trained)
    keys = sorted({k for r in records for k in (r.get("timings") or {})})
    out["timings_sums"] = {k: sum(float((r.get("timings") or {}).get(k, 0.0)) for r in records) for k in keys}
    out["train_seconds"] = train_s
    out["eval_seconds"] = eval_s
    steps = []
    for prev, cur in itertools.pairwise(records):
        if cur.get("train") and cur.get("eval"):
            interval = float(cur["time"]) - float(prev["time"])
            inside = float(cur["train"]["seconds"]) + float(cur["eval"]["seconds"])
            steps.append(
                {"step": cur["step"], "interval_s": interval, "train_eval_s": inside, "outside_s": interval - inside}
            )
    out["steps"] = steps
    if steps:
        interval = sum(s["interval_s"] for s in steps)
        outside = sum(s["outside_s"] for s in steps)
        out["intervals_s"] = interval
        out["outside_s"] = outside
        out["outside_share"] = outside / interval if interval > 0 else None
    return out


# ----- way 2: the timers -------------------------------------------------------------------------
def _union(intervals: list[tuple[float, float]]) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def analyse_timers(timings: dict[str, Any]) -> dict[str, Any]:
    events = timings["events"]
    total = float(timings["total_s"])
    top = [e for e in events if e[3] == 0]
    inner = [e for e in events if e[3] > 0]

    def sums(evts: list[list[Any]]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for name, s, e, _d, _t in evts:
            o = out.setdefault(name, {"seconds": 0.0, "calls": 0})
            o["seconds"] += e - s
            o["calls"] += 1
        return out

    top_sums, inner_sums = sums(top), sums(inner)
    if not top:
        return {"error": "no timed call happened", "total_s": total}
    first, last = min(e[1] for e in top), max(e[2] for e in top)
    covered = _union([(e[1], e[2]) for e in top])
    residual = (last - first) - covered  # untimed time between the first and last timed call
    named = sum(v["seconds"] for k, v in top_sums.items() if k.startswith("orch."))
    orchestration = residual + named
    tools = sum(v["seconds"] for k, v in top_sums.items() if k.startswith("tool."))
    setup = sum(v["seconds"] for k, v in top_sums.items() if k.startswith("setup."))
    judge = top_sums.get("judge", {}).get("seconds", 0.0)
    final = top_sums.get("final.save", {}).get("seconds", 0.0)
    startup, teardown = first, total - last
    loop = total - startup - teardown - setup - judge
    core = {
        k: inner_sums.get(k, {}).get("seconds", 0.0)
        for k in ("core.train_loop", "core.save_checkpoint", "core.load_checkpoint", "core.evaluate")
    }
    safety = core["core.save_checkpoint"]
    return {
        "total_s": total,
        "startup_s": startup,
        "teardown_s": teardown,
        "setup_s": setup,
        "judge_s": judge,
        "final_save_s": final,
        "tools_s": tools,
        "train_tool_s": top_sums.get("tool.train", {}).get("seconds", 0.0),
        "eval_tool_s": top_sums.get("tool.evaluate", {}).get("seconds", 0.0),
        "named_orchestration_s": {k: v["seconds"] for k, v in top_sums.items() if k.startswith("orch.")},
        "residual_s": residual,
        "orchestration_s": orchestration,
        "loop_s": loop,
        "orchestration_share_of_loop": orchestration / loop if loop > 0 else None,
        "orchestration_share_of_total": orchestration / total if total > 0 else None,
        "core_s": core,
        "sttrl_crash_safety_s": safety,
        "sttrl_crash_safety_share_of_loop": safety / loop if loop > 0 else None,
        "top_level": top_sums,
        "inner": inner_sums,
        "patched": timings.get("patched", []),
    }


# ----- main --------------------------------------------------------------------------------------
def run_episode(args: argparse.Namespace, preset: str) -> tuple[Path, Path, dict[str, Any]]:
    module = args.module or ("sttrl.control.run" if args.gym else "graph.run")
    template = args.module_args or (GYM_ARGS if module == "sttrl.control.run" else GRAPH_ARGS)
    work = Path(tempfile.mkdtemp(prefix="sttrl-bench-orch-"))
    run_dir = work / "run"
    margs = template.format(preset=preset, run_dir=shlex.quote(str(run_dir)), work=shlex.quote(str(work)))
    overrides = list(args.overrides) + ([f"run.threads={args.threads}"] if args.threads else [])
    margs += "".join(f" --set {shlex.quote(o)}" for o in overrides)
    timings_path = work / "timings.json"
    if args.no_instrument:
        cmd = f"{shlex.quote(sys.executable)} -m {module} {margs}"
    else:
        wrapper = Path(__file__).resolve().parent / "_instrument.py"
        quoted = " ".join(shlex.quote(str(x)) for x in (sys.executable, wrapper, timings_path))
        cmd = f"{quoted} -m {module} {margs}"
    print(f"  $ {cmd}")
    log = work / "output.log"
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        rc = subprocess.run(
            shlex.split(cmd),
            cwd=common.REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ).returncode
    wall = time.perf_counter() - t0
    tail = log.read_text(errors="replace").splitlines()[-15:]
    meta = {"module": module, "command": cmd, "returncode": rc, "process_wall_s": wall, "output_tail": tail}
    if rc != 0:
        print(f"  episode failed with exit code {rc}; last lines:\n    " + "\n    ".join(tail))
    return work, run_dir, meta


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = args.preset or ("debug" if args.quick else "cpu")
    info = common.machine_info("cpu")
    print(f"{NAME}: preset {preset}, {common.describe_machine(info)}")
    work = None
    meta: dict[str, Any] = {}
    timers: dict[str, Any] | None = None
    if args.from_run:
        run_dir = args.from_run
    else:
        work, run_dir, meta = run_episode(args, preset)
        tpath = work / "timings.json"
        if tpath.is_file():
            timers = analyse_timers(json.loads(tpath.read_text()))
    traj = analyse_trajectory(run_dir)
    if work is not None and not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    if timers and "error" not in timers:
        t = timers
        rows += [
            ["process wall time", t["total_s"], "", ""],
            ["  start-up (interpreter, imports) + exit", t["startup_s"] + t["teardown_s"], "", ""],
            ["  setup (data, model, first checkpoint)", t["setup_s"], "", ""],
            ["  judge", t["judge_s"], "", ""],
            ["  stepping loop", t["loop_s"], "100 %", pct(t["loop_s"] / t["total_s"])],
            [
                "    train tool (EpisodeRuntime.train_block)",
                t["train_tool_s"],
                pct(t["train_tool_s"] / t["loop_s"]),
                "",
            ],
            ["      of which training loop", t["core_s"]["core.train_loop"], "", ""],
            [
                "      of which block checkpoints (sttrl crash safety)",
                t["sttrl_crash_safety_s"],
                pct(t["sttrl_crash_safety_share_of_loop"]),
                "",
            ],
            [
                "    eval tool (EpisodeRuntime.evaluate, incl. block 0)",
                t["eval_tool_s"],
                pct(t["eval_tool_s"] / t["loop_s"]),
                "",
            ],
            ["    final save", t["final_save_s"], pct(t["final_save_s"] / t["loop_s"]), ""],
        ]
        for k, v in sorted(t["named_orchestration_s"].items()):
            rows.append([f"    {k[5:]}", v, pct(v / t["loop_s"]), pct(v / t["total_s"])])
        rows.append(
            [
                "    untimed residual (graph, state, decide, printing)",
                t["residual_s"],
                pct(t["residual_s"] / t["loop_s"]),
                pct(t["residual_s"] / t["total_s"]),
            ]
        )
        rows.append(
            [
                "**orchestration** (named + residual)",
                t["orchestration_s"],
                pct(t["orchestration_share_of_loop"]),
                pct(t["orchestration_share_of_total"]),
            ]
        )
    table = common.markdown_table(["part", "seconds", "share of loop", "share of process"], rows) if rows else ""
    if "outside_share" in traj:
        table += (
            f"\n\nFrom trajectory.jsonl alone (steps 2..{traj['records']}): {traj['intervals_s']:.1f} s between "
            f"records, of which {traj['outside_s']:.2f} s outside train.seconds + eval.seconds = "
            f"{pct(traj['outside_share'])} (this also counts sttrl's block checkpoints)."
        )
    elif "error" in traj:
        table += f"\n\ntrajectory: {traj['error']}"
    share = timers.get("orchestration_share_of_loop") if timers else None
    verdict = "-" if share is None else ("meets" if share <= TARGET else "MISSES")
    table += (
        f"\n\n{'QUICK (noisy) — ' if args.quick else ''}preset {preset}, {meta.get('module', 'existing run')}; "
        f"target ≤ {100 * TARGET:.0f} % of the loop: {verdict}; {common.describe_machine(info)}."
    )
    payload = {
        "machine": info,
        "preset": preset,
        "target_share": TARGET,
        **meta,
        "timers": timers,
        "trajectory": traj,
        "run_dir": str(run_dir) if (args.keep or args.from_run) else None,
    }
    common.report(NAME, args, payload, table)
    return 0 if meta.get("returncode", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
