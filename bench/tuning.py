"""What the tuning commands share (``bench.tune_contextual``, ``bench.tune_lookahead``): train instances only, the
hidden dev split only, resumable runs whose rows are files, and the cost of tuning summed from those rows.

A tuned setting may only come from *train* instances (``env.instances.train_seeds``) scored on the hidden *dev*
split; test instances and the test split are kept for reported results. ``--quick`` runs a debug-sized grid on
the debug preset with a small instance set (the CI test of each command).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sttrl.config import Config, add_config_arguments, config_from_dict, load_config, path_fields, with_fields
from sttrl.errors import ConfigError, SttrlError
from sttrl.io import atomic_write_text, read_jsonl
from sttrl.rundir import RUN_RECORD

# --quick: the debug preset's instance set of the smoke suite (train instances 0-1), 2 blocks of 8 samples
QUICK_OVERRIDES = (
    "env.instances={lr: [5e-4, 2e-3], batch_sizes: [2, 4], freeze_layers: [0, 1], train_seeds: [0, 1], "
    "test_seeds: [1000, 1001]}",
    "env.budget_unit=samples",
    "env.samples_per_action=8",
    "env.max_actions=2",
    "run.threads=1",
)


def train_instances(cfg: Config, n: int, seeds: Sequence[int] | None = None) -> list[int]:
    """The first ``n`` train instances (or ``seeds``, which must all be train instances); a ConfigError otherwise."""
    spec = cfg.env.instances
    if spec is None:
        raise ConfigError(f"preset {cfg.preset} has no env.instances: tuning runs on train instances")
    chosen = list(seeds) if seeds else list(spec.train_seeds[:n])
    bad = [i for i in chosen if i not in spec.train_seeds]
    if bad:
        raise ConfigError(f"instances {bad} are not train instances ({spec.train_seeds}): tune on train instances only")
    if not chosen:
        raise ConfigError("no train instance to tune on")
    return chosen


def cost(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The tuning cost summed over run rows (each with ``samples``, ``steps`` and ``seconds``)."""
    return {
        "episodes": len(rows),
        "samples": int(sum(r.get("samples") or 0 for r in rows)),
        "steps": int(sum(r.get("steps") or 0 for r in rows)),
        "seconds": float(sum(r.get("seconds") or 0.0 for r in rows)),
    }


def drop_weights(run_dir: Path, final: bool = True) -> None:
    """Remove a scored tuning run's weights: its block checkpoints, and its final model when ``final``. What
    tuning reads back is the run's row (``point.json``), the run record and the judge's files, which stay; a
    ``bench-cpu`` run otherwise leaves about 0.7 GB (0.57 GB of checkpoints, 0.14 GB final), and a 64-run grid
    would fill the disk."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if final:
        shutil.rmtree(run_dir / "final", ignore_errors=True)


def budget_doc(cfg: Config) -> dict[str, Any]:
    """The episode budget the tuned setting was chosen at (a tuned file is only valid at it)."""
    env = cfg.env
    per = env.samples_per_action if env.budget_unit == "samples" else env.steps_per_action
    return {"unit": env.budget_unit, "max_actions": env.max_actions, "per_action": per}


def mean_or_none(values: Sequence[float | None]) -> float | None:
    got = [float(v) for v in values if v is not None]
    return statistics.fmean(got) if got else None


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def instance_config(
    cfg: Config, instance: int, configure: Callable[[Config], Config] | None = None, data_seed: int | None = None
) -> Config:
    """The config of one tuning run: ``run.seed`` = the data-order seed (default: the instance's seed), the
    instance drawn in, then ``configure``."""
    from sttrl.env.instances import apply  # numpy: loaded when a run is planned, not for --help

    data = cfg.to_dict()
    data["run"] = {**data["run"], "seed": instance if data_seed is None else data_seed}
    icfg = apply(config_from_dict(data), instance)
    return configure(icfg) if configure is not None else icfg


def cached_data(cfg: Config, cache: dict[str, Any]) -> Any:
    """The speech data of ``cfg``, built once and kept in ``cache`` (one corpus in memory at a time)."""
    from sttrl.data import build_speech_data  # audio synthesis and datasets: loaded when a run starts

    key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
    if key not in cache:
        cache.clear()
        cache[key] = build_speech_data(cfg.data, progress=False)
    return cache[key]


def tuning_parser(prog: str, doc: str, instances: int) -> argparse.ArgumentParser:
    """The options every tuning command shares: config, ``--out``, ``--train-instances``, ``--work``, ``--quick``,
    ``--dry-run`` (the preset defaults to bench-cpu, debug with ``--quick``)."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.set_defaults(preset=None)
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the tuned file (JSON)")
    p.add_argument("--train-instances", type=int, default=instances, metavar="N", help="the first N train instances")
    p.add_argument("--work", type=Path, metavar="DIR", help="run directories (default: FILE's folder/<stem>-runs)")
    p.add_argument("--quick", action="store_true", help="the debug preset, a 2-point grid (the CI test)")
    p.add_argument("--dry-run", action="store_true", help="print the grid and the time estimate, run nothing")
    return p


def tuning_config(args: argparse.Namespace) -> Config:
    """The config of a tuning command: ``--preset`` (bench-cpu; debug with the smoke instance set for ``--quick``)."""
    preset = args.preset or ("debug" if args.quick else "bench-cpu")
    quick = list(QUICK_OVERRIDES) if args.quick and preset == "debug" else []
    return load_config(preset, args.config, [*quick, *args.overrides])


def work_dir(args: argparse.Namespace) -> Path:
    return args.work or args.out.parent / f"{args.out.stem}-runs"


def lowest(points: Sequence[dict[str, Any]], key: str = "dev_wer_mean") -> dict[str, Any]:
    """The scored point with the lowest ``key`` (the first on ties: grid order); an error when none was scored."""
    scored = [p for p in points if p[key] is not None]
    if not scored:
        raise SttrlError("no grid point was scored on the hidden dev split")
    return min(scored, key=lambda p: p[key])


def provenance(cfg: Config, instances: list[int], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What every tuned file says about itself: preset, train instances, split, cost, budget."""
    return {
        "preset": cfg.preset,
        "train_instances": instances,
        "split": "dev",
        "cost": cost(rows),
        "budget": budget_doc(cfg),
    }


# ----- a ledger of finished episodes that outlives the machine -------------------------------------------------------
LEDGER_KEYS = ("run", "config_sha", "instance", "settings", "dev_wer")


def config_sha(cfg: Config) -> str:
    """16 hex characters that identify what a tuning row depends on: the config without its path fields (the cache
    and run directories differ from machine to machine, the results do not)."""
    data = with_fields(cfg.to_dict(), {field: None for field, _ in path_fields(cfg)})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def recorded_judge_key(run_dir: Path) -> str | None:
    """The judge key fingerprint the run record in ``run_dir`` was signed with (the key that judged it)."""
    try:
        return json.loads((run_dir / RUN_RECORD).read_text())["signature"]["key_fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_ledger(path: Path, sha: str) -> dict[str, dict[str, Any]]:
    """The rows of a ledger (JSON lines, one finished episode each) keyed by run name; a line that is not JSON, a row
    without a field or one run under another config is a ConfigError that names the file and the line or row."""
    rows: dict[str, dict[str, Any]] = {}
    for n, row in enumerate(read_jsonl(path, torn="raise", error=ConfigError), 1):
        missing = [k for k in LEDGER_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise ConfigError(f"{path}: row {n} needs {', '.join(LEDGER_KEYS)}; it lacks {', '.join(missing)}")
        if row["config_sha"] != sha:
            raise ConfigError(
                f"{path}: row {n} ({row['run']}) was run under config {row['config_sha']}, this tuning's is {sha} "
                "(another preset or --set): give this tuning another --ledger"
            )
        rows[row["run"]] = row
    return rows


def with_ledger(run: Callable[..., dict[str, Any]], path: Path, cfg: Config) -> Callable[..., dict[str, Any]]:
    """``run`` (an episode runner ``(cfg, instance, settings, run_dir, cache) -> row``) that first looks the run up
    in the ledger at ``path`` and appends each row it runs (the whole file rewritten atomically), so a tuning resumes
    on a machine that no longer has the run directories once the ledger travels (it is small: commit it). Each row
    carries the judge key's fingerprint: rows judged under different keys were scored on different hidden dev
    utterances."""
    sha = config_sha(cfg)
    rows = read_ledger(path, sha)

    def go(rcfg: Config, instance: int, settings: dict[str, Any], run_dir: Path, cache: dict[str, Any]) -> dict:
        old = rows.get(run_dir.name)
        if old is not None:
            if old["instance"] != instance or old["settings"] != settings:
                raise ConfigError(f"{path}: row {run_dir.name} was run with other settings or on another instance")
            return old
        row = run(rcfg, instance, settings, run_dir, cache)
        row = {**row, "run": run_dir.name, "config_sha": sha}
        row.setdefault("judge_key", recorded_judge_key(run_dir))
        rows[run_dir.name] = row
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows.values()))
        return row

    return go
