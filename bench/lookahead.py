"""The ``lookahead`` controller in the benchmark (kind ``trials``: it forks and probes inside its own episode,
see :mod:`sttrl.control.lookahead`). Its run directory is ``runs/bench-lookahead-s<seed>``; a finished run is read
back from ``result.json``, an unfinished one starts again (probes are not resumable mid-way).

Budget: the episode's samples (``env.max_actions`` blocks at the starting hyperparameters), probes included;
``train_steps`` counts every optimizer step attempted, probes included, so it compares with an episode's. With
``bench.lookahead_file`` (``python -m bench.tune_lookahead``) the tuned ``lookahead.*`` settings run."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from typing import Any

from bench.common import FAULTS, run_config
from bench.progress import BenchProgress
from bench.results import result_line
from bench.trials import BenchContext
from sttrl.config import Config
from sttrl.control import registry as registry
from sttrl.control.lookahead import LOG, configure, run_lookahead
from sttrl.control.spec import ControllerSpec, register
from sttrl.io import atomic_write_json
from sttrl.train.memory import release_memory


class LookaheadController:
    """Runs one lookahead episode per seed and judges it."""

    name = "lookahead"

    def run(self, ctx: BenchContext, seed: int, progress: BenchProgress) -> dict[str, Any]:
        from sttrl.judge.scoring import judge  # torch: the benchmark's CLI and dry run stay torch-free

        name = ctx.run_name(self.name, seed)
        run_dir = ctx.out / "runs" / name
        result_path = run_dir / "result.json"
        if result_path.is_file():
            progress.start_run(name, ctx.budget.train_steps, ctx.budget.steps_per_action, "finished earlier: skipped")
            res = json.loads(result_path.read_text())
            progress.end_run(result_line(res))
            return {**res, "resumed": "skipped (finished earlier)"}
        shutil.rmtree(run_dir, ignore_errors=True)
        progress.start_run(name, ctx.budget.train_steps, ctx.budget.steps_per_action, "new episode")
        t0 = time.perf_counter()
        try:
            cfg = run_config(ctx.cfg, seed, ctx.out, self.name)  # the tuned settings (bench.lookahead_file) too
            out = run_lookahead(cfg, run_dir, on_line=lambda s: progress.line(f"  {name} {s}"))
            report = judge(run_dir, progress=False)
        finally:
            release_memory(collect=True)
        rows = [json.loads(line) for line in (run_dir / LOG).read_text().splitlines()]
        res = lookahead_result(seed, name, out, rows, report, time.perf_counter() - t0)
        res["settings"] = cfg.lookahead.model_dump(mode="json")
        res["tuned_file"] = str(cfg.bench.lookahead_file) if cfg.bench.lookahead_file else None
        atomic_write_json(result_path, res)
        progress.end_run(result_line(res) + f", {res['probe_samples']} of {res['samples_spent']} samples on probes")
        return {**res, "resumed": "new episode"}


def lookahead_result(
    seed: int, name: str, out: dict[str, Any], rows: list[dict[str, Any]], report: dict[str, Any], wall_s: float
) -> dict[str, Any]:
    """The run's numbers in the benchmark's result fields, plus the probes' share of the budget."""
    start_wer = float(out["start"]["wer"])
    x, y, steps = [0], [start_wer], 0
    faults: Counter[str] = Counter()
    for rec, row in zip(out["records"], rows, strict=True):  # one log row per decision, probed or not
        losers = [p for p in row["probes"] if not (p["action"] == row["chosen"] and p["status"] == "ok")]
        steps += rec["train"]["steps_attempted"] + sum(p["steps"] for p in losers)  # the block counts its winner's
        x.append(steps)
        y.append(float(rec["eval"]["wer"]))
        if rec["status"] in FAULTS:
            faults[rec["status"]] += 1
    spent = out["spent"]
    return {
        "controller": "lookahead",
        "seed": seed,
        "thread_id": name,
        "run_dir": out["run_dir"],
        "status": "finished",
        "hidden_wer": report.get("wer"),
        "hidden_cer": report.get("cer"),
        "score": report.get("score"),
        "judge_passed_all_checks": report.get("passed_all_checks"),
        "start_val_wer": start_wer,
        "best_val_wer": min(y[1:]) if len(y) > 1 else y[0],
        "final_val_wer": y[-1],
        "train_steps": steps,
        "train_steps_kept": int(out["final"].get("global_step", 0)),
        "evaluations": len(out["records"]) + 1,
        "decisions": len(out["records"]),
        "end_reason": "budget",
        "actions": [r["action"] for r in out["records"]],
        "sources": dict(Counter(r["source"] for r in out["records"])),
        "faults": {k: faults.get(k, 0) for k in FAULTS},
        "final_sha256": out["final"].get("sha256"),
        "samples_spent": spent["total"],
        "sample_budget": spent["budget"],
        "probe_samples": spent["probes"],
        "probes_per_decision": [len(r["probes"]) for r in rows],
        "wall_s": wall_s,
        "curve": {"x": x, "y": y, "kind": "validation WER after each block over optimizer steps, probes included"},
    }


def _lookahead(cfg: Config, **_: Any) -> LookaheadController:
    return LookaheadController()


register(
    ControllerSpec(
        "lookahead",
        "trials",
        _lookahead,
        "probe every candidate action from the block checkpoint, continue from the "
        "best probe (lookahead.*); probe samples count against the budget",
        color="#e377c2",
        configure=configure,
    )
)
