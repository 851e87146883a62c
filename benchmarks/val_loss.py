"""The teacher-forced validation loss as a decision signal: its cost against a WER evaluation, and how well it ranks
decisions by hidden-dev WER compared with validation WER and the training loss (issue 25, item 4).

On the first ``--instances`` *train* instances of the preset, every decision of a small grid (the instance's
starting lr times each of ``--lr-factors``, clamped to the preset's bounds) trains ``--samples`` samples as one
block (a static run: bench's ``one_block``, the same data order for every decision), through ``SttEnv`` and the
episode's phases. For each run:

- **val loss** and **val WER** of the final model on the same validation utterances (``train.max_eval_utterances``,
  the block's evaluation file), and the **train loss** (mean over the block's last half: lookahead's ``train_loss``);
- **hidden dev WER**: the judge on the hidden *dev* split (``judge-dev.json``; the test split is not touched).

Per instance, Kendall's tau-b and Spearman's rho between each signal and hidden-dev WER over the grid; the mean
over instances. Cost: every run's evaluation files give the decoding and the loss time on the same utterances;
then both run ``--reps`` times, interleaved, on the first run's final model (wall and process CPU time).
Finished runs are read back (resumable); their directories stay under ``--work``.

    python benchmarks/val_loss.py --preset bench-cpu --instances 4 --lr-factors 0.25,0.5,1,2,4 \\
        --work runs/val_loss --out benchmarks/results/val_loss-bench-cpu.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from dev_errors import QUICK_OVERRIDES
from headroom import episode
from horizon import budget_overrides, episode_budget

from sttrl.config import Config, load_config
from sttrl.env.instances import apply
from sttrl.io import read_jsonl
from sttrl.rundir import TRAJECTORY

NAME = "val_loss"
SIGNALS = ("val_loss", "val_wer", "train_loss")
TARGETS = ("dev_wer", "dev_cer")


def parse_args(argv: list[str] | None = None) -> Any:
    p = common.base_parser(NAME, __doc__)
    common.add_preset_args(p, default="bench-cpu")
    p.add_argument("--instances", type=int, default=4, help="train instances (the first N of the preset's)")
    p.add_argument("--lr-factors", default="0.25,0.5,1,2,4", help="decisions: the starting lr times each factor")
    p.add_argument("--samples", type=int, default=None, help="training samples per decision (default: the budget)")
    p.add_argument("--reps", type=int, default=3, help="interleaved timing rounds after one warm-up (default 3)")
    p.add_argument("--work", type=Path, default=Path("runs/val_loss"), help="run directories (resumable)")
    if p.parse_known_args(argv)[0].quick:  # debug-sized defaults; options given on the command line still win
        p.set_defaults(preset="debug", instances=2, lr_factors="0.3,3", samples=12, reps=1)
    args = p.parse_args(argv)
    args.preset = args.preset or "bench-cpu"
    if args.quick:
        args.overrides = [*QUICK_OVERRIDES, *args.overrides]
    return args


def rank(signal: list[float], target: list[float]) -> dict[str, float | None]:
    """Kendall's tau-b and Spearman's rho of ``signal`` against ``target`` (None where undefined: a constant)."""
    from scipy.stats import kendalltau, spearmanr

    if len(set(signal)) < 2 or len(set(target)) < 2:
        return {"kendall_tau": None, "spearman_rho": None}
    tau, rho = kendalltau(signal, target).statistic, spearmanr(signal, target).statistic
    return {k: (float(v) if v == v else None) for k, v in (("kendall_tau", tau), ("spearman_rho", rho))}


def one_run(cfg: Config, instance: int, lr: float, run_dir: Path) -> dict[str, Any]:
    """The static run of one decision (read back when finished) and its signals."""
    report = episode(cfg, instance, {"lr": lr}, "static", run_dir, one_block=True)
    evals = [json.loads((run_dir / "evals" / f"block-{b:04d}.json").read_text()) for b in (0, 1)]
    losses = read_jsonl(run_dir / TRAJECTORY)[0]["train"]["losses"]
    tail = losses[len(losses) // 2 :]
    return {
        "instance": instance,
        "lr": lr,
        "dev_wer": report["wer"],
        "dev_cer": report["cer"],
        "val_wer": evals[1]["wer"],
        "val_loss": evals[1]["val_loss"],
        "train_loss": statistics.fmean(tail) if tail else None,
        "decode_s": [e["seconds"] for e in evals],
        "loss_s": [e["loss_seconds"] for e in evals],
        "utterances": evals[1]["n"],
    }


def timing(cfg: Config, run_dir: Path, reps: int) -> dict[str, Any]:
    """WER evaluation and validation loss of one final model, interleaved: wall and process CPU seconds."""
    from sttrl.env.runtime import EpisodeRuntime  # torch: loaded once the runs are done
    from sttrl.eval.engines import evaluate_with

    rt = EpisodeRuntime(cfg, run_dir, progress=False)  # resumes the finished run: its own config wins

    def measure(fn: Any) -> dict[str, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        return {"seconds": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}

    rounds = common.interleaved(
        {
            "wer": lambda: measure(lambda: evaluate_with(rt.cfg, rt.val_store, rt.device)),
            "loss": lambda: measure(rt.validation_loss),
        },
        reps,
        warmup=1,
    )
    return {
        "utterances": len(rt.val_store),
        "rounds": rounds,
        "median": {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "cpu_s")} for k, v in rounds.items()},
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per instance and on average: each signal's rank agreement with hidden-dev WER (and CER) over the decisions;
    ``n`` counts the instances where it is defined (neither side constant)."""
    per: dict[int, dict[str, Any]] = {}
    for i in sorted({r["instance"] for r in rows}):
        mine = [r for r in rows if r["instance"] == i]
        per[i] = {t: {s: rank([r[s] for r in mine], [r[t] for r in mine]) for s in SIGNALS} for t in TARGETS}
    mean: dict[str, Any] = {}
    for t in TARGETS:
        mean[t] = {}
        for s in SIGNALS:
            mean[t][s] = {}
            for stat in ("kendall_tau", "spearman_rho"):
                vals = [p[t][s][stat] for p in per.values() if p[t][s][stat] is not None]
                mean[t][s][stat] = statistics.fmean(vals) if vals else None
            mean[t][s]["n"] = len([p for p in per.values() if p[t][s]["kendall_tau"] is not None])
    ratio = [r["decode_s"][k] / r["loss_s"][k] for r in rows for k in (0, 1) if r["loss_s"][k] > 0 and r["decode_s"][k]]
    return {"per_instance": per, "mean": mean, "decode_over_loss_median": statistics.median(ratio) if ratio else None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides) + ([f"run.device={args.device}"] if args.device else [])
    cfg = load_config(args.preset, overrides=overrides)
    spec = cfg.env.instances
    if spec is None:
        print(f"error: preset {args.preset} has no env.instances; decisions are ranked on train instances")
        return 2
    budget = args.samples or episode_budget(cfg)
    cfg = load_config(args.preset, overrides=[*overrides, *budget_overrides(budget, cfg.env.max_actions)])
    factors = [float(x) for x in args.lr_factors.split(",") if x]
    rows = []
    t0 = time.perf_counter()
    for i in spec.train_seeds[: args.instances]:
        start = apply(cfg, i).train.lr
        for f in factors:
            lr = min(max(start * f, cfg.train.lr_min), cfg.train.lr_max)
            row = one_run(cfg, i, lr, (args.work / f"i{i}-x{f:g}").resolve())
            rows.append(row)
            print(
                f"instance {i} lr {lr:.3g}: dev WER {row['dev_wer']:.3f}, val WER {row['val_wer']:.3f}, "
                f"val loss {row['val_loss']:.4f}, train loss {row['train_loss']:.4f} "
                f"({time.perf_counter() - t0:.0f} s so far)",
                flush=True,
            )
    summary = summarize(rows)
    summary["timing"] = timing(cfg, (args.work / f"i{spec.train_seeds[0]}-x{factors[0]:g}").resolve(), args.reps)
    med = summary["timing"]["median"]
    m = summary["mean"]
    cell = lambda v: "-" if v is None else v
    table = [[s, *(cell(m[t][s][k]) for t in TARGETS for k in ("kendall_tau", "spearman_rho", "n"))] for s in SIGNALS]
    heads = [f"{k} vs {t.replace('_', ' ')}" for t in TARGETS for k in ("tau", "rho", "instances")]
    md = common.markdown_table(["signal", *heads], table)
    md += "\n\n" + common.markdown_table(
        ["evaluation", "utterances", "wall s (median)", "CPU s (median)"],
        [[k, summary["timing"]["utterances"], med[k]["seconds"], med[k]["cpu_s"]] for k in ("wer", "loss")],
    )
    md += (
        f"\n\nWER decoding / loss, wall time per evaluation on the same utterances (median over the runs' evaluation "
        f"files): {summary['decode_over_loss_median']}; preset {args.preset}, {len(rows)} static runs of {budget} "
        f"samples on train instances {spec.train_seeds[: args.instances]}, lr factors {factors}."
    )
    payload = {"preset": args.preset, "samples": budget, "lr_factors": factors, "rows": rows, "summary": summary}
    common.report(NAME, args, payload, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
