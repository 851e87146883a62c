"""The ``contextual`` controller: the schedule's parameters (peak lr, decay shape, warm-up) chosen per instance from
what an episode observes at its start.

Features (:data:`FEATURES`): the instance's start lr (log10), batch size (log2) and frozen layers, the start
training loss and validation WER, and the memory budget and training-set size where the instance set varies them.
The audio noise level is not one of them: :func:`sttrl.env.instances.observable` keeps it from controllers, and the
start loss and WER are how it shows. The start loss and WER are measured by the episode's own start phase
(:meth:`sttrl.env.episode.Episode.start`) in a scratch directory before the episode's config is fixed, cached under
``data.cache_dir/contextual-start/`` (one measurement per instance configuration); the episode measures the same
numbers again as its step-0 observation, and the first decision's rationale states them.

The map (:mod:`sttrl.control.context_models`) comes from a tuned file (``sttrl.contextual/1``,
``bench.contextual_file``) written by ``python -m bench.tune_contextual``: the train instances' features and their
hidden-dev WER at every grid point, and the map chosen by leave-one-instance-out cross-validation. It predicts every
grid point's dev WER at the episode's features and the lowest wins; the trainer then runs that schedule
(``train.lr_schedule``) and the controller keeps every block, as ``schedule`` does. Without a tuned file it runs the
``schedule`` controller's setting and says so.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sttrl.config import Config
from sttrl.control.context_models import fit
from sttrl.control.schedule import read_tuned, schedule_of, with_schedule
from sttrl.control.spec import ControllerSpec, register
from sttrl.env.actions import Action
from sttrl.env.decision import Decided
from sttrl.errors import ConfigError
from sttrl.io import atomic_write_json

TUNED_SCHEMA = "sttrl.contextual/1"
START_DIR = "contextual-start"


def _start_lr(cfg: Config) -> float:
    inst = cfg.env.instance or {}
    return float(inst.get("lr", cfg.train.lr))  # the instance's own lr: a configured schedule has replaced train.lr


FEATURES: dict[str, Callable[[Config, dict[str, Any]], float]] = {
    "log_lr": lambda cfg, obs: math.log10(_start_lr(cfg)),
    "log_batch": lambda cfg, obs: math.log2(cfg.train.batch_size),
    "freeze_layers": lambda cfg, obs: float(cfg.train.freeze_layers),
    "start_loss": lambda cfg, obs: float(obs["train_loss"]),
    "start_wer": lambda cfg, obs: float(obs["wer"]),
    "memory_budget_gb": lambda cfg, obs: float(cfg.train.memory_budget_gb or 0.0),
    "train_utterances": lambda cfg, obs: float(cfg.data.max_train_utterances or 0),
}
BASE_FEATURES = ("log_lr", "log_batch", "freeze_layers", "start_loss", "start_wer")


def default_features(cfg: Config) -> list[str]:
    """The base features, plus the memory budget and training-set size when ``env.instances`` varies them."""
    spec = cfg.env.instances
    extra = [] if spec is None else [k for k in ("memory_budget_gb", "train_utterances") if getattr(spec, k)]
    return [*BASE_FEATURES, *extra]


def features_of(cfg: Config, start: dict[str, Any], names: list[str]) -> list[float]:
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ConfigError(f"unknown contextual features {unknown}; valid: {', '.join(FEATURES)}")
    return [FEATURES[n](cfg, start) for n in names]


def _start_key(cfg: Config) -> str:
    d = cfg.to_dict()
    parts = {k: d[k] for k in ("model", "data", "train")} | {
        k: d["run"][k] for k in ("seed", "device", "dtype", "threads")
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def start_observation(cfg: Config, data: Any = None) -> dict[str, Any]:
    """The episode's start observation for ``cfg`` (start WER, loss, hyperparameters), measured once by the
    episode's start phase in a scratch run directory and cached under ``data.cache_dir``."""
    path = Path(cfg.data.cache_dir) / START_DIR / f"{_start_key(cfg)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from sttrl.env.episode import Episode  # torch and the model: only when a start is measured
    from sttrl.env.runtime import EpisodeRuntime
    from sttrl.train.memory import release_memory

    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".start-", dir=path.parent))
    try:
        rt = EpisodeRuntime(cfg, scratch / "run", progress=False, data=data)
        obs = Episode(rt).start().progress.observation
        del rt
        release_memory(collect=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    atomic_write_json(path, obs)
    return obs


def load_tuned(path: str | Path) -> dict[str, Any]:
    """A tuned contextual file; ConfigError when missing or of another schema."""
    return read_tuned(path, TUNED_SCHEMA, "contextual")


def predict(doc: dict[str, Any], x: list[float]) -> tuple[dict[str, Any], list[float]]:
    """The grid point the tuned map chooses at features ``x`` and the predicted dev WER of every grid point."""
    rows = doc["instances"]
    model = fit(doc["model"], np.array([r["features"] for r in rows]), np.array([r["dev_wer"] for r in rows]))
    pred = model.predict(np.array(x))
    return dict(doc["grid"][int(np.argmin(pred))]), [float(v) for v in pred]


def contextual_schedule(cfg: Config, start: dict[str, Any] | None = None) -> dict[str, Any]:
    """The schedule for this instance (``cfg`` with the instance drawn in, no schedule applied yet)."""
    path = cfg.bench.contextual_file
    if path is None:
        sched = schedule_of(cfg)
        return {**sched, "source": f"no bench.contextual_file: the schedule controller's ({sched['source']})"}
    doc = load_tuned(path)
    start = start if start is not None else start_observation(cfg)
    x = features_of(cfg, start, doc["features"])
    point, pred = predict(doc, x)
    return {
        **point,
        "features": dict(zip(doc["features"], x, strict=True)),
        "predicted_dev_wer": min(pred),
        "source": f"map {doc['model']} of tuned file {path}",
    }


def configure(cfg: Config) -> Config:
    """The ``contextual`` controller's episode config (``ControllerSpec.configure``): its schedule in the trainer."""
    return with_schedule(cfg, contextual_schedule(cfg))


@dataclass
class ContextualPolicy:
    """``keep`` every step: the lr follows the instance's schedule inside the trainer; the first decision states the
    start features the episode itself measured."""

    description: str
    features: list[str]
    cfg: Config
    name: str = "contextual"

    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided:
        why = f"contextual schedule, keep: {self.description}"
        if not history and self.features:
            seen = features_of(self.cfg, observation, self.features)
            why += "; start features " + ", ".join(f"{n} {v:.4g}" for n, v in zip(self.features, seen, strict=True))
        return Decided(Action.KEEP, why, self.name)


def _contextual(cfg: Config, seed: int = 0, **_: Any) -> ContextualPolicy:
    if Action.KEEP.value not in cfg.env.actions:
        raise ConfigError("the contextual controller needs the 'keep' action; enable it in env.actions")
    t = cfg.train
    path = cfg.bench.contextual_file
    doc = load_tuned(path) if path is not None else None
    names = doc["features"] if doc is not None else []
    where = f"map {doc['model']} of {path}" if doc else "no bench.contextual_file: the schedule controller's setting"
    if t.lr_schedule == "constant":  # built on a config nobody configured: say what it runs
        return ContextualPolicy(f"constant lr {t.lr:.3g} (train.lr_schedule=constant; {where})", names, cfg)
    return ContextualPolicy(
        f"lr {t.lr_schedule} from peak {t.lr:.3g}, warm-up {t.warmup_fraction:g}, final {t.lr_final_fraction:g} x "
        f"peak ({where})",
        names,
        cfg,
    )


register(
    ControllerSpec(
        "contextual",
        "episode",
        _contextual,
        "the schedule's peak lr, shape and warm-up chosen per instance from its start (bench.contextual_file)",
        color="#17becf",
        configure=configure,
    )
)
