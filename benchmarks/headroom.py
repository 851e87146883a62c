"""Headroom: can a controller matter on this environment? (issue 11)

On each *test* instance (``env.instances.test_seeds``), the hidden-**dev** WER of:
  (a) ``start``:  keeping the instance's starting settings for the whole budget;
  (b) ``oracle``: the best static setting in hindsight for that instance, from a small grid;
  (c) ``tuned``:  the single static setting with the lowest mean dev WER over the *train* instances
                  (``env.instances.train_seeds``), applied to every test instance;
  (d) ``rule``:   sttrl's rule policy from the instance's start.
(a) − (b) is the room to repair a poor start; (c) − (b) the room to adapt to the instance, which a tuned fixed
setting cannot take. Every episode spends the same budget (use ``env.budget_unit=samples``), runs through
``SttEnv`` (the same step as the graph) and is judged on the hidden ``dev`` split; the test split is not touched.

    python benchmarks/headroom.py --preset bench-cpu --test-instances 6 --train-instances 4 --out runs/headroom
    python benchmarks/headroom.py --preset debug --test-instances 2 --train-instances 2 --grid-lr 1e-3,3e-3

Results (one row per episode, resumable: finished episodes are read back) go to ``OUT/headroom.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sttrl.config import add_config_arguments, config_from_dict, load_config  # noqa: E402
from sttrl.io import atomic_write_json  # noqa: E402


def episode(
    cfg: Any, instance: int, setting: dict[str, Any] | None, controller: str, run_dir: Path, one_block: bool = True
) -> dict[str, Any]:
    """One episode on ``instance`` (its start replaced by ``setting`` when given), judged on hidden dev."""
    from sttrl.control.registry import make_controller
    from sttrl.env.gym import SttEnv
    from sttrl.env.instances import apply
    from sttrl.judge.scoring import judge

    done = run_dir / "judge-dev.json"
    if done.is_file():
        return json.loads(done.read_text())
    if run_dir.exists():  # cut short before its judge: run it again from the start
        shutil.rmtree(run_dir)
    icfg = apply(cfg, instance)
    data = icfg.to_dict()
    data["train"].update(setting or {})
    data["env"]["instances"] = None  # the instance is already applied; keep its record
    icfg = config_from_dict(data)
    if controller == "static" and one_block:
        # A static setting reads no observation, so its budget is trained as one block (bench's
        # one_block, as the schedule tuning and the oracle do): same data order, optimizer steps and lr; only the
        # per-block validation evaluations (never read) and block checkpoints are skipped.
        from bench.tune_schedule import one_block as as_one_block

        icfg = as_one_block(icfg)
    env = SttEnv(icfg)
    _, info = env.reset(seed=cfg.run.seed, options={"run_dir": str(run_dir), "instance": instance})
    policy = make_controller(controller, icfg, seed=cfg.run.seed)
    done_ep, obs = False, info["observation"]
    while not done_ep:
        d = policy.decide(obs, env.trajectory.records())
        _, _, term, trunc, info = env.step(d)
        obs, done_ep = info["observation"], term or trunc
    env.close()
    return judge(run_dir, progress=False, split="dev")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(p)
    p.add_argument("--test-instances", type=int, default=6)
    p.add_argument("--train-instances", type=int, default=4)
    p.add_argument("--grid-lr", default="5e-5,1.5e-4,4.5e-4", help="comma-separated static learning rates")
    p.add_argument("--grid-batch", default="", help="comma-separated static batch sizes (default: the instance's)")
    p.add_argument("--out", type=Path, default=Path("runs/headroom"))
    p.add_argument(
        "--prune-above",
        type=float,
        default=1.0,
        help="drop from the test instances' grid every setting whose mean dev WER over the train instances "
        "is at or above this (a setting that collapses on the train instances; tuning on train is "
        "allowed); 0 keeps the whole grid",
    )
    p.add_argument(
        "--blocks",
        choices=("one", "episode"),
        default="one",
        help="static runs as one block of the whole sample budget (default; no unread evaluations) "
        "or as the episode's blocks",
    )
    args = p.parse_args(argv)
    cfg = load_config(args.preset, args.config, args.overrides)
    if cfg.env.instances is None:
        print(f"error: preset {cfg.preset} has no env.instances; headroom needs an instance set", file=sys.stderr)
        return 2
    spec = cfg.env.instances
    lrs = [float(x) for x in args.grid_lr.split(",") if x]
    batches = [int(x) for x in args.grid_batch.split(",") if x] or [None]
    grid = [{"lr": lr, **({"batch_size": b} if b else {})} for lr in lrs for b in batches]
    tests, trains = spec.test_seeds[: args.test_instances], spec.train_seeds[: args.train_instances]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def run(instance: int, kind: str, setting: dict[str, Any] | None, controller: str) -> float:
        tag = "-".join(f"{k}{v:g}" for k, v in (setting or {}).items()) or controller
        t = time.perf_counter()
        rep = episode(
            cfg, instance, setting, controller, args.out / f"i{instance}-{kind}-{tag}", one_block=args.blocks == "one"
        )
        rows.append(
            {
                "instance": instance,
                "kind": kind,
                "setting": setting,
                "controller": controller,
                "dev_wer": rep["wer"],
                "scored": rep["scored"],
                "seconds": time.perf_counter() - t,
            }
        )
        atomic_write_json(
            args.out / "headroom.json",
            {"preset": cfg.preset, "grid": grid, "rows": rows, "seconds": time.perf_counter() - t0},
        )
        print(f"instance {instance} {kind} {tag}: dev WER {rep['wer']:.3f}", flush=True)
        return float(rep["wer"])

    train_means = []
    for setting in grid:  # (c): the single static setting best on average over the train instances
        train_means.append(statistics.fmean(run(i, "train-grid", setting, "static") for i in trains))
    tuned = grid[min(range(len(grid)), key=train_means.__getitem__)]
    kept = zip(grid, train_means, strict=True)
    test_grid = [s for s, m in kept if not (args.prune_above and m >= args.prune_above)] or [tuned]
    pruned = [s for s in grid if s not in test_grid]
    if pruned:
        print(f"pruned from the test grid (mean train dev WER >= {args.prune_above}): {pruned}", flush=True)
    # the static runs of every test instance first, the rule episodes last: a cut-short run still gives (a)-(c)
    for i in tests:
        run(i, "start", None, "static")
        for s in test_grid:
            run(i, "grid", s, "static")
    for i in tests:
        run(i, "rule", None, "rule")

    def wer(i: int, kind: str, setting: dict[str, Any] | None = None) -> float:
        return next(r["dev_wer"] for r in rows if r["instance"] == i and r["kind"] == kind and r["setting"] == setting)

    table = [
        {
            "instance": i,
            "start": wer(i, "start"),
            "oracle": min(wer(i, "grid", s) for s in test_grid),
            "tuned": wer(i, "grid", tuned),
            "rule": wer(i, "rule"),
        }
        for i in tests
    ]
    mean = {k: statistics.fmean(r[k] for r in table) for k in ("start", "oracle", "tuned", "rule")}
    summary = {
        "tuned_setting": tuned,
        "train_means": dict(zip(map(str, grid), train_means, strict=True)),
        "test_grid": test_grid,
        "pruned": pruned,
        "mean": mean,
        "repair_room": mean["start"] - mean["oracle"],
        "adapt_room": mean["tuned"] - mean["oracle"],
        "per_instance": table,
    }
    atomic_write_json(
        args.out / "headroom.json",
        {"preset": cfg.preset, "grid": grid, "rows": rows, "summary": summary, "seconds": time.perf_counter() - t0},
    )
    print("| instance | start | oracle | tuned static | rule |\n|---:|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['instance']} | {r['start']:.3f} | {r['oracle']:.3f} | {r['tuned']:.3f} | {r['rule']:.3f} |")
    print(f"| mean | {mean['start']:.3f} | {mean['oracle']:.3f} | {mean['tuned']:.3f} | {mean['rule']:.3f} |")
    print(
        f"room to repair a start (start - oracle): {summary['repair_room']:+.3f}; room to adapt "
        f"(tuned static - oracle): {summary['adapt_room']:+.3f}; tuned static setting {tuned}; "
        f"{time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
