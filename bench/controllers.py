"""Registers every controller the benchmark can run (importing this module is the registration).

Episode controllers (``static``, ``random``, ``rule``, ``schedule``, …) are registered by ``sttrl.control``; the LLM
controller by ``graph.agents``; the benchmark's trials controllers (``tpe``/``optuna``, ``sha``, ``pbt``,
``lookahead``, ``oracle``) by their modules here. The benchmark's driver and every worker process import it, so
the registry is the same wherever a run executes.
"""

from __future__ import annotations

from collections.abc import Sequence

import bench.hybrid  # registers hybrid
import bench.lookahead  # registers lookahead
import bench.oracle  # registers oracle
import bench.pbt  # registers pbt
import bench.sha  # registers sha
import bench.tpe  # noqa: F401 - registers tpe (and its alias optuna)
import graph.agents  # noqa: F401 - registers llm
from sttrl.control import registry as registry
from sttrl.errors import ConfigError

ALIASES = ("optuna",)  # another name of tpe: never a suite's contestant twice


def check_controllers(controllers: Sequence[str]) -> None:
    """A one-line ConfigError for names that are not registered, listing the registered ones."""
    unknown = [c for c in controllers if c not in registry.names()]
    if unknown:
        raise ConfigError(f"unknown controllers {unknown}; valid: {', '.join(registry.names())}")


def registered() -> list[str]:
    """Every registered controller but aliases."""
    return [c for c in registry.names() if c not in ALIASES]
