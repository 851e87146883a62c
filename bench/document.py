"""``bench.json`` and the figures: the plan, the budget, every run's numbers, the summary, the paired statistics
(with each comparison's minimum detectable effect) and the table, rewritten after every run."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.budget import Budget
from bench.common import SCHEMA
from bench.plot import write_action_raster, write_bench_plot, write_paired_plot
from bench.replicates import seeds_table
from bench.results import markdown_table, paired_stats, summarize
from sttrl.config import Config
from sttrl.control.schedule import load_tuned
from sttrl.env.instances import draw
from sttrl.io import atomic_write_json

ORACLE = "oracle"  # regret only: never a contestant in the summary or the paired tests


def machine() -> dict[str, Any]:
    """Where the driver runs: platform, Python, cores, torch and its threads."""
    import torch  # torch: read only when bench.json is written, so the CLI's dry run stays torch-free

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "logical_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def schedule_tuning(cfg: Config, controllers: Sequence[str]) -> dict[str, Any] | None:
    """The schedule controller's tuned setting and what tuning it cost (reported next to it), or why untuned."""
    if "schedule" not in controllers:
        return None
    path = cfg.bench.schedule_file
    if path is None:
        return {"tuned": False, "note": "no bench.schedule_file: the config's bench.schedule_* values"}
    doc = load_tuned(path)
    keys = ("peak_lr", "shape", "warmup_fraction", "final_fraction", "dev_wer", "train_instances", "cost")
    return {"tuned": True, "file": str(path), **{k: doc[k] for k in keys}}


def document(
    cfg: Config,
    runs: list[dict[str, Any]],
    controllers: list[str],
    seeds: list[int],
    budget: Budget,
    reference: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """bench.json: the plan, the budget, every run's numbers, the summary and the paired statistics. ``extra``
    holds what only the driver knows (skipped controllers, models, the executor)."""
    contestants = [c for c in controllers if c != ORACLE]
    summary = summarize(runs, contestants, budget.total)
    oracle = ORACLE if ORACLE in controllers else None
    paired = paired_stats(runs, summary, reference, seed=seeds[0], oracle=oracle)
    spec = cfg.env.instances
    replicates = cfg.bench.replicates
    return {
        "schema": SCHEMA,
        "preset": cfg.preset,
        "controllers": controllers,
        "seeds": seeds,
        "replicates": replicates,
        "data_seeds": seeds_table(seeds, replicates),
        "pairing": "instance" if spec is not None else "seed",
        "instances": {str(s): draw(spec, s) for s in seeds} if spec is not None else None,
        **extra,
        "budget": budget.to_dict(),
        "config": cfg.to_dict(),
        "machine": machine(),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "schedule_tuning": schedule_tuning(cfg, controllers),
        "runs": runs,
        "summary": summary,
        "paired": paired,
        "table": markdown_table(summary, paired),
    }


def write(out: Path, doc: dict[str, Any], unit: str, total: int) -> None:
    """``out/bench.json`` and, once a run finished, bench.png, bench-paired.png and bench-actions.png."""
    atomic_write_json(out / "bench.json", doc)
    if not doc["summary"]:
        return
    preset, reference = doc["preset"], doc["paired"]["reference"]
    title = f"sttrl controllers, preset {preset}"
    write_bench_plot(
        out / "bench.png",
        doc["summary"],
        f"{title}: validation WER over training {unit} (budget {total} {unit})",
        unit=unit,
    )
    write_paired_plot(
        out / "bench-paired.png",
        doc["paired"],
        f"{title}: hidden WER paired by {doc['pairing']} against {reference}",
    )
    write_action_raster(
        out / "bench-actions.png",
        doc["runs"],
        f"{title}: action per block (rows: controller · {doc['pairing']})",
    )
