"""Small shared pieces of the benchmark: run names, per-seed configs, config comparison, wall clocks."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.replicates import data_seed
from graph import live
from graph.agents import PROVIDERS, provider_of
from sttrl.config import Config, config_from_dict
from sttrl.control import registry as registry
from sttrl.env.instances import apply
from sttrl.io import atomic_write_json

SCHEMA = "sttrl.bench/1"
FAULTS = ("oom", "nan", "diverged")
# settings that say where files are or how many runs there are, not what a run computes: a benchmark directory
# resumes (and grows) when only these differ
NOT_COMPARED = ("run.seed", "run.out_dir", "data.cache_dir", "bench.replicates")


def with_seed(cfg: Config, seed: int, out: Path) -> Config:
    """``cfg`` with ``run.seed = seed`` and run files under ``out/runs``."""
    data = cfg.to_dict()
    data["run"] = {**data["run"], "seed": seed, "out_dir": str(out / "runs")}
    return config_from_dict(data)


def run_config(cfg: Config, seed: int, out: Path, controller: str | None = None, replicate: int = 0) -> Config:
    """The config of one run: :func:`with_seed` at the replicate's data-order seed
    (:func:`bench.replicates.data_seed`: ``seed`` itself for replicate 0), then with ``env.instances`` the instance
    of ``seed`` drawn in (``sttrl.env.instances.apply``; the seed is then a test instance's and the pairing key),
    then the controller's own adjustment (``ControllerSpec.configure``, e.g. ``schedule``'s lr schedule)."""
    cfg = apply(with_seed(cfg, data_seed(seed, replicate), out), seed)
    spec = registry.REGISTRY.get(controller) if controller and controller in registry.names() else None
    if spec is not None and spec.configure is not None:
        cfg = spec.configure(cfg)
    return cfg


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(a: dict[str, Any], b: dict[str, Any], ignore: Sequence[str] = NOT_COMPARED) -> list[str]:
    """The dotted names of the settings in which two configs (as dicts) differ, but those in ``ignore``."""
    fa, fb = _flatten(a), _flatten(b)
    return sorted(k for k in set(fa) | set(fb) if k not in ignore and fa.get(k) != fb.get(k))


def llm_unavailable(model: str) -> str | None:
    """Why the LLM controller cannot run (missing package or API key), or None. The key is resolved once
    per process (``graph.live``); the CLI resolves it in ``main``."""
    provider = provider_of(model)
    package, pip_name, key = PROVIDERS.get(provider, (None, None, None))
    if package and importlib.util.find_spec(package) is None:
        return f"the {pip_name} package is not installed (pip install {pip_name})"
    if key and not live.resolve_once(f"api_key:{model}", key):
        return f"no {key} in the environment or .env (model {model})"
    return None


class WallClock:
    """Seconds one run was worked on, across processes: a ``[start, last progress]`` segment per process,
    kept in a small JSON file, so a process killed mid-run counts up to its last recorded progress."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.segments: list[list[float]] = json.loads(path.read_text())["segments"] if path.is_file() else []
        self._written = 0.0

    def start(self) -> None:
        now = time.time()
        self.segments.append([now, now])
        self._write(now)

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if self.segments:
            self.segments[-1][1] = now
            if force or now - self._written >= 1.0:
                self._write(now)

    def _write(self, now: float) -> None:
        atomic_write_json(self.path, {"segments": self.segments})
        self._written = now

    @property
    def seconds(self) -> float:
        return float(sum(end - start for start, end in self.segments))


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {
        "n": len(vals),
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
    }
