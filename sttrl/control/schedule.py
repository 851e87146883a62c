"""The ``schedule`` controller: the strongest fixed schedule a practitioner would write.

Linear warm-up to a peak lr, then linear or cosine decay to the horizon (the episode's total optimizer steps),
run inside the trainer (``train.lr_schedule``, see :func:`sttrl.train.trainer.scheduled_lr`); the controller itself
keeps every block from the instance's start batch and frozen layers. Its peak lr and shape come from a
*tuned file* written by ``python -m bench.tune_schedule`` (tuned on train instances against the hidden
dev split; ``bench.schedule_file``); without one it uses the config's ``bench.schedule_*`` values and says
so in every decision's rationale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sttrl.config import config_from_dict
from sttrl.control.spec import ControllerSpec, register
from sttrl.env.actions import Action
from sttrl.env.decision import Decided
from sttrl.errors import ConfigError

TUNED_SCHEMA = "sttrl.schedule/1"


def read_tuned(path: str | Path, schema: str, what: str) -> dict[str, Any]:
    """The tuned file of controller ``what`` (``bench.<what>_file``, written by ``python -m bench.tune_<what>``);
    a ConfigError when it is missing or of another schema."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"bench.{what}_file {p} does not exist: write it with python -m bench.tune_{what}")
    doc = json.loads(p.read_text())
    if doc.get("schema") != schema:
        raise ConfigError(f"{p} is not a tuned {what} file (schema {doc.get('schema')!r}, want {schema})")
    return doc


def load_tuned(path: str | Path) -> dict[str, Any]:
    """A tuned file's winner: ``{peak_lr, shape, warmup_fraction, final_fraction, ...}``; ConfigError when
    missing or not a tuned file."""
    return read_tuned(path, TUNED_SCHEMA, "schedule")


def schedule_of(cfg: Any) -> dict[str, Any]:
    """The schedule this config asks for: from the tuned file when ``bench.schedule_file`` is set, else the
    untuned ``bench.schedule_*`` values (peak: ``bench.schedule_peak_lr`` or the starting lr); ``source`` says
    which."""
    b = cfg.bench
    if b.schedule_file is not None:
        doc = load_tuned(b.schedule_file)
        return {
            "peak_lr": float(doc["peak_lr"]),
            "shape": doc["shape"],
            "warmup_fraction": float(doc["warmup_fraction"]),
            "final_fraction": float(doc["final_fraction"]),
            "source": f"tuned file {b.schedule_file}",
        }
    return {
        "peak_lr": float(b.schedule_peak_lr or cfg.train.lr),
        "shape": b.schedule_shape,
        "warmup_fraction": b.schedule_warmup_fraction,
        "final_fraction": b.schedule_final_fraction,
        "source": "untuned: no bench.schedule_file, the config's bench.schedule_* values",
    }


def with_schedule(cfg: Any, sched: dict[str, Any]) -> Any:
    """``cfg`` with the trainer's lr schedule set to ``sched`` (peak clamped into [lr_min, lr_max])."""
    data = cfg.to_dict()
    t = data["train"]
    t["lr"] = min(max(float(sched["peak_lr"]), t["lr_min"]), t["lr_max"])
    t.update(
        lr_schedule=sched["shape"], warmup_fraction=sched["warmup_fraction"], lr_final_fraction=sched["final_fraction"]
    )
    return config_from_dict(data)


def configure(cfg: Any) -> Any:
    """The ``schedule`` controller's episode config (``ControllerSpec.configure``)."""
    return with_schedule(cfg, schedule_of(cfg))


@dataclass
class SchedulePolicy:
    """``keep`` every step: the lr follows the schedule inside the trainer."""

    description: str
    name: str = "schedule"

    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided:
        return Decided(Action.KEEP, f"fixed schedule, keep: {self.description}", self.name)


def _schedule(cfg: Any, seed: int = 0, **_: Any) -> SchedulePolicy:
    if Action.KEEP.value not in cfg.env.actions:
        raise ConfigError("the schedule controller needs the 'keep' action; enable it in env.actions")
    s = schedule_of(cfg)
    t = cfg.train
    if t.lr_schedule == "constant":  # built on a config the benchmark did not configure: say what it runs
        return SchedulePolicy(
            f"constant lr {t.lr:.3g} (train.lr_schedule=constant; the benchmark sets the schedule, {s['source']})"
        )
    return SchedulePolicy(
        f"lr {t.lr_schedule} from peak {t.lr:.3g}, warm-up {t.warmup_fraction:g} of the horizon, "
        f"final {t.lr_final_fraction:g} x peak ({s['source']})"
    )


register(
    ControllerSpec(
        "schedule",
        "episode",
        _schedule,
        "warm-up then linear/cosine lr decay to the horizon from a tuned peak (bench.schedule_file), keep every block",
        color="#9467bd",
        configure=configure,
    )
)

__all__ = ["TUNED_SCHEMA", "SchedulePolicy", "configure", "load_tuned", "read_tuned", "schedule_of", "with_schedule"]
