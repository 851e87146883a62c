"""Horizon: does the room for a controller grow or shrink with the episode's sample budget? (issue 11)

For every budget in ``--samples`` (``env.max_actions`` decisions of ``budget / max_actions`` samples each), the
static runs of ``headroom.py`` on the first ``--test-instances`` test instances: (a) the instance's start, (b) the
oracle (best of the ``--grid-lr`` grid in hindsight, per instance) and (c) the grid setting best on average over
the first ``--train-instances`` *train* instances (the tuned static setting, chosen per budget), each trained as
one block of the whole budget and judged on the hidden **dev** split. Prints, per budget, the room to repair a
start ((a) - (b)) and the room to adapt to the instance ((c) - (b)). Runs go to a pool of ``--workers`` fresh
processes (on one GPU they share it; on 2 CPU cores use 1); finished runs are read back (resumable).

    python benchmarks/horizon.py --preset bench-cpu --samples 256,512,1024 --test-instances 4 --train-instances 2 \\
        --grid-lr 5e-5,1.5e-4 --workers 1 --out runs/horizon
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from headroom import episode

from sttrl.config import add_config_arguments, load_config
from sttrl.io import atomic_write_json


def budget_overrides(samples: int, max_actions: int) -> list[str]:
    """Overrides that make the episode's budget ``samples``: ``max_actions`` blocks of ``samples / max_actions``."""
    if samples % max_actions:
        raise SystemExit(f"error: --samples {samples} is not a multiple of env.max_actions ({max_actions})")
    return ["env.budget_unit=samples", f"env.samples_per_action={samples // max_actions}"]


def episode_budget(cfg: Any) -> int:
    """The episode's training budget in samples at its starting batch: ``env.max_actions`` blocks."""
    e, t = cfg.env, cfg.train
    per_block = e.samples_per_action if e.budget_unit == "samples" else e.steps_per_action * t.batch_size * t.grad_accum
    return int(e.max_actions * per_block)


def job(
    preset: str,
    config: str | None,
    overrides: list[str],
    samples: int,
    instance: int,
    kind: str,
    setting: dict[str, Any] | None,
    run_dir: str,
) -> dict[str, Any]:
    """One static run (in a fresh process); its checkpoints are removed after the judge (only the score is kept)."""
    cfg = load_config(preset, config, overrides)  # overrides include the budget's (budget_overrides)
    t = time.perf_counter()
    rep = episode(cfg, instance, setting, "static", Path(run_dir))
    for sub in ("checkpoints", "final"):
        shutil.rmtree(Path(run_dir) / sub, ignore_errors=True)
    return {
        "samples": samples,
        "instance": instance,
        "kind": kind,
        "setting": setting,
        "dev_wer": rep["wer"],
        "scored": rep["scored"],
        "seconds": time.perf_counter() - t,
    }


def summarize(
    rows: list[dict[str, Any]], budgets: list[int], grid: list[dict[str, Any]], tests: list[int], trains: list[int]
) -> list[dict[str, Any]]:
    """Per budget: the tuned setting (train instances), the mean start / oracle / tuned dev WER and both margins."""
    out = []
    for n in budgets:
        got = {(r["instance"], r["kind"], json.dumps(r["setting"])): r["dev_wer"] for r in rows if r["samples"] == n}
        need = [(i, "train-grid", s) for i in trains for s in grid]
        need += [(i, k, s) for i in tests for k, s in [("start", None)] + [("grid", g) for g in grid]]
        if any((i, k, json.dumps(s)) not in got for i, k, s in need):  # a run failed or was cut short
            out.append({"samples": n, "complete": False})
            continue

        def wer(i: int, kind: str, s: dict[str, Any] | None, got: dict = got) -> float:
            return got[(i, kind, json.dumps(s))]

        means = [statistics.fmean(wer(i, "train-grid", s) for i in trains) for s in grid]
        tuned = grid[min(range(len(grid)), key=means.__getitem__)]
        per = [
            {
                "instance": i,
                "start": wer(i, "start", None),
                "oracle": min(wer(i, "grid", s) for s in grid),
                "tuned": wer(i, "grid", tuned),
            }
            for i in tests
        ]
        m = {k: statistics.fmean(r[k] for r in per) for k in ("start", "oracle", "tuned")}
        out.append(
            {
                "samples": n,
                "complete": True,
                "tuned_setting": tuned,
                "train_means": means,
                "mean": m,
                "repair_room": m["start"] - m["oracle"],
                "adapt_room": m["tuned"] - m["oracle"],
                "per_instance": per,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(p)
    p.add_argument("--samples", default="256,512,1024", help="comma-separated episode budgets in training samples")
    p.add_argument("--test-instances", type=int, default=4)
    p.add_argument("--train-instances", type=int, default=2)
    p.add_argument("--grid-lr", default="5e-5,1.5e-4", help="comma-separated static learning rates")
    p.add_argument("--workers", type=int, default=1, help="runs at once, each in a fresh process (default 1)")
    p.add_argument("--out", type=Path, default=Path("runs/horizon"))
    args = p.parse_args(argv)
    cfg = load_config(args.preset, args.config, args.overrides)
    if cfg.env.instances is None:
        print(
            f"error: preset {cfg.preset} has no env.instances; the horizon study needs an instance set", file=sys.stderr
        )
        return 2
    if args.workers < 1:
        print(f"error: --workers must be at least 1 (got {args.workers})", file=sys.stderr)
        return 2
    try:
        budgets = [int(x) for x in args.samples.split(",") if x]
        grid = [{"lr": float(x)} for x in args.grid_lr.split(",") if x]
    except ValueError as exc:
        print(f"error: --samples and --grid-lr take comma-separated numbers ({exc})", file=sys.stderr)
        return 2
    for n in budgets:
        budget_overrides(n, cfg.env.max_actions)
    spec = cfg.env.instances
    tests, trains = list(spec.test_seeds[: args.test_instances]), list(spec.train_seeds[: args.train_instances])
    plan = [(n, i, "train-grid", s) for n in budgets for i in trains for s in grid]
    plan += [(n, i, k, s) for i in tests for n in budgets for k, s in [("start", None)] + [("grid", g) for g in grid]]
    args.out.mkdir(parents=True, exist_ok=True)
    result = args.out / "horizon.json"
    rows: list[dict[str, Any]] = json.loads(result.read_text())["rows"] if result.is_file() else []
    have = {(r["samples"], r["instance"], r["kind"], json.dumps(r["setting"])) for r in rows}
    todo = [j for j in plan if (j[0], j[1], j[2], json.dumps(j[3])) not in have]
    t0 = time.perf_counter()

    def write() -> list[dict[str, Any]]:
        summary = summarize(rows, budgets, grid, tests, trains)
        atomic_write_json(
            result,
            {
                "preset": cfg.preset,
                "grid": grid,
                "budgets": budgets,
                "tests": tests,
                "trains": trains,
                "rows": rows,
                "summary": summary,
                "seconds": time.perf_counter() - t0,
            },
        )
        return summary

    print(f"{len(plan)} static runs ({len(todo)} to do) on {args.workers} worker(s)", flush=True)
    with cf.ProcessPoolExecutor(
        max_workers=args.workers, mp_context=mp.get_context("spawn"), max_tasks_per_child=1
    ) as pool:
        futs = {}
        for n, i, kind, s in todo:
            tag = "-".join(f"{k}{v:g}" for k, v in (s or {}).items()) or "start"
            run_dir = str((args.out / f"n{n}-i{i}-{kind}-{tag}").resolve())
            overrides = [*args.overrides, *budget_overrides(n, cfg.env.max_actions)]
            futs[
                pool.submit(
                    job, args.preset, str(args.config) if args.config else None, overrides, n, i, kind, s, run_dir
                )
            ] = (n, i, kind, tag)
        for fut in cf.as_completed(futs):
            n, i, kind, tag = futs[fut]
            try:
                row = fut.result()
            except Exception as exc:  # noqa: BLE001 - a failed run is reported and left out of the summary
                print(f"{n} samples, instance {i} {kind} {tag}: failed: {exc}", flush=True)
                continue
            rows.append(row)
            write()
            print(
                f"{n} samples, instance {i} {kind} {tag}: dev WER {row['dev_wer']:.3f} ({row['seconds']:.0f} s)",
                flush=True,
            )
    summary = write()
    print(
        "| samples | start | oracle | tuned static (lr) | repair room | adapt room |\n|---:|---:|---:|---:|---:|---:|"
    )
    for s in summary:
        if not s["complete"]:
            print(f"| {s['samples']} | incomplete |")
            continue
        m = s["mean"]
        print(
            f"| {s['samples']} | {m['start']:.3f} | {m['oracle']:.3f} | "
            f"{m['tuned']:.3f} ({s['tuned_setting']['lr']:g}) "
            f"| {s['repair_room']:+.3f} | {s['adapt_room']:+.3f} |"
        )
    print(f"{time.perf_counter() - t0:.0f} s; rows: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
