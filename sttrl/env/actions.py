"""The action registry: every action's name, meaning, pure ``apply``, bounds and whether the seed has it.

An action is added in one place: one :class:`ActionSpec` registered below (and, for the LLM's menu,
one line in ``prompts/actions.yaml``, which :func:`check_menu` checks against this registry when the
prompt is loaded). ``Action``, ``ALL_ACTIONS`` and ``SEED_ACTIONS`` are derived from the registry; an
action that carries state beyond the hyperparameters also needs the trainer to know it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING

from sttrl.errors import ConfigError
from sttrl.train.blocks import Hyperparams

if TYPE_CHECKING:  # config imports this module (for ALL_ACTIONS); the bounds are only read at call time
    from sttrl.config import TrainConfig


@dataclass(frozen=True)
class Applied:
    """The hyperparameters after an action, and whether a bound stopped it."""

    hp: Hyperparams
    clamped: bool  # the action hit a bound: the value moved less than asked, or not at all
    note: str


ApplyFn = Callable[[Hyperparams, "TrainConfig", int], Applied]


@dataclass(frozen=True)
class ActionSpec:
    """One action: ``apply(hp, train, max_freeze)`` is pure and clamps to the bounds it names."""

    name: str
    meaning: str
    apply: ApplyFn
    bounds: str = ""  # the config fields that bound it, for docs and errors
    in_seed: bool = True  # one of the seed's seven actions
    trains: bool = True  # False for ``stop``: the episode ends instead of training a block


REGISTRY: dict[str, ActionSpec] = {}


def register_action(spec: ActionSpec) -> ActionSpec:
    """Add ``spec`` to the registry (its name must be new)."""
    if spec.name in REGISTRY:
        raise ValueError(f"action {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


# ----- the actions -----------------------------------------------------------------------------
def _lr(up: bool) -> ApplyFn:
    def apply(hp: Hyperparams, train: TrainConfig, max_freeze: int) -> Applied:
        want = hp.lr * train.lr_factor if up else hp.lr / train.lr_factor
        got = min(max(want, train.lr_min), train.lr_max)
        clamped = abs(got - want) > 1e-15 * max(abs(want), 1.0)
        return Applied(replace(hp, lr=got), clamped, f"lr {hp.lr:.3g} -> {got:.3g}" + (" (clamped)" if clamped else ""))

    return apply


def _batch(up: bool) -> ApplyFn:
    def apply(hp: Hyperparams, train: TrainConfig, max_freeze: int) -> Applied:
        want = hp.batch_size * train.batch_factor if up else hp.batch_size // train.batch_factor
        got = min(max(want, train.batch_min), train.batch_max)
        clamped = got != want or want == 0
        note = f"batch {hp.batch_size} -> {got}" + (" (clamped)" if clamped else "")
        return Applied(replace(hp, batch_size=got), clamped, note)

    return apply


def _freeze(more: bool) -> ApplyFn:
    def apply(hp: Hyperparams, train: TrainConfig, max_freeze: int) -> Applied:
        want = hp.freeze_layers + (1 if more else -1)
        got = min(max(want, 0), max_freeze)
        clamped = got != want
        note = f"frozen encoder layers {hp.freeze_layers} -> {got}" + (" (clamped)" if clamped else "")
        return Applied(replace(hp, freeze_layers=got), clamped, note)

    return apply


def _unchanged(note: str) -> ApplyFn:
    def apply(hp: Hyperparams, train: TrainConfig, max_freeze: int) -> Applied:
        return Applied(hp, False, note)

    return apply


register_action(ActionSpec("keep", "train another block unchanged", _unchanged("unchanged"), in_seed=False))
register_action(ActionSpec("lr_up", "learning rate x train.lr_factor", _lr(True), "train.lr_max"))
register_action(ActionSpec("lr_down", "learning rate / train.lr_factor", _lr(False), "train.lr_min"))
register_action(ActionSpec("batch_up", "batch size x train.batch_factor", _batch(True), "train.batch_max"))
register_action(ActionSpec("batch_down", "batch size / train.batch_factor", _batch(False), "train.batch_min"))
register_action(ActionSpec("freeze_more", "freeze one more encoder layer", _freeze(True), "the model's encoder layers"))
register_action(ActionSpec("freeze_less", "unfreeze one encoder layer", _freeze(False), "0"))
register_action(
    ActionSpec("stop", "end the episode; the judge scores the current model", _unchanged("stop"), trains=False)
)

# ----- derived from the registry ---------------------------------------------------------------
Action = Enum("Action", [(name.upper(), name) for name in REGISTRY], type=str)  # type: ignore[misc]
Action.__doc__ = "What an agent may do between two training blocks (derived from the action registry)."
ALL_ACTIONS: tuple[str, ...] = tuple(REGISTRY)
SEED_ACTIONS: tuple[str, ...] = tuple(name for name, spec in REGISTRY.items() if spec.in_seed)


def spec_of(action: Action | str) -> ActionSpec:
    name = action.value if isinstance(action, Action) else str(action)
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown action {name!r}; valid: {list(ALL_ACTIONS)}") from None


def parse_action(value: str | int | Action, allowed: list[str] | tuple[str, ...]) -> Action:
    """An Action from its name or its index in ``allowed``; a clear ValueError otherwise."""
    if isinstance(value, Action):
        action = value
    elif isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(allowed):
            raise ValueError(f"action index {value} out of range 0..{len(allowed) - 1} for actions {list(allowed)}")
        action = Action(allowed[value])
    else:
        try:
            action = Action(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"unknown action {value!r}; valid: {list(allowed)}") from None
    if action.value not in allowed:
        raise ValueError(f"action {action.value!r} is not enabled; enabled: {list(allowed)}")
    return action


def apply(hp: Hyperparams, action: Action, train: TrainConfig, max_freeze: int) -> Applied:
    """Pure: the hyperparameters after ``action``, clamped to the bounds in ``train``."""
    return spec_of(action).apply(hp, train, max_freeze)


def check_menu(menu: Mapping[str, object], source: str) -> None:
    """A prompt's action menu must describe exactly the registered actions; the error names the difference."""
    missing = [a for a in ALL_ACTIONS if a not in menu]
    extra = [a for a in menu if a not in REGISTRY]
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {extra}"] if extra else [])
        raise ConfigError(
            f"{source}: {'; '.join(parts)}; it must have one line per registered action {list(ALL_ACTIONS)}"
        )
