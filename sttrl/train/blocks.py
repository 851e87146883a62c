"""What a training block takes, how it can end and what it returns: the hyperparameters an agent turns, the block
statuses, each optimizer step's progress and the block's result. Torch-free: graph state and tools read them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sttrl.config import TrainConfig

Status = Literal["ok", "oom", "nan", "diverged"]
STATUSES: tuple[Status, ...] = ("ok", "oom", "nan", "diverged")


@dataclass(frozen=True)
class Hyperparams:
    """The knobs an agent turns. Grad accumulation is part of the config, not an action."""

    lr: float
    batch_size: int
    grad_accum: int
    freeze_layers: int

    @classmethod
    def from_config(cls, train: TrainConfig, max_freeze: int) -> Hyperparams:
        return cls(train.lr, train.batch_size, train.grad_accum, min(train.freeze_layers, max_freeze))

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class StepInfo:
    """Progress of one optimizer step, for live displays."""

    global_step: int
    step_in_block: int
    steps_in_block: int
    loss: float
    lr: float
    samples_per_s: float


@dataclass
class BlockResult:
    status: Status
    steps: int  # optimizer steps kept (0 after a rollback)
    steps_attempted: int
    losses: list[float]
    mean_loss: float | None  # mean over kept steps; after a fault, the losses seen before rollback
    samples: int
    seconds: float
    samples_per_s: float
    peak_memory_gb: float
    memory_device: str
    global_step: int
    note: str = ""
    grad_norms: list[float] = field(default_factory=list)  # per step trained by this call, before clipping

    def to_dict(self) -> dict:
        return asdict(self)
