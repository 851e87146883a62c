"""The noise budget of the controller benchmark (issue 25, item 2): how much of a paired difference between two
controllers is the judge's sampling noise, training chaos, and real variation across instances, and which regime
(horizon, validation size, replicates) buys the smallest minimum detectable effect for its cost.

Train instances only, scored on the hidden *dev* split (the test split is not touched). For every regime (each
``--horizons`` budget in samples, spread over the preset's ``env.max_actions`` decisions, times each
``--val-sizes`` validation size), every one of the first ``--instances`` train instances and both controllers of
``--pair``, one episode per data-order seed of ``--seeds`` (``run.seed``): the first seed's episode decides, every
later seed *replays its decisions* (so the difference between seeds is training chaos, not other choices). Each
finished episode's final model is scored per utterance on hidden dev (``dev_errors.py``), its checkpoints are
removed, and one row goes to ``WORK/rows.jsonl`` (resumable: finished runs are skipped). Costs are the process CPU
time of each episode plus its judge (the dev scoring scaled to the test split's size), robust to other load.

The decomposition and the MDE are in ``noise_stats.py``; ``docs/noise.md`` explains how to read them. GPU minutes
come from the measured H200 throughput of bench-cpu episodes (``benchmarks/results/gpu-h200-bench-cpu.md``: 372 per
hour, 8 at once), scaled by each regime's CPU time against bench-cpu's own regime (512 samples, 64 utterances).

    python benchmarks/noise.py --preset bench-cpu --pair rule,schedule --instances 8 --seeds 0,1 \\
        --horizons 512,1024,2048 --val-sizes 64,128 --workers 1 --work runs/noise \\
        --out benchmarks/results/noise-bench-cpu.json
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import noise_stats
from dev_errors import QUICK_OVERRIDES, hidden_sizes, score_run
from horizon import budget_overrides

from sttrl.config import config_from_dict, load_config
from sttrl.env.actions import Action
from sttrl.env.decision import Decided
from sttrl.io import read_jsonl

NAME = "noise"
GPU_EPISODES_PER_HOUR = 372.0  # bench-cpu on one H200, 8 at once (benchmarks/results/gpu-h200-bench-cpu.md)
GPU_REFERENCE = (512, 64)  # the regime that figure measured: bench-cpu's horizon and validation size
ROW = "noise-row.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.base_parser(NAME, __doc__, threads=False)
    common.add_preset_args(p, default="bench-cpu")
    p.add_argument("--pair", default="rule,schedule", help="the two controllers A,B (difference A - B)")
    p.add_argument("--instances", type=int, default=8, help="train instances (the first N of the preset's)")
    p.add_argument("--seeds", default="0,1", help="data-order seeds (run.seed); later seeds replay the first's")
    p.add_argument("--horizons", default="512,1024,2048", help="episode budgets in training samples")
    p.add_argument("--val-sizes", default="64,128", help="validation utterances per evaluation")
    p.add_argument("--workers", type=int, default=1, help="runs at once, each in a fresh process; 0: in this one")
    p.add_argument("--work", type=Path, default=Path("runs/noise"), help="run directories and rows.jsonl")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples of the utterances (default 2000)")
    p.add_argument("--contestants", type=int, default=6, help="controllers compared with the reference (Holm m)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--target", type=float, default=0.03, help="the MDE a suite should reach (hidden WER)")
    p.add_argument("--budget-cpu-hours", type=float, default=10.0, help="suite budget for the exact MDE column")
    p.add_argument("--replicates", default="1,2,3", help="replicate counts R to price")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: analyse the rows of the planned grid already in WORK/rows.jsonl (a measurement cut short)",
    )
    if p.parse_known_args(argv)[0].quick:  # debug-sized defaults; options given on the command line still win
        quick = {"preset": "debug", "pair": "rule,static", "instances": 2, "horizons": "12", "val_sizes": "6"}
        p.set_defaults(**quick, workers=0, boot=200)
    args = p.parse_args(argv)
    args.preset = args.preset or "bench-cpu"
    if args.quick:
        args.overrides = [*QUICK_OVERRIDES, *args.overrides]
    return args


@dataclass
class ReplayPolicy:
    """Repeats a recorded episode's actions in order (``stop`` after them): the same decisions under another seed."""

    actions: list[str]
    name: str = "replay"

    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided:
        k = len(history)
        action = self.actions[k] if k < len(self.actions) else Action.STOP.value
        return Decided(Action(action), f"replay of decision {k + 1} of the first seed's episode", self.name)


def run_key(row: dict[str, Any]) -> tuple[int, int, int, str, int]:
    return (row["horizon"], row["val_size"], row["instance"], row["controller"], row["seed"])


def run_one(preset: str, overrides: list[str], spec: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One episode of the spec's regime, instance, controller and seed (a replay when ``spec["replay"]`` holds
    actions), scored per utterance on hidden dev; its checkpoints are removed, its row kept in ``run_dir``."""
    from sttrl.control.registry import episode_config, make_controller  # in the worker: the parent stays light
    from sttrl.env.gym import SttEnv  # torch: loaded in the worker process that runs the episode

    out = Path(run_dir)
    if (out / ROW).is_file():
        return json.loads((out / ROW).read_text())
    shutil.rmtree(out, ignore_errors=True)  # cut short earlier: run it again from the start
    base = load_config(preset, overrides=overrides)
    over = [*budget_overrides(spec["horizon"], base.env.max_actions), f"train.max_eval_utterances={spec['val_size']}"]
    cfg = load_config(preset, overrides=[*overrides, *over, f"run.seed={spec['seed']}"])
    data = episode_config(cfg, spec["controller"], spec["instance"]).to_dict()
    data["env"]["instances"] = None  # drawn (and recorded in env.instance): reset must not draw it again
    cfg = config_from_dict(data)
    cpu0, t0 = time.process_time(), time.perf_counter()
    replay = spec.get("replay")
    policy = ReplayPolicy(list(replay)) if replay else make_controller(spec["controller"], cfg, seed=spec["seed"])
    env = SttEnv(cfg)
    _, info = env.reset(seed=spec["seed"], options={"run_dir": str(out), "instance": spec["instance"]})
    obs, done = info["observation"], False
    while not done:
        _, _, term, trunc, info = env.step(policy.decide(obs, env.trajectory.records()))
        obs, done = info["observation"], term or trunc
    records = env.trajectory.records()
    env.close()
    episode_cpu, episode_s = time.process_time() - cpu0, time.perf_counter() - t0
    scored = score_run(out, "dev")
    sizes = hidden_sizes(out)
    for sub in ("checkpoints", "final"):
        shutil.rmtree(out / sub, ignore_errors=True)
    row = {
        **{k: spec[k] for k in ("horizon", "val_size", "instance", "controller", "seed")},
        "replayed": bool(replay),
        "actions": [r["action"] for r in records],
        "statuses": [r["status"] for r in records],
        "final_val_wer": obs["wer"],
        "dev_wer": scored["wer"],
        "errors": scored["errors"],
        "words": scored["words"],
        "n_dev": sizes["dev"],
        "n_test": sizes["test"],
        "episode_cpu_s": episode_cpu,
        "episode_s": episode_s,
        "dev_cpu_s": scored["cpu_s"],
        # a suite episode pays its judge on the test split: the dev scoring's CPU time scaled by the utterances
        "suite_cpu_s": episode_cpu + scored["cpu_s"] * sizes["test"] / max(sizes["dev"], 1),
    }
    (out / ROW).write_text(json.dumps(row))
    return row


def plan(args: argparse.Namespace, trains: list[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The deciding runs (first seed) and the replays (later seeds), each a spec without the replayed actions."""
    pair = args.pair.split(",")
    seeds = [int(x) for x in args.seeds.split(",") if x]
    horizons = [int(x) for x in args.horizons.split(",") if x]
    sizes = [int(x) for x in args.val_sizes.split(",") if x]
    grid = [(h, v, i, c) for h in horizons for v in sizes for i in trains for c in pair]
    first = [{"horizon": h, "val_size": v, "instance": i, "controller": c, "seed": seeds[0]} for h, v, i, c in grid]
    later = [
        {"horizon": h, "val_size": v, "instance": i, "controller": c, "seed": s}
        for s in seeds[1:]
        for h, v, i, c in grid
    ]
    return first, later


def execute(
    args: argparse.Namespace, specs: list[dict[str, Any]], rows: dict[tuple, dict[str, Any]], log: Path
) -> None:
    """Run the ``specs`` not yet in ``rows``, in fresh processes (``--workers``) or here (0); each row goes to
    ``log``."""
    todo = [s for s in specs if run_key(s) not in rows]
    if not todo:
        return
    t0, done = time.perf_counter(), 0

    def finished(row: dict[str, Any]) -> None:
        nonlocal done
        rows[run_key(row)] = row
        with log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        done += 1
        per = (time.perf_counter() - t0) / done
        left = per * (len(todo) - done) / max(1, args.workers)
        print(
            f"{run_key(row)}: dev WER {row['dev_wer']:.3f}, actions {','.join(row['actions'])}, "
            f"{row['suite_cpu_s']:.0f} CPU s; {done}/{len(todo)} done, about {left / 60:.0f} min left",
            flush=True,
        )

    def dir_of(s: dict[str, Any]) -> str:
        return str((args.work / "runs" / "h{}-v{}-i{}-{}-s{}".format(*run_key(s))).resolve())

    decider = int(args.seeds.split(",")[0])
    waiting = [s for s in todo if s["seed"] != decider and (*run_key(s)[:4], decider) not in rows]
    for s in waiting:  # its first seed's run failed: nothing to replay yet; run again to finish it
        print(f"{run_key(s)}: skipped: the seed-{decider} run it replays has no row yet", flush=True)
    todo = [s for s in todo if s not in waiting]
    for s in todo:  # a replay needs the first seed's actions (first seeds run before replays)
        if s["seed"] != decider:
            s["replay"] = rows[(*run_key(s)[:4], decider)]["actions"]
    if args.workers == 0:
        for s in todo:
            finished(run_one(args.preset, args.overrides, s, dir_of(s)))
        return
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        futs = {pool.submit(run_one, args.preset, args.overrides, s, dir_of(s)): s for s in todo}
        for fut in cf.as_completed(futs):
            try:
                finished(fut.result())
            except Exception as exc:  # noqa: BLE001 - a failed run is reported, left out, and retried next time
                print(f"{run_key(futs[fut])}: failed: {type(exc).__name__}: {exc}", flush=True)


def analyse(args: argparse.Namespace, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per regime: the variance components, the costs, and the suite table for each replicate count."""
    a, b = args.pair.split(",")
    regimes = sorted({(r["horizon"], r["val_size"]) for r in rows})
    cpu = {g: statistics.fmean(r["suite_cpu_s"] for r in rows if (r["horizon"], r["val_size"]) == g) for g in regimes}
    ref = GPU_REFERENCE if GPU_REFERENCE in cpu else regimes[0]
    gpu_min_per_cpu_h = (60.0 / GPU_EPISODES_PER_HOUR) / (cpu[ref] / 3600.0)
    out = []
    for g in regimes:
        mine = {(r["instance"], r["seed"], r["controller"]): r for r in rows if (r["horizon"], r["val_size"]) == g}
        runs = {(i, s): (mine[(i, s, a)], mine[(i, s, b)]) for i, s, c in mine if c == a and (i, s, b) in mine}
        if not runs:
            continue
        comp = noise_stats.decompose(runs, boot=args.boot)
        # instances judged under different keys (machines) hold different hidden sets: their mean size
        n_dev = round(statistics.fmean(r["n_dev"] for r in mine.values()))
        n_test = round(statistics.fmean(r["n_test"] for r in mine.values()))
        unit = (args.contestants + 1) * cpu[g] / 3600.0  # every controller's episode and judge, one instance
        table = noise_stats.suite_table(
            comp,
            unit,
            gpu_min_per_cpu_h,
            n_dev,
            n_test,
            replicates=[int(x) for x in args.replicates.split(",") if x],
            comparisons=args.contestants,
            alpha=args.alpha,
            power=args.power,
            target=args.target,
            budget_cpu_h=args.budget_cpu_hours,
        )
        out.append(
            {
                "horizon": g[0],
                "val_size": g[1],
                "components": comp,
                "episode_cpu_h": cpu[g] / 3600.0,
                "episode_gpu_min": cpu[g] / 3600.0 * gpu_min_per_cpu_h,
                "n_dev": n_dev,
                "n_test": n_test,
                "gpu_reference_regime": list(ref),
                "suite": table,
            }
        )
    return out


def render(regimes: list[dict[str, Any]], target: float) -> tuple[str, dict[str, Any] | None]:
    """The printed table (one line per regime and replicate count) and the cheapest regime reaching ``target``."""
    sd = lambda v: "-" if v is None else f"{v**0.5:.4f}"
    num = lambda v, f=".3g": "-" if v is None else format(v, f)
    rows, best = [], None
    for g in regimes:
        c = g["components"]
        for s in g["suite"]:
            rows.append(
                [g["horizon"], g["val_size"], c["instances"], num(c["diff_mean"], "+.4f"), sd(c["var_judge"]),
                 sd(c["var_chaos"]), sd(c["var_instances"]), num(g["episode_cpu_h"] * 60, ".3g"), s["replicates"],
                 num(s["sd"], ".4f"), num(s["mde_per_cpu_hour"], ".3f"), num(s["mde_per_gpu_minute"], ".3f"),
                 num(s["instances_for_target"], "d"), num(s["cpu_hours_for_target"]),
                 num(s["gpu_minutes_for_target"]), num(s.get("fixed_set_mde_in_budget"), ".4f")]
            )  # fmt: skip
            cost = s["cpu_hours_for_target"]
            if cost is not None and (best is None or cost < best["cpu_hours_for_target"]):
                best = {"horizon": g["horizon"], "val_size": g["val_size"], **s}
    heads = ["horizon", "val", "inst", "mean A-B", "SD judge", "SD chaos", "SD instances", "CPU min/episode", "R",
             "paired SD", "MDE/CPU-h", "MDE/GPU-min", f"n for MDE<={target}", "CPU-h", "GPU-min",
             "fixed-set MDE in budget"]  # fmt: skip
    return common.markdown_table(heads, rows), best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device:
        args.overrides = [*args.overrides, f"run.device={args.device}"]
    cfg = load_config(args.preset, overrides=args.overrides)
    if cfg.env.instances is None:
        print(f"error: preset {args.preset} has no env.instances; the noise budget is measured on train instances")
        return 2
    if len(args.pair.split(",")) != 2:
        print(f"error: --pair takes two controllers A,B (got {args.pair!r})")
        return 2
    trains = list(cfg.env.instances.train_seeds[: args.instances])
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "rows.jsonl"
    rows = {run_key(r): r for r in read_jsonl(log)}
    first, later = plan(args, trains)
    left = [s for s in first + later if run_key(s) not in rows]
    print(f"{len(first) + len(later)} runs ({len(left)} to do) on train instances {trains}", flush=True)
    if args.report_only:
        have = len(first) + len(later) - len(left)
        print(f"--report-only: {len(left)} planned runs not run; the analysis uses the {have} there are", flush=True)
    else:
        execute(args, first, rows, log)
        execute(args, later, rows, log)
    planned = {run_key(s) for s in first + later}
    rows = {k: r for k, r in rows.items() if k in planned}  # rows.jsonl may hold other runs of the same work dir
    regimes = analyse(args, list(rows.values()))
    md, best = render(regimes, args.target)
    if best is not None:
        md += (
            f"\n\nCheapest regime for an MDE <= {args.target} (alpha {args.alpha} / {args.contestants} comparisons, "
            f"{args.power:.0%} power): horizon {best['horizon']}, {best['val_size']} validation utterances, "
            f"R={best['replicates']}: {best['instances_for_target']} instances, {best['cpu_hours_for_target']:.3g} "
            f"CPU-hours, {best['gpu_minutes_for_target']:.3g} GPU-minutes."
        )
    if regimes and tuple(regimes[0]["gpu_reference_regime"]) != GPU_REFERENCE:
        md += (
            f"\n\nGPU minutes scaled from regime {regimes[0]['gpu_reference_regime']}, not bench-cpu's "
            f"{list(GPU_REFERENCE)}: an illustration of the arithmetic, not a GPU cost."
        )
    payload = {
        "preset": args.preset,
        "pair": args.pair.split(","),
        "train_instances": trains,
        "seeds": [int(x) for x in args.seeds.split(",") if x],
        "settings": {k: getattr(args, k) for k in ("contestants", "alpha", "power", "target", "boot")},
        "gpu_episodes_per_hour": GPU_EPISODES_PER_HOUR,
        "regimes": regimes,
        "chosen": best,
        "planned_runs": len(first) + len(later),
        "rows": sorted(rows.values(), key=run_key),
    }
    common.report(NAME, args, payload, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
