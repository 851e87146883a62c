"""The controller registry: who decides an episode's actions, or runs its own trials, by name.

A controller is added with one class and one :func:`~sttrl.control.spec.register` call in its module (a module
outside this package is imported by whoever uses it: ``graph.agents`` registers the LLM agents, ``bench`` the
trials controllers; a new built-in module is added to the imports below). Two kinds:

- ``episode``: decides inside an episode, one action per step: ``decide(observation, history) -> Decided``.
  sttrl's classical policies (``sttrl.control.classical``), the learned controller (``sttrl.policy.controller``) and the
  LLM agents (``graph.agents``) register here.
- ``trials``: runs its own trials on the same budget (e.g. Optuna TPE); the benchmark calls its
  ``run(...)`` (``bench``) instead of an episode loop.

The registry records what a controller needs (an API key, an optional package and the extra that
installs it) so every command line and the benchmark can refuse early with one clear line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sttrl import extras
from sttrl.control import (  # noqa: F401 - importing them registers rule, random, static, schedule, contextual
    classical,
    contextual,
    schedule,
)
from sttrl.control.spec import REGISTRY, ControllerSpec, Kind
from sttrl.env.decision import Controller
from sttrl.env.instances import apply as apply_instance
from sttrl.errors import ConfigError, MissingExtraError
from sttrl.policy import controller as _learned  # noqa: F401 - registers learned (torch loads when it decides)


def names(kind: Kind | None = None) -> list[str]:
    return sorted(n for n, s in REGISTRY.items() if kind is None or s.kind == kind)


def get(name: str, kind: Kind | None = None) -> ControllerSpec:
    """The spec of ``name``; a ConfigError lists the registered names, or says which extra to install."""
    spec = REGISTRY.get(name)
    if spec is None or (kind is not None and spec.kind != kind):
        raise ConfigError(f"unknown controller {name!r}; valid: {', '.join(names(kind))}")
    missing = spec.missing_packages()
    if missing and spec.extra:
        raise MissingExtraError(extras.message(spec.extra, f"controller {name!r}"))
    if missing:
        raise ConfigError(f"controller {name!r} needs {', '.join(missing)}: pip install {' '.join(missing)}")
    return spec


def make_controller(name: str, cfg: Any, **options: Any) -> Controller:
    """Build the episode controller ``name`` for ``cfg``."""
    return get(name, "episode").factory(cfg, **options)


def colors(controllers: Sequence[str]) -> Mapping[str, str]:
    return {c: REGISTRY[c].color if c in REGISTRY else "#7f7f7f" for c in controllers}


def episode_config(cfg: Any, controller: str, instance: int | None = None) -> Any:
    """The config an episode of ``controller`` runs with: the instance drawn from ``env.instances`` by its seed, then
    the controller's own adjustment (``configure``: e.g. ``schedule`` sets the trainer's lr schedule)."""
    if instance is not None:
        if cfg.env.instances is None:
            raise ConfigError("an instance seed needs env.instances in the config (the distribution to draw from)")
        cfg = apply_instance(cfg, int(instance))
    spec = REGISTRY.get(controller)
    return spec.configure(cfg) if spec is not None and spec.configure is not None else cfg
