"""The evaluation-engine registry: one module per engine in this package, found by its name.

An engine is added with one module here, ``<name>.py``, that defines ``ENGINE = Engine("<name>", ...)`` (and its
test); ``train.eval_engine`` and ``python -m sttrl.judge --engine`` accept it from then on. Built in:
``transformers`` (``generate``) and ``ct2`` (CTranslate2, the current weights converted in memory).

Listing the names (what config validation does) reads this package's directory only: no engine module is imported,
so neither torch nor ctranslate2 loads until an engine evaluates. :func:`evaluate_with` is the one call of the
runtime and the judge.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sttrl.errors import ConfigError
from sttrl.train.exclusive import exclusive

if TYPE_CHECKING:  # types only: the registry is read at config time, which stays torch-free
    import torch

    from sttrl.config import Config
    from sttrl.eval.result import EvalResult
    from sttrl.train.features import FeatureStore

EvaluateFn = Callable[..., "EvalResult"]  # (cfg, store, device, per_utterance=False)
LabelFn = Callable[["Config", "torch.device"], str]


@dataclass(frozen=True)
class Engine:
    """One engine: ``evaluate(cfg, store, device)`` scores a feature store with the model it holds; ``label(cfg,
    device)`` is what the run record says (default: the name)."""

    name: str
    description: str
    evaluate: EvaluateFn
    label: LabelFn | None = None

    def label_for(self, cfg: Config, device: torch.device) -> str:
        return self.label(cfg, device) if self.label is not None else self.name


def names() -> list[str]:
    """The engines' names: the modules of this package (private ones, ``_*``, excepted); nothing is imported."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> Engine:
    """The engine ``name`` (its module is imported now); a ConfigError names the field and the valid engines."""
    valid = names()
    if name not in valid:
        raise ConfigError(f"train.eval_engine={name!r} is not an engine; valid: {', '.join(valid)}")
    engine = getattr(importlib.import_module(f"{__name__}.{name}"), "ENGINE", None)
    if not isinstance(engine, Engine) or engine.name != name:
        raise ConfigError(f"{__name__}.{name} must define ENGINE = Engine({name!r}, ...)")
    return engine


def engine_label(cfg: Config, device: torch.device) -> str:
    """``transformers`` or ``ct2/<compute type>``: what the run record and reports say the configured engine is."""
    return get(cfg.train.eval_engine).label_for(cfg, device)


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def evaluate_with(
    cfg: Config, store: FeatureStore, device: torch.device, engine: str | None = None, per_utterance: bool = False
) -> EvalResult:
    """Evaluate ``store`` with the configured engine (or ``engine``): the one call of the runtime and the judge
    (``per_utterance``: each utterance's errors too, see :func:`sttrl.eval.decode.evaluate`)."""
    return get(engine or cfg.train.eval_engine).evaluate(cfg, store, device, per_utterance=per_utterance)
