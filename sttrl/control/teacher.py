"""``python -m sttrl.teacher``: teacher trajectories from lookahead search on *train* instances only.

For every instance seed (``env.instances.train_seeds``; a test seed is refused) a lookahead episode
(:mod:`sttrl.control.lookahead`) runs in ``<out_dir>/teacher-s<seed>``; for every state it probed, one JSONL row holds
the observation, every probed action with its measured outcome and the chosen (best) action. The verifier is
the measurement itself. States trained without probes (the budget's tail) carry no label and are left out.

Row schema ``sttrl.teacher/1`` (``datasets.load_dataset("json", data_files=PATH)`` loads it):
``schema, run_id, instance_seed, instance, step, observation, criterion, chosen, chosen_value, probes`` with
``probes[i] = {action, hp_after, steps, samples, status, losses, value}`` (``value``: the criterion, null when
the probe failed), ``val_wer_after`` (the block trained from the winner) and ``history`` (the episode's trajectory
records before this step: with ``observation`` they render the prompt an LLM controller saw, sttrl.control.prompting).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from sttrl.config import Config, add_config_arguments, load_config
from sttrl.control.lookahead import LOG, run_lookahead
from sttrl.env.instances import apply
from sttrl.errors import ConfigError, SttrlError
from sttrl.io import atomic_write_text
from sttrl.rundir import RUN_RECORD, TRAJECTORY

SCHEMA = "sttrl.teacher/1"
PROBE_KEYS = ("action", "hp_after", "steps", "samples", "status", "losses", "value")


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def teacher_rows(cfg: Config, seed: int, run_dir: Path) -> list[dict[str, Any]]:
    """Run the lookahead episode of train instance ``seed`` and return its labelled rows."""
    spec = cfg.env.instances
    if spec is None:
        raise ConfigError("teacher trajectories need env.instances (train instances to search on)")
    if seed not in spec.train_seeds:
        raise ConfigError(
            f"instance seed {seed} is not in env.instances.train_seeds: teacher trajectories use "
            "train instances only (test instances are kept for reported results)"
        )
    icfg = apply(cfg, seed)
    out = run_lookahead(icfg, run_dir)
    return rows_from_run(run_dir, seed, icfg.env.instance, out["run_id"], out["records"])


def rows_from_run(
    run_dir: Path, seed: int, instance: Any, run_id: str, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The labelled rows of a lookahead run directory: one per probed decision in its ``lookahead.jsonl``, with
    the trajectory ``records`` before it as history. Works on an interrupted run too (its decisions so far)."""
    rows = []
    for row in (json.loads(line) for line in (Path(run_dir) / LOG).read_text().splitlines() if line.strip()):
        if not row["probes"] or row["step"] > len(records):
            continue
        probes = [{**{k: p[k] for k in PROBE_KEYS}, "value": _finite(p["value"])} for p in row["probes"]]
        chosen = next((p["value"] for p in probes if p["action"] == row["chosen"]), None)
        rows.append(
            {
                "schema": SCHEMA,
                "run_id": run_id,
                "instance_seed": seed,
                "instance": instance,
                "step": row["step"],
                "observation": row["observation"],
                "criterion": row["criterion"],
                "chosen": row["chosen"],
                "chosen_value": chosen,
                "probes": probes,
                "val_wer_after": row["val_wer_after"],
                "history": records[: row["step"] - 1],
            }
        )
    return rows


def rows_from_run_dir(run_dir: Path) -> list[dict[str, Any]]:
    """:func:`rows_from_run` reading the seed, instance, run id and records from the run directory itself
    (``run.json`` and ``trajectory.jsonl``): rows of teacher runs made elsewhere, finished or interrupted."""
    run_dir = Path(run_dir)
    try:
        meta = json.loads((run_dir / RUN_RECORD).read_text())
        records = [json.loads(x) for x in (run_dir / TRAJECTORY).read_text().splitlines() if x.strip()]
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{run_dir} is not a readable lookahead run directory (run.json, trajectory.jsonl, lookahead.jsonl): {exc}"
        ) from exc
    instance = ((meta.get("config") or {}).get("env") or {}).get("instance")
    if not instance or "seed" not in instance or "run_id" not in meta:
        raise ConfigError(f"{run_dir}/run.json has no env.instance: teacher rows need an instance-set run")
    return rows_from_run(run_dir, int(instance["seed"]), instance, meta["run_id"], records)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> int:
    """``rows`` as JSONL into ``path``, written atomically; the row count."""
    atomic_write_text(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
    return len(rows)


def write_teacher(cfg: Config, seeds: list[int], path: Path, on_line: Any = print) -> int:
    """Teacher rows of every seed into ``path`` (JSONL, written atomically at the end); the row count."""
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        got = teacher_rows(cfg, seed, Path(cfg.run.out_dir) / f"teacher-s{seed}")
        rows += got
        on_line(f"instance {seed}: {len(got)} labelled states")
    return write_rows(path, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sttrl.teacher",
        description="Teacher trajectories: lookahead "
        "search on train instances, one JSONL row per probed state (schema " + SCHEMA + ").",
    )
    add_config_arguments(p)
    p.add_argument("--instances", type=int, default=1, metavar="N", help="the first N env.instances.train_seeds")
    p.add_argument("--seeds", type=int, nargs="+", metavar="S", help="these train seeds instead of --instances")
    p.add_argument(
        "--from-runs",
        type=Path,
        nargs="+",
        metavar="RUN_DIR",
        help="write the rows of these lookahead "
        "run directories (made elsewhere, e.g. on a GPU machine; interrupted ones give their decisions so "
        "far) instead of running episodes",
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the JSONL file to write")
    args = p.parse_args(argv)
    if args.from_runs:
        try:
            rows = [r for d in args.from_runs for r in rows_from_run_dir(d)]
            bad = sorted({r["instance_seed"] for r in rows if r["instance"].get("split") != "train"})
            if bad:
                raise ConfigError(
                    f"runs of instances {bad} are not train instances: teacher rows use train instances only"
                )
        except SttrlError as exc:
            print(f"error: {exc}")
            return 2
        write_rows(args.out, rows)
        print(f"{len(rows)} rows ({SCHEMA}) from {len(args.from_runs)} run directories: {args.out}")
        return 0
    try:
        cfg = load_config(args.preset, args.config, list(args.overrides))
        if cfg.env.instances is None:
            raise ConfigError("teacher trajectories need env.instances (e.g. --set env.instances.lr=[1e-4,1e-2])")
        seeds = args.seeds or cfg.env.instances.train_seeds[: args.instances]
        n = write_teacher(cfg, list(seeds), args.out)
    except SttrlError as exc:
        print(f"error: {exc}")
        return 2
    print(f"{n} rows ({SCHEMA}): {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
