"""The action set and a pure ``apply`` that turns (hyperparameters, action) into new hyperparameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import Enum

from sttrl.config import TrainConfig


class Action(str, Enum):
    """What an agent may do between two training blocks."""

    KEEP = "keep"  # train another block unchanged (the seed lacks it; every controller needs it)
    LR_UP = "lr_up"  # learning rate x lr_factor (1.5)
    LR_DOWN = "lr_down"  # learning rate / lr_factor
    BATCH_UP = "batch_up"  # batch size x batch_factor (2)
    BATCH_DOWN = "batch_down"  # batch size / batch_factor
    FREEZE_MORE = "freeze_more"  # freeze one more encoder layer
    FREEZE_LESS = "freeze_less"  # unfreeze one encoder layer
    STOP = "stop"  # end the episode; the judge scores the last good model


@dataclass(frozen=True)
class Hyperparams:
    """The knobs an agent turns. Grad accumulation is part of the config, not an action."""

    lr: float
    batch_size: int
    grad_accum: int
    freeze_layers: int

    @classmethod
    def from_config(cls, train: TrainConfig, max_freeze: int) -> "Hyperparams":
        return cls(train.lr, train.batch_size, train.grad_accum, min(train.freeze_layers, max_freeze))

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Applied:
    hp: Hyperparams
    clamped: bool  # the action hit a bound: the value moved less than asked, or not at all
    note: str


def parse_action(value: "str | int | Action", allowed: list[str] | tuple[str, ...]) -> Action:
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
    if action is Action.LR_UP or action is Action.LR_DOWN:
        want = hp.lr * train.lr_factor if action is Action.LR_UP else hp.lr / train.lr_factor
        got = min(max(want, train.lr_min), train.lr_max)
        clamped = abs(got - want) > 1e-15 * max(abs(want), 1.0)
        return Applied(replace(hp, lr=got), clamped, f"lr {hp.lr:.3g} -> {got:.3g}" + (" (clamped)" if clamped else ""))
    if action is Action.BATCH_UP or action is Action.BATCH_DOWN:
        want = hp.batch_size * train.batch_factor if action is Action.BATCH_UP else hp.batch_size // train.batch_factor
        got = min(max(want, train.batch_min), train.batch_max)
        clamped = got != want or want == 0
        return Applied(
            replace(hp, batch_size=got), clamped, f"batch {hp.batch_size} -> {got}" + (" (clamped)" if clamped else "")
        )
    if action is Action.FREEZE_MORE or action is Action.FREEZE_LESS:
        want = hp.freeze_layers + (1 if action is Action.FREEZE_MORE else -1)
        got = min(max(want, 0), max_freeze)
        clamped = got != want
        return Applied(
            replace(hp, freeze_layers=got),
            clamped,
            f"frozen encoder layers {hp.freeze_layers} -> {got}" + (" (clamped)" if clamped else ""),
        )
    return Applied(hp, False, "unchanged" if action is Action.KEEP else "stop")
