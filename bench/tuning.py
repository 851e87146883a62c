"""What the tuning commands share (``bench.tune_contextual``, ``bench.tune_lookahead``): train instances only, the
hidden dev split only, resumable runs whose rows are files, and the cost of tuning summed from those rows.

A tuned setting may only come from *train* instances (``env.instances.train_seeds``) scored on the hidden *dev*
split; test instances and the test split are kept for reported results. ``--quick`` runs a debug-sized grid on
the debug preset with a small instance set (the CI test of each command).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from sttrl.config import Config, config_from_dict
from sttrl.errors import ConfigError

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


def instance_config(cfg: Config, instance: int, configure: Callable[[Config], Config] | None = None) -> Config:
    """The config of one tuning run: ``run.seed`` = the instance's seed, the instance drawn in, then ``configure``."""
    from sttrl.env.instances import apply  # numpy: loaded when a run is planned, not for --help

    data = cfg.to_dict()
    data["run"] = {**data["run"], "seed": instance}
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
