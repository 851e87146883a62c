"""``python -m bench.tune_contextual``: fit the ``contextual`` controller's map on *train* instances against hidden
*dev*.

For every train instance: its start features (``sttrl.control.contextual.start_observation``: the episode's own
start measurement), then every grid point (peak lr x decay shape x warm-up share) run as the schedule controller
runs it (the whole budget as one block, ``bench.tune_schedule.run_point``) and judged on the hidden **dev** split.
Maps from features to every grid point's dev WER (``global``, ``knn-1``, ``knn-3``, ``gp``:
``sttrl.control.context_models``) are scored by leave-one-instance-out cross-validation; the lowest cross-validated
dev WER wins (``global`` is the tuned schedule, so the table says whether the features help on held-out train
instances). The file (``--out``, schema ``sttrl.contextual/1``) holds the features, the grid, every instance's dev
WERs, the chosen map, the CV table and the tuning cost; the benchmark runs it with
``--set bench.contextual_file=FILE``. Resumable: every run's ``point.json`` under ``--work`` is read back.

    python -m bench.tune_contextual --preset bench-cpu --train-instances 8 --out runs/contextual-tuned.json
    python -m bench.tune_contextual --quick --out runs/contextual-quick.json      # debug preset, seconds (CI)
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.tune_schedule import run_point
from bench.tuning import (
    cached_data,
    floats,
    instance_config,
    provenance,
    train_instances,
    tuning_config,
    tuning_parser,
    words,
    work_dir,
)
from sttrl.config import Config
from sttrl.control.context_models import choose
from sttrl.control.contextual import TUNED_SCHEMA, default_features, features_of, start_observation
from sttrl.control.schedule import TUNED_SCHEMA as SCHEDULE_SCHEMA
from sttrl.control.schedule import with_schedule
from sttrl.errors import ConfigError, SttrlError
from sttrl.io import atomic_write_json
from sttrl.train.memory import limit_arenas

LR_FACTORS = (0.3, 0.6, 1.2, 2.4)  # default peak lrs: the preset's train.lr times these
RUN_SECONDS = 186.0  # bench-cpu, 2 cores: one schedule run of 512 samples judged on dev (mean of 60 runs, 2026-12-03)


def grid_of(lrs: list[float], shapes: list[str], warmups: list[float], final: float) -> list[dict[str, Any]]:
    bad = [s for s in shapes if s not in ("linear", "cosine")]
    if bad or not lrs or not shapes or not warmups:
        raise ConfigError(
            f"shapes {shapes}: valid shapes are linear, cosine; the lr and warm-up lists must not be empty"
        )
    return [
        {"peak_lr": lr, "shape": shape, "warmup_fraction": w, "final_fraction": final}
        for shape, w, lr in itertools.product(shapes, warmups, lrs)
    ]


def instance_rows(
    cfg: Config,
    grid: list[dict[str, Any]],
    instances: list[int],
    features: list[str],
    work: Path,
    on_line: Callable[[str], Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per train instance its features and dev WER at every grid point; and every run's row (for the cost)."""
    out, runs, cache = [], [], {}
    for i in instances:
        icfg = instance_config(cfg, i)
        start = start_observation(icfg, data=cached_data(icfg, cache))
        x = features_of(icfg, start, features)
        wers = []
        for g in grid:
            name = f"{g['shape']}-lr{g['peak_lr']:g}-w{g['warmup_fraction']:g}-i{i}"
            row = run_point(cfg, i, lambda c, s=g: with_schedule(c, s), work / name, cache)
            runs.append(row)
            wers.append(row["dev_wer"])
            got = f"{row['dev_wer']:.3f}" if row["dev_wer"] is not None else "not scored"
            on_line(f"instance {i} {g['shape']} peak {g['peak_lr']:g} warm-up {g['warmup_fraction']:g}: dev WER {got}")
        scored = [w for w in wers if w is not None]
        if not scored:
            raise SttrlError(f"no grid point of train instance {i} was scored on the hidden dev split")
        filled = [w if w is not None else max(scored) for w in wers]  # an unscored point counts as the worst
        out.append({"instance": i, "features": x, "dev_wer": filled, "unscored": wers.count(None)})
    return out, runs


def tune(
    cfg: Config,
    grid: list[dict[str, Any]],
    instances: list[int],
    features: list[str],
    work: Path,
    on_line: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the grid on every train instance, cross-validate the maps and return the tuned document."""
    import numpy as np  # with the rest of the numeric stack, only when tuning runs

    rows, runs = instance_rows(cfg, grid, instances, features, work, on_line)
    X, Y = np.array([r["features"] for r in rows]), np.array([r["dev_wer"] for r in rows])
    if len(rows) >= 2:
        model, cv = choose(X, Y)
        note = "chosen by leave-one-instance-out CV over the train instances"
    else:
        model, cv, note = "global", {}, "one train instance: no cross-validation, the global map (the tuned schedule)"
    best_global = int(np.argmin(Y.mean(axis=0)))
    return {
        "schema": TUNED_SCHEMA,
        "model": model,
        "model_note": note,
        "features": features,
        "grid": grid,
        "instances": rows,
        "cv": cv,
        "global_best": {**grid[best_global], "dev_wer_mean": float(Y.mean(axis=0)[best_global])},
        **provenance(cfg, instances, runs),
    }


def schedule_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``global`` map as a tuned ``schedule`` file (``sttrl.schedule/1``, what ``bench.tune_schedule`` writes):
    the grid point with the lowest mean dev WER over the train instances. The same runs, so the same cost; the
    benchmark's reference then is tuned on this grid and these instances."""
    points = [
        {
            **g,
            "dev_wer_mean": sum(r["dev_wer"][k] for r in doc["instances"]) / len(doc["instances"]),
            "per_instance": {str(r["instance"]): r["dev_wer"][k] for r in doc["instances"]},
        }
        for k, g in enumerate(doc["grid"])
    ]
    best = doc["global_best"]
    return {
        "schema": SCHEDULE_SCHEMA,
        "preset": doc["preset"],
        **{k: best[k] for k in ("peak_lr", "shape", "warmup_fraction", "final_fraction")},
        "dev_wer": best["dev_wer_mean"],
        "train_instances": doc["train_instances"],
        "split": doc["split"],
        "grid": points,
        "cost": doc["cost"],
        "budget": doc["budget"],
        "from": "bench.tune_contextual: its global map",
    }


def build_parser() -> argparse.ArgumentParser:
    p = tuning_parser("python -m bench.tune_contextual", __doc__.splitlines()[0], 8)
    p.add_argument(
        "--grid-lr", metavar="LR,...", help=f"peak lrs (default: train.lr x {', '.join(map(str, LR_FACTORS))})"
    )
    p.add_argument("--shapes", metavar="NAME,...", help="decay shapes (default: linear,cosine; --quick: cosine)")
    p.add_argument("--warmups", default="0.1", metavar="F,...", help="warm-up shares of the horizon (default: 0.1)")
    p.add_argument("--final-fraction", type=float, default=0.0, help="final lr / peak (default: 0)")
    p.add_argument("--features", metavar="NAME,...", help="features (default: the base ones, + what the set varies)")
    p.add_argument(
        "--schedule-out",
        type=Path,
        metavar="FILE",
        help="also write the global map as a tuned schedule file (bench.schedule_file): the reference tuned on the "
        "same grid and instances",
    )
    return p


def _print_cv(doc: dict[str, Any]) -> None:
    for kind, s in doc["cv"].items():
        mark = " <- chosen" if kind == doc["model"] else ""
        print(f"  {kind:7s} CV dev WER {s['dev_wer']:.4f}  regret {s['regret']:.4f}  RMSE {s['rmse']:.4f}{mark}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limit_arenas()  # before any thread allocates: see sttrl.train.memory
    try:
        cfg = tuning_config(args)
        lr = cfg.train.lr
        lrs = floats(args.grid_lr) if args.grid_lr else [lr / 2, lr * 2] if args.quick else [lr * f for f in LR_FACTORS]
        shapes = words(args.shapes) if args.shapes else ["cosine"] if args.quick else ["linear", "cosine"]
        grid = grid_of(lrs, shapes, floats(args.warmups), args.final_fraction)
        instances = train_instances(cfg, 2 if args.quick else args.train_instances)
        features = words(args.features) if args.features else default_features(cfg)
        runs = len(grid) * len(instances)
        print(
            f"{len(grid)} grid points x {len(instances)} train instances = {runs} runs; on bench-cpu with 2 cores "
            f"about {runs * RUN_SECONDS / 3600:.1f} h ({RUN_SECONDS:.0f} s each) plus one start measurement per "
            "instance"
        )
        if args.dry_run:
            return 0
        doc = tune(cfg, grid, instances, features, work_dir(args))
    except SttrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, doc)
    if args.schedule_out is not None:
        atomic_write_json(args.schedule_out, schedule_doc(doc))
    _print_cv(doc)
    c, g = doc["cost"], doc["global_best"]
    print(
        f"tuned: map {doc['model']} on features {', '.join(doc['features'])} ({doc['model_note']}); the global best "
        f"{g['shape']} peak {g['peak_lr']:g} has mean dev WER {g['dev_wer_mean']:.3f}; cost {c['episodes']} runs, "
        f"{c['samples']} samples, {c['steps']} steps, {c['seconds']:.0f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
