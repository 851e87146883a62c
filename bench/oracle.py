"""``oracle``: the best static setting in hindsight per instance, from a small grid. Regret only, never a
contestant: the benchmark leaves it out of the summary and the paired tests and reports every controller's
mean hidden WER minus the oracle's on the same instances (``regret``).

Grid: ``bench.oracle_lrs`` (default: the instance's start lr x 1/3, 1, 3) x ``bench.oracle_batch_sizes``
(default: the instance's start batch), frozen layers as the instance starts. Each point trains the episode's
whole budget (steps or samples) as one block from the starting weights and is judged on the hidden **test**
split; the lowest test WER is the oracle's, which is why it is hindsight and not a controller. Resumable:
each point's ``point.json`` is read back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.common import FAULTS
from bench.progress import BenchProgress
from bench.results import result_line
from bench.trials import BenchContext
from sttrl.config import Config, config_from_dict
from sttrl.control import registry as registry
from sttrl.control.spec import ControllerSpec, register
from sttrl.io import atomic_write_json
from sttrl.rundir import RUN_RECORD


def oracle_grid(cfg: Config) -> list[dict[str, Any]]:
    """The static settings tried on an instance whose config is ``cfg`` (the instance drawn in)."""
    t, b = cfg.train, cfg.bench
    lrs = b.oracle_lrs or [t.lr / 3, t.lr, t.lr * 3]
    batches = b.oracle_batch_sizes or [t.batch_size]
    return [{"lr": min(max(lr, t.lr_min), t.lr_max), "batch_size": bs} for lr in lrs for bs in batches]


def _setting(point: dict[str, Any]):
    def configure(c: Config) -> Config:
        data = c.to_dict()
        data["train"].update(point)
        return config_from_dict(data)

    return configure


class OracleController:
    """Runs the grid on one instance and keeps the lowest hidden test WER; see the module docstring."""

    name = "oracle"

    def run(self, ctx: BenchContext, seed: int, progress: BenchProgress) -> dict[str, Any]:
        name = ctx.run_name(self.name, seed)
        run_dir = ctx.out / "runs" / name
        grid = oracle_grid(ctx.seed_config(seed))
        b = ctx.budget
        progress.start_run(name, b.train_steps, b.train_steps, f"{len(grid)} static settings, hindsight on test")
        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = []
        cache: dict[str, Any] = {}
        from bench.tune_schedule import run_point  # not at import: `python -m bench.tune_schedule` runs clean

        for i, point in enumerate(grid):
            row = run_point(
                ctx.cfg,
                seed,
                _setting(point),
                run_dir / f"point-{i:02d}",
                cache,
                "test",
                ctx.search_seed(seed),
                keep_final=True,
            )
            rows.append(row)
            progress.line(f"  {name} lr {point['lr']:.3g} batch {point['batch_size']}: test WER {row['test_wer']:.3f}")
        cache.clear()
        scored = [r for r in rows if r["test_wer"] is not None]
        best = min(scored, key=lambda r: r["test_wer"]) if scored else rows[0]
        judged = json.loads((Path(best["run_dir"]) / RUN_RECORD).read_text())["final"]
        res = {
            "controller": "oracle",
            "seed": seed,
            "thread_id": name,
            "run_dir": str(run_dir),
            "judged_run_dir": best["run_dir"],
            "status": "finished",
            "hidden_wer": best["test_wer"],
            "hidden_cer": None,
            "score": None,
            "judge_passed_all_checks": best["scored"],
            "start_val_wer": None,
            "best_val_wer": float("nan"),
            "final_val_wer": None,
            "train_steps": best["steps"],
            "train_samples": best["samples"],
            "evaluations": 0,
            "decisions": 0,
            "end_reason": "budget",
            "grid": rows,
            "best_setting": best["hp"],
            "faults": {k: 0 for k in FAULTS},
            "final_sha256": judged.get("sha256"),
            "wall_s": time.perf_counter() - t0,
            "curve": {"x": [], "y": [], "unit": b.unit, "kind": "none: hindsight on the test split"},
            "note": "regret reference only (best static setting in hindsight on the hidden test split)",
        }
        atomic_write_json(run_dir / "result.json", res)
        progress.end_run(result_line(res) + f", best {best['hp']}")
        return res


def _oracle(cfg: Config, **_: Any) -> OracleController:
    return OracleController()


register(
    ControllerSpec(
        "oracle",
        "trials",
        _oracle,
        "best static setting per instance in hindsight (grid, judged on test): regret only, not a contestant",
        color="#000000",
    )
)
