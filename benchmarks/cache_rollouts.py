"""Group rollouts per hour with and without the block cache: a GRPO-style group of G episodes from one state (the
same instance, seed and starting checkpoint), each an :class:`~sttrl.env.session.EpisodeSession` as a TRL rollout
runs it, one after the other in one process. Three modes per round, on the same action sequences:

- ``no-cache``: every block trained;
- ``cache``: a cold block cache (a fresh directory): a block two rollouts share (same parent state and action) is
  trained once, and so is an evaluation of the same weights;
- ``cache-warm``: the same group again on the now warm cache (a rerun: a repeated benchmark, another pass of GRPO
  from the same state).

The actions come from a seeded sampler that plays ``keep`` with probability ``--p-keep`` and otherwise one of the
other enabled training actions uniformly (never ``stop``: every rollout runs the whole budget), the kind of
concentrated policy a GRPO group samples from. Reported per mode: the group's wall time, rollouts per hour, blocks
trained and blocks taken from the cache, and whether every rollout's return and WERs equal the no-cache ones (the
cache is exact where episodes are bit-reproducible: the debug preset, one thread).
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import add_preset_args, base_parser, machine_info, markdown_table, report, summarize

NAME = "cache_rollouts"
MODES = ("no-cache", "cache", "cache-warm")


def action_plans(actions: list[str], group: int, steps: int, p_keep: float, seed: int) -> list[list[str]]:
    """``group`` sequences of ``steps`` actions from the seeded sampler (see the module docstring)."""
    rng = random.Random(seed)
    others = [a for a in actions if a not in ("keep", "stop")]
    return [
        [("keep" if rng.random() < p_keep or not others else rng.choice(others)) for _ in range(steps)]
        for _ in range(group)
    ]


def rollout(cfg: Any, root: Path, plan: list[str], instance: int | None) -> dict[str, Any]:
    """One episode of ``plan``: its return, validation WERs and how many blocks came from the cache."""
    from sttrl.env.session import EpisodeSession

    session = EpisodeSession(cfg, root, source="bench")
    session.reset(seed=cfg.run.seed, instance=instance)
    for action in plan:
        if session.done:
            break
        session.step(action)
    records = session.env.trajectory.records()
    session.close(drop_checkpoints=True)
    cached = sum("[cached block" in r["train"]["note"] for r in records)
    return {
        "return": session.total_reward,
        "wers": [r["eval"]["wer"] for r in records],
        "cached": cached,
        "blocks": len(records),
    }


def group(cfg: Any, root: Path, plans: list[list[str]], instance: int | None) -> dict[str, Any]:
    """The whole group, timed."""
    t0 = time.perf_counter()
    outs = [rollout(cfg, root, plan, instance) for plan in plans]
    seconds = time.perf_counter() - t0
    cached = sum(o["cached"] for o in outs)
    blocks = sum(o["blocks"] for o in outs)
    return {
        "seconds": seconds,
        "rollouts_per_hour": len(plans) * 3600.0 / seconds,
        "blocks_trained": blocks - cached,
        "blocks_cached": cached,
        "returns": [o["return"] for o in outs],
        "wers": [o["wers"] for o in outs],
    }


def configs(preset: str, overrides: list[str], cache_dir: Path) -> dict[str, Any]:
    from sttrl.config import load_config

    base = load_config(preset, overrides=overrides)
    on = [*overrides, "cache.enabled=true", f"cache.dir={cache_dir}"]
    return {
        "no-cache": base,
        "cache": load_config(preset, overrides=on),
        "cache-warm": load_config(preset, overrides=on),
    }


def main() -> int:
    p = base_parser(NAME, __doc__, threads=False)
    add_preset_args(p)
    p.add_argument("--group", type=int, default=None, help="rollouts per group (default 8; 3 with --quick)")
    p.add_argument("--reps", type=int, default=1, help="rounds (each with a fresh cold cache)")
    p.add_argument("--p-keep", type=float, default=0.5, help="probability of keep in the action sampler")
    p.add_argument("--seed", type=int, default=0, help="seed of the action sampler")
    args = p.parse_args()
    preset = args.preset or ("debug" if args.quick else "cpu")
    overrides = list(args.overrides) + (["env.max_actions=2"] if args.quick else [])
    size = args.group or (3 if args.quick else 8)
    tmp = Path(tempfile.mkdtemp(prefix="sttrl-cache-bench-"))
    from sttrl.config import load_config

    cfg0 = load_config(preset, overrides=[*overrides, f"run.out_dir={tmp / 'runs'}"])
    spec = cfg0.env.instances
    instance = spec.train_seeds[0] if spec is not None else None
    plans = action_plans(list(cfg0.env.actions), size, cfg0.env.max_actions, args.p_keep, args.seed)
    print(f"{preset}: a group of {size} from one state, {cfg0.env.max_actions} decisions each; plans {plans}")
    overrides.append(f"run.out_dir={tmp / 'runs'}")
    rollout(cfg0, tmp / "warm-up", plans[0], instance)  # builds data and features: not part of any timing
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        for r in range(args.reps):
            cache_dir = tmp / f"blocks-{r}"
            cfgs = configs(preset, overrides, cache_dir)
            order = list(MODES) if r % 2 == 0 else ["cache", "cache-warm", "no-cache"]
            result = {m: group(cfgs[m], tmp / f"r{r}-{m}", plans, instance) for m in order}
            for m in MODES:
                print(
                    f"  round {r + 1} {m}: {result[m]['seconds']:.1f} s, {result[m]['blocks_trained']} blocks trained"
                )
            rounds.append(result)
            shutil.rmtree(cache_dir, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary: dict[str, Any] = {}
    rows = []
    for m in MODES:
        runs = [rd[m] for rd in rounds]
        exact = all(
            rd[m]["returns"] == rd["no-cache"]["returns"] and rd[m]["wers"] == rd["no-cache"]["wers"] for rd in rounds
        )
        speedup = summarize([rd["no-cache"]["seconds"] / rd[m]["seconds"] for rd in rounds])
        s = {
            "seconds": summarize([x["seconds"] for x in runs]),
            "rollouts_per_hour": summarize([x["rollouts_per_hour"] for x in runs]),
            "blocks_trained": summarize([x["blocks_trained"] for x in runs]),
            "blocks_cached": summarize([x["blocks_cached"] for x in runs]),
            "speedup_vs_no_cache": speedup,
            "exact": exact,
        }
        summary[m] = s
        rows.append(
            [
                m,
                s["seconds"]["median"],
                s["rollouts_per_hour"]["median"],
                s["blocks_trained"]["median"],
                s["blocks_cached"]["median"],
                speedup["median"],
                "yes" if exact else "NO",
            ]
        )
    table = markdown_table(
        [
            "mode",
            "group s",
            "rollouts/hour",
            "blocks trained",
            "blocks from cache",
            "× no-cache (paired)",
            "same numbers",
        ],
        rows,
    )
    payload = {"preset": preset, "overrides": overrides, "group": size, "p_keep": args.p_keep, "plans": plans}
    report(NAME, args, {**payload, "machine": machine_info(), "rounds": rounds, "summary": summary}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
