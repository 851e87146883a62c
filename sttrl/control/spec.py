"""What a registered controller is (:class:`ControllerSpec`) and the table it is registered in.

A controller module registers itself here at import (one :func:`register` call beside its class); the catalogue
that callers use, :mod:`sttrl.control.registry`, imports the built-in controller modules and looks names up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sttrl import extras

Kind = Literal["episode", "trials"]


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
        return extras.missing(self.packages)


REGISTRY: dict[str, ControllerSpec] = {}


def register(spec: ControllerSpec) -> ControllerSpec:
    """Add ``spec`` (a name may be registered once; re-registering the same factory is a no-op)."""
    old = REGISTRY.get(spec.name)
    if old is not None and old.factory is not spec.factory:
        raise ValueError(f"controller {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec
