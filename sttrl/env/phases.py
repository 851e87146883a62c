"""The facts of an episode that the loop (:mod:`sttrl.env.episode`) passes between its phases: what a controller
sees (:class:`Observation`), the episode between two steps (:class:`Progress`, which the LangGraph state keeps), a
decided step not yet trained (:class:`Pending`) and the typed result of each phase. Plain, serializable data:
nothing here holds a tensor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from sttrl.env.actions import spec_of
from sttrl.eval.result import EvalResult
from sttrl.outward.trajectory import StepRecord
from sttrl.train.blocks import BlockResult, Hyperparams

EndReason = Literal["stop", "budget"]


@dataclass(frozen=True, kw_only=True)
class Observation:
    """What a controller sees after a block (or at the start). ``to_dict`` is the plain form that policies,
    prompts and trajectory records use."""

    step: int
    steps_left: int
    global_step: int
    lr: float
    batch_size: int
    grad_accum: int
    freeze_layers: int
    max_freeze_layers: int
    train_loss: float | None
    val_loss: float | None  # teacher-forced validation loss after the block (sttrl.eval.loss); every block
    wer: float
    cer: float
    wer_step: int  # the step whose model ``wer``/``cer`` were measured on (env.eval_every: the last decoded one)
    best_wer: float
    previous_wer: float
    memory_gb: float
    memory_device: str
    memory_budget_gb: float | None  # an observable condition of the instance (null: no budget)
    status: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def observation(*, hp: Hyperparams, step: int, max_actions: int, **values: Any) -> dict[str, Any]:
    """The plain observation from the hyperparameters in force and the measured values (keyword-only)."""
    return Observation(step=step, steps_left=max_actions - step, **hp.to_dict(), **values).to_dict()  # type: ignore[arg-type]


@dataclass(kw_only=True)
class Progress:
    """The episode between two steps: decisions done, hyperparameters in force, WERs, the last observation."""

    step: int
    max_actions: int
    hp: Hyperparams
    previous_wer: float
    best_wer: float
    observation: dict[str, Any]
    spent: dict[str, float] = field(default_factory=lambda: {"samples": 0, "steps": 0, "evaluations": 1})

    @property
    def budget_spent(self) -> bool:
        return self.step >= self.max_actions

    def to_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "max_actions": self.max_actions,
            "hp": self.hp.to_dict(),
            "previous_wer": self.previous_wer,
            "best_wer": self.best_wer,
            "observation": self.observation,
            "spent": dict(self.spent),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Progress:
        return cls(
            step=state["step"],
            max_actions=state["max_actions"],
            hp=Hyperparams(**state["hp"]),
            previous_wer=state["previous_wer"],
            best_wer=state["best_wer"],
            observation=dict(state["observation"]),
            **({"spent": dict(state["spent"])} if state.get("spent") else {}),
        )


@dataclass(kw_only=True)
class Pending:
    """A decided step not yet trained: the action, who chose it and why, and the hyperparameters it sets."""

    step: int
    action: str
    rationale: str
    source: str
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    hp_before: dict[str, Any]
    hp_after: dict[str, Any]
    clamped: bool
    note: str
    seconds: float

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ValueError(f"step {self.step}: steps are numbered from 1")
        missing = {"lr", "batch_size", "grad_accum", "freeze_layers"} - set(self.hp_after)
        if missing:
            raise ValueError(f"hp_after lacks {sorted(missing)}")

    @property
    def trains(self) -> bool:
        return spec_of(self.action).trains

    @property
    def hp(self) -> Hyperparams:
        return Hyperparams(**self.hp_after)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pending:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ----- typed phase results ---------------------------------------------------------------------
@dataclass(frozen=True)
class Started:
    """The start phase: the first progress and the starting model's measurements (block 0)."""

    progress: Progress
    start: dict[str, Any]  # {"wer", "cer", "loss"}
    eval: EvalResult


@dataclass(frozen=True)
class Trained:
    """The train phase: the block's result and the checkpoint it wrote (``{block, path, sha256}``)."""

    result: BlockResult
    checkpoint: dict[str, Any]


@dataclass(frozen=True)
class Rewarded:
    """The reward phase: the step's trajectory record and the progress after it."""

    record: StepRecord
    progress: Progress


@dataclass(frozen=True)
class Finished:
    """The finish phase: why the episode ended, the ``stop`` step's record (None at a spent budget), the progress at
    the end and the saved final model (path, sha256, files)."""

    end_reason: EndReason
    record: StepRecord | None
    progress: Progress
    final: dict[str, Any]


@dataclass
class StepOutcome:
    """One whole step: what was decided, trained, measured and written; ``finished`` when the episode ended."""

    pending: Pending
    record: StepRecord
    progress: Progress
    train: BlockResult | None
    eval: EvalResult | None
    finished: Finished | None

    @property
    def terminated(self) -> bool:
        return self.finished is not None and self.finished.end_reason == "stop"

    @property
    def truncated(self) -> bool:
        return self.finished is not None and self.finished.end_reason == "budget"
