"""``python -m bench.tune_lookahead``: tune the ``lookahead`` controller on *train* instances against hidden *dev*.

Grid: probe length (``lookahead.probe_samples``) x candidate set x criterion (any registered one:
``sttrl.control.lookahead.CRITERIA``) x the probes' share of the budget (``lookahead.probe_share``). Every point runs
a whole lookahead episode on each train instance with its probes charged to the budget (as in the benchmark), and
the judge scores the final model on the hidden **dev** split; the lowest mean dev WER wins. Successive halving
(``--halve-after K``, default 2): every point runs on the first K train instances, then each further instance runs
only the better half of the points still in, and the winner is the best of those that ran on every instance
(16 points x 4 instances: 44 episodes instead of 64). The file written
(``--out``, schema ``sttrl.lookahead/1``) holds the winning ``settings``, every point's per-instance dev WERs, what
each run spent on probes, and the tuning cost; the benchmark runs it with ``--set bench.lookahead_file=FILE``.
Resumable: each run's ``point.json`` under ``--work`` is read back, and with ``--ledger FILE`` every finished
episode's row is kept in one small JSON-lines file (commit it: the tuning then resumes on a new machine; rows
name the judge key's fingerprint, since another machine's key judges other hidden dev utterances).

    python -m bench.tune_lookahead --preset bench-cpu --train-instances 4 --out runs/lookahead-tuned.json
    python -m bench.tune_lookahead --quick --out runs/lookahead-quick.json       # debug preset, seconds (CI)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.lookahead import lookahead_result
from bench.sha import rung_sizes
from bench.tuning import (
    cached_data,
    drop_weights,
    floats,
    instance_config,
    lowest,
    mean_or_none,
    provenance,
    train_instances,
    tuning_config,
    tuning_parser,
    with_ledger,
    words,
    work_dir,
)
from sttrl.config import Config
from sttrl.control.lookahead import CRITERIA, LOG, TUNED_SCHEMA, run_lookahead, with_settings
from sttrl.errors import ConfigError, SttrlError
from sttrl.io import atomic_write_json
from sttrl.train.memory import limit_arenas

CANDIDATE_SETS = {  # keep first: the first candidate wins a tie
    "lr": ["keep", "lr_down", "lr_up"],
    "lr-batch": ["keep", "lr_down", "lr_up", "batch_down", "batch_up"],
    "all": ["keep", "lr_down", "lr_up", "batch_down", "batch_up", "freeze_more", "freeze_less"],
}
FULL_GRID = {"probe_samples": [16, 32], "sets": ["lr", "lr-batch"], "criteria": ["train_loss", "val_wer"]}
FULL_SHARES = [0.25, 0.5]
QUICK_GRID = {"probe_samples": [4], "sets": ["lr"], "criteria": ["train_loss", "val_wer"]}
HALVE_AFTER = 2  # 16 points x 4 instances: 16 + 16 + 8 + 4 = 44 episodes instead of 64
# bench-cpu on 2 cores: measured 298-497 s a lookahead episode (mean 411 s over the 44 episodes of the committed ledger,
# benchmarks/results/lookahead-tuning-bench-cpu.jsonl, judging hidden dev included)
EPISODE_SECONDS = 410.0


def run_episode_point(
    cfg: Config, instance: int, settings: dict[str, Any], run_dir: Path, data_cache: dict[str, Any]
) -> dict[str, Any]:
    """One lookahead episode on ``instance`` with ``settings`` (probes charged), judged on hidden dev;
    ``run_dir/point.json`` holds the row (read back when present)."""
    from sttrl.judge.scoring import judge  # torch: loaded when a run starts, not for --help
    from sttrl.train.memory import release_memory

    row_path = run_dir / "point.json"
    if row_path.is_file():
        return json.loads(row_path.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)  # probes are not resumable mid-way: an unfinished run starts again
    icfg = instance_config(cfg, instance, lambda c: with_settings(c, {**settings, "charge_probes": True}))
    t0 = time.perf_counter()
    out = run_lookahead(icfg, run_dir, data=cached_data(icfg, data_cache))
    release_memory(collect=True)
    report = judge(run_dir, progress=False, split="dev")
    drop_weights(run_dir)
    rows = [json.loads(x) for x in (run_dir / LOG).read_text().splitlines() if x.strip()]
    res = lookahead_result(instance, run_dir.name, out, rows, report, time.perf_counter() - t0)
    row = {
        "instance": instance,
        "settings": settings,
        "dev_wer": report.get("wer"),
        "scored": report.get("scored"),
        "actions": res["actions"],
        "samples": res["samples_spent"],
        "probe_samples": res["probe_samples"],
        "steps": res["train_steps"],  # probes included
        "run_dir": str(run_dir),
        "seconds": res["wall_s"],
    }
    atomic_write_json(row_path, row)
    return row


def grid_points(probe_samples: list[int], sets: list[str], criteria: list[str], shares: list[float]) -> list[dict]:
    """Every combination as ``lookahead.*`` settings; unknown sets or criteria are a ConfigError."""
    bad = [s for s in sets if s not in CANDIDATE_SETS] + [c for c in criteria if c not in CRITERIA]
    if bad:
        raise ConfigError(
            f"unknown {bad}: candidate sets are {', '.join(CANDIDATE_SETS)}; criteria {', '.join(CRITERIA)}"
        )
    return [
        {"probe_samples": int(n), "candidates": CANDIDATE_SETS[s], "criterion": c, "probe_share": float(sh), "set": s}
        for n, s, c, sh in itertools.product(probe_samples, sets, criteria, shares)
    ]


def survivors(alive: list[int], got: dict[int, list[dict[str, Any]]]) -> list[int]:
    """Successive halving: the better half (rounded up) of the ``alive`` point indices by mean dev WER over the
    instances each has run (a point that was not scored ranks last; grid order breaks ties)."""

    def key(j: int) -> tuple[float, int]:
        m = mean_or_none([r["dev_wer"] for r in got[j]])
        return (float("inf") if m is None else m, j)

    return sorted(sorted(alive, key=key)[: max(1, math.ceil(len(alive) / 2))])


def tune(
    cfg: Config,
    points: list[dict[str, Any]],
    instances: list[int],
    work: Path,
    on_line: Callable[[str], Any] = print,
    halve_after: int = 0,
    run: Callable[..., dict[str, Any]] = run_episode_point,
) -> dict[str, Any]:
    """Run the points instance by instance and return the tuned document (see the module docstring). With
    ``halve_after`` K > 0, every point runs on the first K instances and each later instance runs only the better
    half of the points still in (successive halving); the winner is the best of those that ran on every instance."""
    rows: list[dict[str, Any]] = []
    cache: dict[str, Any] = {}
    got: dict[int, list[dict[str, Any]]] = {j: [] for j in range(len(points))}
    alive = list(range(len(points)))
    for k, i in enumerate(instances):
        if halve_after and k >= halve_after:
            alive = survivors(alive, got)
        for j in alive:
            point = points[j]
            settings = {key: v for key, v in point.items() if key != "set"}
            row = run(cfg, i, settings, work / f"{tag_of(point)}-i{i}", cache)
            rows.append(row)
            got[j].append(row)
            on_line(
                f"{tag_of(point)} instance {i}: dev WER {row['dev_wer']:.3f}, {row['probe_samples']} of "
                f"{row['samples']} samples on probes, actions {' '.join(row['actions'])}"
            )
    scored = [
        {
            **point,
            "dev_wer_mean": mean_or_none([r["dev_wer"] for r in got[j]]),
            "per_instance": {str(r["instance"]): r["dev_wer"] for r in got[j]},
            "probe_samples_mean": mean_or_none([r["probe_samples"] for r in got[j]]),
            "instances_run": len(got[j]),
        }
        for j, point in enumerate(points)
    ]
    best = lowest([p for p in scored if p["instances_run"] == len(instances)])
    return {
        "schema": TUNED_SCHEMA,
        "settings": {k: best[k] for k in ("probe_samples", "candidates", "criterion", "probe_share")},
        "candidate_set": best["set"],
        "dev_wer": best["dev_wer_mean"],
        "grid": scored,
        "halve_after": halve_after,
        "judge_keys": sorted({r["judge_key"] for r in rows if r.get("judge_key")}),
        **provenance(cfg, instances, rows),
    }


def tag_of(point: dict[str, Any]) -> str:
    """A point's run-directory tag, e.g. ``p16-lr-train_loss-s0.25``."""
    return f"p{point['probe_samples']}-{point['set']}-{point['criterion']}-s{point['probe_share']:g}"


def episodes_planned(points: int, instances: int, halve_after: int) -> int:
    """Episodes :func:`tune` runs: every point on the first ``halve_after`` instances, then half as many each time."""
    if not halve_after:
        return points * instances
    sizes = rung_sizes(points, 2)  # the points alive once halving starts: points, ceil(points/2), ... 1
    return sum(sizes[min(max(0, k - halve_after + 1), len(sizes) - 1)] for k in range(instances))


def build_parser() -> argparse.ArgumentParser:
    p = tuning_parser("python -m bench.tune_lookahead", __doc__.splitlines()[0], 4)
    p.add_argument("--probe-samples", metavar="N,...", help=f"probe lengths (default {FULL_GRID['probe_samples']})")
    p.add_argument("--sets", metavar="NAME,...", help=f"candidate sets from {', '.join(CANDIDATE_SETS)}")
    p.add_argument("--criteria", metavar="NAME,...", help=f"criteria from {', '.join(CRITERIA)}")
    p.add_argument("--shares", metavar="F,...", help=f"probe shares of the budget (default {FULL_SHARES})")
    p.add_argument(
        "--halve-after",
        type=int,
        default=HALVE_AFTER,
        metavar="K",
        help=f"every point runs on the first K train instances, then each further instance runs only the better half "
        f"(successive halving; 0: every point on every instance; default {HALVE_AFTER})",
    )
    p.add_argument(
        "--ledger",
        type=Path,
        metavar="FILE",
        help="a JSON-lines file of finished episodes, read back before running and appended after each one: commit "
        "it and the tuning resumes on a machine without the run directories (rows of another config are refused)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limit_arenas()  # before any thread allocates: see sttrl.train.memory
    grid = QUICK_GRID if args.quick else FULL_GRID
    try:
        cfg = tuning_config(args)
        points = grid_points(
            [int(x) for x in floats(args.probe_samples)] if args.probe_samples else grid["probe_samples"],
            words(args.sets) if args.sets else grid["sets"],
            words(args.criteria) if args.criteria else grid["criteria"],
            floats(args.shares) if args.shares else ([1.0] if args.quick else FULL_SHARES),
        )
        instances = train_instances(cfg, 1 if args.quick else args.train_instances)
        if args.halve_after < 0:
            raise ConfigError(f"--halve-after must be 0 (no halving) or more, not {args.halve_after}")
        runs = episodes_planned(len(points), len(instances), args.halve_after)
        halving = args.halve_after and len(instances) > args.halve_after
        print(
            f"{len(points)} points x {len(instances)} train instances = {runs} lookahead episodes"
            f"{f' (halving after {args.halve_after})' if halving else ''}"
            f"; on bench-cpu with 2 cores about {runs * EPISODE_SECONDS / 3600:.1f} h ({EPISODE_SECONDS:.0f} s each)"
        )
        if args.dry_run:
            return 0
        run = with_ledger(run_episode_point, args.ledger, cfg) if args.ledger else run_episode_point
        doc = tune(cfg, points, instances, work_dir(args), halve_after=args.halve_after, run=run)
    except SttrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, doc)
    s, c = doc["settings"], doc["cost"]
    print(
        f"tuned: probes of {s['probe_samples']} samples, candidates {doc['candidate_set']}, criterion "
        f"{s['criterion']}, probe share {s['probe_share']:g}: mean dev WER {doc['dev_wer']:.3f} on "
        f"{len(doc['train_instances'])} train instances; cost {c['episodes']} episodes, {c['samples']} samples, "
        f"{c['steps']} steps, {c['seconds']:.0f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
