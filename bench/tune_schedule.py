"""``python -m bench.tune_schedule``: tune the ``schedule`` controller on *train* instances.

Grid search over peak lr x decay shape: every grid point runs the schedule (warm-up, then linear or cosine
decay to the horizon, ``sttrl.train.trainer.scheduled_lr``) on each train instance (``env.instances.train_seeds``,
the first ``--train-instances``) from the instance's start batch and frozen layers, at the benchmark's whole
budget, and the judge scores the final model on the hidden **dev** split (never test). The point with the
lowest mean dev WER wins. The file written (``--out``) holds the winner, every grid point's per-instance dev
WERs, and the tuning cost (episodes, samples, optimizer steps, seconds); pass it to the benchmark with
``--set bench.schedule_file=FILE``. Resumable: finished runs under ``--work`` are read back.

Each run trains its budget as one block (the same samples, data order and per-step lr as the episode's
blocks, since the schedule runs on global steps; only the per-block validation evaluations, which a fixed
schedule never reads, are skipped).

    python -m bench.tune_schedule --preset bench-cpu --train-instances 4 --out runs/schedule-tuned.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.tuning import cached_data, drop_weights, instance_config, lowest
from sttrl.config import Config, absolute_paths, add_config_arguments, config_from_dict, load_config
from sttrl.control.schedule import TUNED_SCHEMA, with_schedule
from sttrl.errors import ConfigError, SttrlError
from sttrl.io import atomic_write_json
from sttrl.train.memory import limit_arenas, release_memory


def one_block(cfg: Config) -> Config:
    """``cfg`` with its whole budget as one block (the horizon, the samples and the data order unchanged)."""
    data = cfg.to_dict()
    env = data["env"]
    if env["budget_unit"] == "samples":
        env["samples_per_action"] = int(env["samples_per_action"]) * int(env["max_actions"])
    else:
        env["steps_per_action"] = int(env["steps_per_action"]) * int(env["max_actions"])
    env["max_actions"] = 1
    return config_from_dict(data)


def run_point(
    cfg: Config,
    instance: int,
    configure: Callable[[Config], Config],
    run_dir: Path,
    data_cache: dict[str, Any],
    split: str = "dev",
    data_seed: int | None = None,
    keep_final: bool = False,
) -> dict[str, Any]:
    """One static run on ``instance`` (its start adjusted by ``configure``) training the whole budget as one
    block, judged on the hidden ``split``; ``run_dir/point.json`` holds the row (read back when present).
    ``data_seed``: the run's data-order seed (default: the instance's seed). Once judged, the run's checkpoints
    are removed, and its final weights too unless ``keep_final`` (``bench.tuning.drop_weights``)."""
    from sttrl.env.runtime import EpisodeRuntime  # torch: the CLI's --help and argument errors stay torch-free
    from sttrl.judge.scoring import judge  # torch, as above

    row_path = run_dir / "point.json"
    if row_path.is_file():
        return json.loads(row_path.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts again (at most one block is lost)
    icfg = one_block(instance_config(cfg, instance, configure, data_seed))
    t0 = time.perf_counter()
    rt = EpisodeRuntime(icfg, run_dir, progress=False, data=cached_data(icfg, data_cache), run_id=run_dir.name)
    hp = rt.initial_hp()
    res = rt.train_block(1, hp)
    rt.save_final()
    del rt
    release_memory(collect=True)
    report = judge(run_dir, progress=False, split=split)
    drop_weights(run_dir, final=not keep_final)
    row = {
        "instance": instance,
        "hp": hp.to_dict(),
        "status": res.status,
        "steps": res.steps_attempted,
        "samples": res.samples,
        f"{split}_wer": report.get("wer"),
        "scored": report.get("scored"),
        "run_dir": str(run_dir),
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_json(row_path, row)
    return row


def tune(
    cfg: Config,
    lrs: list[float],
    shapes: list[str],
    instances: list[int],
    work: Path,
    warmup_fraction: float,
    final_fraction: float,
    on_line: Any = print,
) -> dict[str, Any]:
    """Run the grid and return the tuned document (see the module docstring)."""
    spec = cfg.env.instances
    if spec is None:
        raise ConfigError(f"preset {cfg.preset} has no env.instances: the schedule is tuned on train instances")
    bad = [i for i in instances if i not in spec.train_seeds]
    if bad:
        raise ConfigError(f"instances {bad} are not train instances ({spec.train_seeds}): tune on train instances only")
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    cache: dict[str, Any] = {}
    for shape in shapes:
        for lr in lrs:
            sched = {
                "peak_lr": lr,
                "shape": shape,
                "warmup_fraction": warmup_fraction,
                "final_fraction": final_fraction,
            }
            got = []
            for i in instances:
                row = run_point(cfg, i, lambda c, s=sched: with_schedule(c, s), work / f"{shape}-lr{lr:g}-i{i}", cache)
                row.update(peak_lr=lr, shape=shape)
                rows.append(row)
                got.append(row)
                on_line(f"{shape} peak {lr:g} instance {i}: dev WER {row['dev_wer']:.3f} ({row['status']})")
            wers = [r["dev_wer"] for r in got if r["dev_wer"] is not None]
            points.append(
                {
                    **sched,
                    "dev_wer_mean": statistics.fmean(wers) if wers else None,
                    "per_instance": {str(r["instance"]): r["dev_wer"] for r in got},
                }
            )
    best = lowest(points)  # the first on ties (grid order)
    return {
        "schema": TUNED_SCHEMA,
        "preset": cfg.preset,
        "peak_lr": best["peak_lr"],
        "shape": best["shape"],
        "warmup_fraction": warmup_fraction,
        "final_fraction": final_fraction,
        "dev_wer": best["dev_wer_mean"],
        "train_instances": instances,
        "split": "dev",
        "grid": points,
        "cost": {
            "episodes": len(rows),
            "samples": sum(r["samples"] for r in rows),
            "steps": sum(r["steps"] for r in rows),
            "seconds": sum(r["seconds"] for r in rows),
        },
        "budget": {
            "unit": cfg.env.budget_unit,
            "max_actions": cfg.env.max_actions,
            "per_action": cfg.env.samples_per_action if cfg.env.budget_unit == "samples" else cfg.env.steps_per_action,
        },
    }


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.tune_schedule",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the tuned file (JSON)")
    p.add_argument("--grid-lr", metavar="LR,...", help="peak learning rates (default: train.lr x 1/3, 1, 3)")
    p.add_argument("--shapes", default="linear,cosine", help="decay shapes (default: linear,cosine)")
    p.add_argument("--train-instances", type=int, default=4, metavar="N", help="the first N train instances")
    p.add_argument("--warmup-fraction", type=float, default=0.1, help="warm-up share of the horizon (default: 0.1)")
    p.add_argument("--final-fraction", type=float, default=0.0, help="final lr / peak (default: 0)")
    p.add_argument("--work", type=Path, metavar="DIR", help="run directories (default: FILE's folder/<FILE stem>-runs)")
    args = p.parse_args(argv)
    limit_arenas()  # before any thread allocates: see sttrl.train.memory
    try:
        cfg = absolute_paths(load_config(args.preset, args.config, args.overrides))  # once, at the entry point
        lrs = _floats(args.grid_lr) if args.grid_lr else [cfg.train.lr / 3, cfg.train.lr, cfg.train.lr * 3]
        shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
        if not lrs or not shapes or any(s not in ("linear", "cosine") for s in shapes):
            raise ConfigError(f"--shapes {args.shapes!r}: valid shapes are linear, cosine; --grid-lr must not be empty")
        if cfg.env.instances is None:
            raise ConfigError(f"preset {cfg.preset} has no env.instances: the schedule is tuned on train instances")
        instances = list(cfg.env.instances.train_seeds[: args.train_instances])
        work = args.work or args.out.parent / f"{args.out.stem}-runs"
        doc = tune(cfg, lrs, shapes, instances, work, args.warmup_fraction, args.final_fraction)
    except SttrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, doc)
    c = doc["cost"]
    print(
        f"tuned: {doc['shape']} from peak {doc['peak_lr']:g}, mean dev WER {doc['dev_wer']:.3f} on "
        f"{len(instances)} train instances; cost {c['episodes']} episodes, {c['samples']} samples, "
        f"{c['steps']} steps, {c['seconds']:.0f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
