"""The controller registry: who decides an episode's actions, or runs its own trials, by name.

A controller is added with one class and one :func:`register` call. Two kinds:

- ``episode``: decides inside an episode, one action per step: ``decide(observation, history) -> Decided``.
  sttrl's classical policies (``sttrl.policies``), the learned controller (``sttrl.policy.controller``) and the
  LLM agents (``graph.agents``) register here.
- ``trials``: runs its own trials on the same budget (e.g. Optuna TPE); the benchmark calls its
  ``run(...)`` (``graph.bench``) instead of an episode loop.

The registry records what a controller needs (an API key, an optional package and the extra that
installs it) so every command line and the benchmark can refuse early with one clear line.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from sttrl.actions import Action
from sttrl.errors import ConfigError

Kind = Literal["episode", "trials"]


@dataclass
class Decided:
    """A decision with its provenance, as recorded in the trajectory (``source``)."""

    action: Action
    rationale: str
    source: str
    attempts: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["action"] = self.action.value
        return out


class Controller(Protocol):
    """An episode controller: the next action from the observation and the records so far."""

    name: str

    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided: ...


@dataclass(frozen=True)
class ControllerSpec:
    """A registered controller. ``factory(cfg, **options)`` builds it: for ``episode`` controllers the
    options are ``seed`` plus controller-specific ones (``model``, ``api_key``, ``chat_model``)."""

    name: str
    kind: Kind
    factory: Callable[..., Any]
    description: str
    needs_key: str | None = None  # an environment variable (or "by provider" for LLMs), resolved at entry points
    packages: tuple[str, ...] = ()  # import names that must be installed
    extra: str | None = None  # the pip extra that installs them
    color: str = "#7f7f7f"  # plots
    offline: bool = True  # runs with no network
    # episode controllers: adjusts the episode's config before it starts (after the instance is drawn), e.g.
    # ``schedule`` sets the trainer's per-step lr schedule; None leaves it as it is
    configure: Callable[[Any], Any] | None = None

    def missing_packages(self) -> list[str]:
        return [p for p in self.packages if importlib.util.find_spec(p) is None]


REGISTRY: dict[str, ControllerSpec] = {}


def register(spec: ControllerSpec) -> ControllerSpec:
    """Add ``spec`` (a name may be registered once; re-registering the same factory is a no-op)."""
    old = REGISTRY.get(spec.name)
    if old is not None and old.factory is not spec.factory:
        raise ValueError(f"controller {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def _builtins() -> None:
    """Register sttrl's own controllers (the classical policies, the learned one) on first use."""
    import sttrl.policies  # noqa: F401 - registers rule, random, static
    import sttrl.policy.controller  # noqa: F401 - registers learned (torch is imported only when it decides)
    import sttrl.schedule  # noqa: F401 - registers schedule


def names(kind: Kind | None = None) -> list[str]:
    _builtins()
    return sorted(n for n, s in REGISTRY.items() if kind is None or s.kind == kind)


def get(name: str, kind: Kind | None = None) -> ControllerSpec:
    """The spec of ``name``; a ConfigError lists the registered names, or says which extra to install."""
    _builtins()
    spec = REGISTRY.get(name)
    if spec is None or (kind is not None and spec.kind != kind):
        raise ConfigError(f"unknown controller {name!r}; valid: {', '.join(names(kind))}")
    missing = spec.missing_packages()
    if missing:
        how = f"pip install -e '.[{spec.extra}]'" if spec.extra else f"pip install {' '.join(missing)}"
        raise ConfigError(f"controller {name!r} needs {', '.join(missing)}: {how}")
    return spec


def make_controller(name: str, cfg: Any, **options: Any) -> Controller:
    """Build the episode controller ``name`` for ``cfg``."""
    return get(name, "episode").factory(cfg, **options)


def colors(controllers: Sequence[str]) -> Mapping[str, str]:
    return {c: REGISTRY[c].color if c in REGISTRY else "#7f7f7f" for c in controllers}
