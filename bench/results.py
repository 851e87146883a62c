"""A run's numbers (from its thread state and run directory) and the per-controller summary and table."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import stats
from bench.common import FAULTS, mean_std
from sttrl.outward.trajectory import Trajectory
from sttrl.rundir import TRAJECTORY


def episode_result(
    controller: str, seed: int, values: dict[str, Any], wall_s: float, unit: str = "steps"
) -> dict[str, Any]:
    """The numbers of a finished episode, from its thread state and its run directory's trajectory; the
    validation curve's x counts the budget's ``unit`` (steps or samples)."""
    run_dir = Path(values["run_dir"])
    records = Trajectory(run_dir / TRAJECTORY).records()
    start = values["start"]
    spent, steps, samples, evals = 0, 0, 0, 1
    x, y = [0], [float(start["wer"])]
    faults: Counter[str] = Counter()
    for r in records:
        if r.get("train"):
            steps += int(r["train"]["steps_attempted"])
            samples += int(r["train"]["samples"])
            spent = samples if unit == "samples" else steps
        if r.get("eval"):
            evals += 1
            x.append(spent)
            y.append(float(r["eval"]["wer"]))
        if r["status"] in FAULTS:
            faults[r["status"]] += 1
    judged = values.get("judge") or {}
    out = {
        "controller": controller,
        "seed": seed,
        "thread_id": values["thread_id"],
        "run_dir": str(run_dir),
        "status": "finished",
        "hidden_wer": judged.get("wer"),
        "hidden_cer": judged.get("cer"),
        "score": judged.get("score"),
        "judge_passed_all_checks": judged.get("passed_all_checks"),
        "start_val_wer": float(start["wer"]),
        "best_val_wer": min(y[1:]) if len(y) > 1 else y[0],
        "final_val_wer": y[-1],
        "train_steps": steps,
        "train_samples": samples,
        "train_steps_kept": int((values.get("final") or {}).get("global_step", 0)),
        "evaluations": evals,
        "decisions": len(records),
        "end_reason": values.get("end_reason"),
        "actions": [r["action"] for r in records],
        "sources": dict(Counter(r["source"] for r in records)),
        "faults": {k: faults.get(k, 0) for k in FAULTS},
        "final_sha256": (values.get("final") or {}).get("sha256"),
        "wall_s": wall_s,
        "curve": {
            "x": x,
            "y": y,
            "unit": unit,
            "kind": "validation WER of the current model: start, then after each block",
        },
    }
    instance = ((values.get("config") or {}).get("env") or {}).get("instance")
    if instance is not None:
        out["instance"] = instance
    return out


def curve_band(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and min-max of the runs' curves on the union of their x values; each run holds its last value
    after its end, and contributes nothing before its first point."""
    grid = sorted({x for r in runs for x in r["curve"]["x"]})
    mean, lo, hi, n = [], [], [], []
    for gx in grid:
        vals = []
        for r in runs:
            xs, ys = r["curve"]["x"], r["curve"]["y"]
            idx = [i for i, x in enumerate(xs) if x <= gx]
            if idx:
                vals.append(ys[idx[-1]])
        mean.append(statistics.fmean(vals))
        lo.append(min(vals))
        hi.append(max(vals))
        n.append(len(vals))
    return {"x": grid, "mean": mean, "min": lo, "max": hi, "n": n}


def summarize(runs: list[dict[str, Any]], controllers: Sequence[str], end: int | None = None) -> dict[str, Any]:
    """Per controller: mean ± std over its finished runs, median and interquartile mean of hidden WER over instances
    (an instance's outcome is the mean of its replicates), the mean area under the validation curve up to ``end``
    steps, fault totals, and the curve band."""
    out: dict[str, Any] = {}
    for c in controllers:
        done = [r for r in runs if r["controller"] == c and r.get("status") == "finished"]
        if not done:
            continue
        aucs = [stats.curve_auc(r["curve"]["x"], r["curve"]["y"], end) for r in done]
        out[c] = {
            "runs": len(done),
            "seeds": [r["seed"] for r in done],
            **{
                k: mean_std([r.get(k) for r in done])
                for k in (
                    "hidden_wer",
                    "hidden_cer",
                    "best_val_wer",
                    "final_val_wer",
                    "train_steps",
                    "train_samples",
                    "evaluations",
                    "wall_s",
                )
            },
            "instances": len({pairing_key(r) for r in done}),
            "hidden_wer_robust": stats.describe(list(stats.instance_means(outcomes(done)).values())),
            "val_auc_log_wer": mean_std([a for a in aucs if a is not None]),
            "faults": {k: sum(r["faults"][k] for r in done) for k in FAULTS},
            "unscored": sum(1 for r in done if r.get("hidden_wer") is None),
            "curve": curve_band(done),
        }
    return out


def pairing_key(run: dict[str, Any]) -> int:
    """What a run is paired on: its instance's seed (``env.instances``), else its run seed."""
    inst = run.get("instance")
    return int(inst["seed"]) if isinstance(inst, dict) else int(run["seed"])


def outcomes(runs: list[dict[str, Any]]) -> dict[tuple[int, int], float]:
    """Hidden WER by (instance, replicate) of runs that have one."""
    return {
        (pairing_key(r), int(r.get("replicate", 0))): float(r["hidden_wer"])
        for r in runs
        if r.get("hidden_wer") is not None
    }


def paired_stats(
    runs: list[dict[str, Any]], summary: dict[str, Any], reference: str, seed: int = 0, oracle: str | None = None
) -> dict[str, Any]:
    """Paired statistics of hidden WER against ``reference`` over instances (test instances with
    ``env.instances``, else seeds; pairs per (instance, replicate), see :func:`bench.stats.paired`), regret against
    ``oracle`` when given, the claims they allow in words; also stored per controller in ``summary[c]["paired"]``."""
    by: dict[str, dict[tuple[int, int], float]] = {}
    for r in runs:
        if r.get("status") == "finished" and (r["controller"] in summary or r["controller"] == oracle):
            by.setdefault(r["controller"], {}).update(outcomes([r]))
    if reference not in by:
        return {"reference": reference, "controllers": {}, "claims": [f"no finished {reference} runs to pair against"]}
    per = stats.paired(by, reference, seed=seed, oracle=oracle if oracle in by else None)
    per.pop(oracle, None)  # the oracle gives regret; it is not a contestant
    for c, s in per.items():
        summary[c]["paired"] = s
    n = min((s.get("n_pairs", 0) for c, s in per.items() if c != reference), default=len({k[0] for k in by[reference]}))
    kind = "test instances" if any(isinstance(r.get("instance"), dict) for r in runs) else "seeds"
    return {
        "reference": reference,
        "instances": kind,
        "oracle": oracle if oracle in by else None,
        "controllers": per,
        "claims": stats.claims(per, reference, n),
    }


def _pm(s: dict[str, Any], spec: str = ".3f") -> str:
    if not s or s.get("mean") is None:
        return "-"
    return f"{s['mean']:{spec}} ± {s['std']:{spec}}"


def _count(s: dict[str, Any]) -> str:
    if not s or s.get("mean") is None:
        return "-"
    if s["min"] == s["max"]:
        return f"{s['mean']:.0f}"
    return f"{s['mean']:.1f} ({s['min']:.0f}-{s['max']:.0f})"


def _num(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def markdown_table(summary: dict[str, Any], paired: dict[str, Any] | None = None) -> str:
    """The results table; with ``paired`` a second table of paired differences and the claims in words."""
    head = (
        "controller",
        "runs",
        "hidden WER",
        "hidden CER",
        "best val WER",
        "train steps",
        "train samples",
        "val evals",
        "wall s",
        "OOM/NaN/div",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for c, s in summary.items():
        f = s["faults"]
        lines.append(
            "| "
            + " | ".join(
                [
                    c,
                    str(s["runs"]),
                    _pm(s["hidden_wer"]),
                    _pm(s["hidden_cer"]),
                    _pm(s["best_val_wer"]),
                    _count(s["train_steps"]),
                    _count(s.get("train_samples", {})),
                    _count(s["evaluations"]),
                    _pm(s["wall_s"], ".1f"),
                    f"{f['oom']}/{f['nan']}/{f['diverged']}",
                ]
            )
            + " |"
        )
    if not paired or not paired.get("controllers"):
        return "\n".join(lines)
    ref = paired["reference"]
    head2 = (
        "controller",
        "median",
        "IQM",
        f"Δ vs {ref}",
        "95 % CI",
        "p (Wilcoxon)",
        "p (Holm)",
        "P(improve)",
        "MDE",
        "regret",
        "val AUC",
    )
    lines += ["", "| " + " | ".join(head2) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head2) - 1)) + "|"]
    for c, s in paired["controllers"].items():
        ci = s.get("ci95")
        auc = summary[c]["val_auc_log_wer"]["mean"]
        lines.append(
            "| "
            + " | ".join(
                [
                    c,
                    _num(s["median"]),
                    _num(s["iqm"]),
                    _num(s.get("diff_mean"), "+.3f"),
                    "-" if not ci else f"{ci[0]:+.3f} to {ci[1]:+.3f}",
                    _num(s.get("p_wilcoxon"), ".3g"),
                    _num(s.get("p_holm"), ".3g"),
                    _num(s.get("prob_improvement"), ".2f"),
                    _num(s.get("min_detectable")),
                    _num(s.get("regret")),
                    _num(auc, ".3f"),
                ]
            )
            + " |"
        )
    lines += fixed_set_table(paired)
    lines += [""] + [f"- {t}" for t in paired["claims"]]
    return "\n".join(lines)


def fixed_set_table(paired: dict[str, Any]) -> list[str]:
    """With replicates, the lines of the fixed-set reading's table (these instances only, training chaos the only
    noise: ``bench.stats.fixed_set``); no lines without replicates."""
    fixed = {c: s["fixed_set"] for c, s in paired["controllers"].items() if s.get("fixed_set")}
    if not fixed:
        return []
    head = ("controller", "instances", "df", "chaos SD", f"Δ vs {paired['reference']}", "95 % CI", "p (Holm)", "MDE")
    lines = ["", "On these instances only (training chaos the only noise; from the replicates):", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for c, f in fixed.items():
        cells = [c, str(f["n_instances"]), str(f["df"]), _num(f["within_sd"]), _num(f["diff_mean"], "+.3f"),
                 f"{f['ci95'][0]:+.3f} to {f['ci95'][1]:+.3f}", _num(f.get("p_holm"), ".3g"),
                 _num(f["min_detectable"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def result_line(res: dict[str, Any]) -> str:
    """One line of a finished run's numbers."""
    f = res["faults"]
    hw = "-" if res["hidden_wer"] is None else f"{res['hidden_wer']:.3f}"
    hc = "-" if res["hidden_cer"] is None else f"{res['hidden_cer']:.3f}"
    return (
        f"hidden WER {hw} CER {hc}, best validation WER {res['best_val_wer']:.3f}, "
        f"{res['train_steps']} steps, {res['evaluations']} evaluations, {res['wall_s']:.1f} s, "
        f"faults {f['oom']}/{f['nan']}/{f['diverged']}"
    )
