"""Controllers that run their own trials (kind ``trials`` in ``sttrl.control.registry``): the interface the
benchmark calls, and the context it hands them.

A trials controller gets the same training budget (steps or samples) as an episode (see :mod:`bench.budget`),
keeps its own files under ``ctx.out/runs/<run name>``, resumes from them when run again, and returns one
result dict with the fields of an episode's result (``hidden_wer``, ``curve``, ``train_steps``, …).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from bench.budget import Budget, encoder_layers, search_space
from bench.common import FAULTS, WallClock, run_config
from bench.progress import BenchProgress
from bench.replicates import data_seed, thread_id
from bench.results import result_line
from sttrl.config import Config
from sttrl.errors import SttrlError
from sttrl.rundir import JUDGE_REPORT, RUN_RECORD


@dataclass
class BenchContext:
    """What a trials controller may use: the benchmark's config, directory and budget, the search space, and the
    replicate it runs (:mod:`bench.replicates`: its run name and data-order seed)."""

    cfg: Config
    out: Path
    budget: Budget
    replicate: int = 0
    _space: dict[str, Any] | None = field(default=None, repr=False)
    _max_freeze: int | None = field(default=None, repr=False)

    def max_freeze(self) -> int:
        if self._max_freeze is None:
            self._max_freeze = encoder_layers(self.cfg)
        return self._max_freeze

    def space(self) -> dict[str, Any]:
        """The static search space (computed once), with ``bench.tpe_lr_max`` applied; in samples, batch sizes
        above a trial's samples are left out."""
        if self._space is None:
            space = search_space(self.cfg, self.max_freeze(), self.cfg.bench.tpe_lr_max)
            self._space = fit_batches(space, self.budget, self.budget.units_per_trial)
        return self._space

    def seed_config(self, seed: int) -> Config:
        """The run's config: ``run.seed`` the replicate's data-order seed (``seed`` itself for replicate 0) and, with
        ``env.instances``, the instance of ``seed`` drawn in."""
        return run_config(self.cfg, seed, self.out, replicate=self.replicate)

    def run_name(self, controller: str, seed: int) -> str:
        """The run's name and folder under ``runs/``: ``bench-<controller>-s<seed>[-r<replicate>]``."""
        return thread_id(controller, seed, self.replicate)

    def search_seed(self, seed: int) -> int:
        """The seed of a search's own draws (trial settings, samplers): the replicate's data-order seed."""
        return data_seed(seed, self.replicate)

    def for_replicate(self, replicate: int) -> BenchContext:
        """The same context for another replicate (the search space computed once is kept)."""
        return replace(self, replicate=replicate)


class TrialsController(Protocol):
    """Runs (or resumes, or reads back) its trials for one seed and returns the run's result dict."""

    name: str

    def run(self, ctx: BenchContext, seed: int, progress: BenchProgress) -> dict[str, Any]: ...


def judge_trial(tdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Judge a trial's saved final model on the hidden test split (read back when judged before); returns the
    report and the run record's ``final``."""
    from sttrl.judge.scoring import judge  # torch: the benchmark's CLI and dry run stay torch-free

    record = json.loads((tdir / RUN_RECORD).read_text())
    if not record.get("final") or not (tdir / "final" / "model.safetensors").is_file():
        raise SttrlError(f"the best trial {tdir} has no saved final model")
    path = tdir / JUDGE_REPORT
    report = json.loads(path.read_text()) if path.is_file() else judge(tdir, progress=False)
    return report, record["final"]


def fit_batches(space: dict[str, Any], budget: Budget, units: int) -> dict[str, Any]:
    """``space`` without the batch sizes that cannot train within ``units`` samples (one batch at least;
    the smallest size stays); unchanged when the budget counts steps."""
    if budget.unit != "samples":
        return space
    fits = [b for b in space["batch_size"] if b * space["grad_accum"] <= units]
    return {**space, "batch_size": fits or space["batch_size"][:1]}


def finished_earlier(ctx: BenchContext, name: str, progress: BenchProgress) -> dict[str, Any] | None:
    """The result of run ``name`` read back from ``runs/<name>/result.json`` (wall time from its clock), or
    None when it has not finished."""
    path = ctx.out / "runs" / name / "result.json"
    if not path.is_file():
        return None
    progress.start_run(name, ctx.budget.train_steps, ctx.budget.steps_per_action, "finished earlier: skipped")
    res = {**json.loads(path.read_text()), "wall_s": WallClock(ctx.out / "wall" / f"{name}.json").seconds}
    progress.end_run(result_line(res))
    return {**res, "resumed": "skipped (finished earlier)"}


def search_result(
    controller: str,
    seed: int,
    name: str,
    run_dir: Path,
    rows: list[dict[str, Any]],
    best: dict[str, Any],
    judged_dir: Path,
    report: dict[str, Any],
    final: dict[str, Any],
    unit: str,
    kind: str,
    wall_s: float,
) -> dict[str, Any]:
    """The benchmark fields of a search's result from its per-evaluation ``rows`` (each with ``spent``,
    ``val_wer``, ``status``, ``steps_attempted``, ``samples``, in order) and the judged ``best`` row: the
    best-so-far curve over the budget spent, faults, steps, samples and evaluations."""
    x, y, spent, best_so_far = [], [], 0, math.inf
    for r in rows:
        spent += r["spent"]
        best_so_far = min(best_so_far, r["val_wer"])
        x.append(spent)
        y.append(best_so_far)
    faults = Counter(r["status"] for r in rows if r["status"] in FAULTS)
    return {
        "controller": controller,
        "seed": seed,
        "thread_id": name,
        "run_dir": str(run_dir),
        "judged_run_dir": str(judged_dir),
        "status": "finished",
        "hidden_wer": report.get("wer"),
        "hidden_cer": report.get("cer"),
        "score": report.get("score"),
        "judge_passed_all_checks": report.get("passed_all_checks"),
        "start_val_wer": None,
        "best_val_wer": min(r["val_wer"] for r in rows),
        "final_val_wer": best["val_wer"],
        "train_steps": sum(r["steps_attempted"] for r in rows),
        "train_samples": sum(r["samples"] for r in rows),
        "train_steps_kept": best["global_step"],
        "evaluations": len(rows),
        "decisions": len(rows),
        "end_reason": "budget",
        "faults": {k: faults.get(k, 0) for k in FAULTS},
        "final_sha256": final.get("sha256"),
        "wall_s": wall_s,
        "curve": {"x": x, "y": y, "unit": unit, "kind": kind},
    }
