"""ONE episode step, used by both ways in: ``SttEnv.step`` (Gymnasium) and the LangGraph nodes.

A step is: decide → apply the action (pure) → train a block → evaluate → reward → trajectory record →
stop / save the final model. The graph runs each phase as its own checkpointed node; :class:`Episode`
chains the same functions for the Gymnasium path. Every phase is idempotent per step after a crash:
training and evaluation are cached per block by :class:`~sttrl.runtime.EpisodeRuntime`, a trajectory
append of a step already written is a no-op, and the final save overwrites atomically.

Between steps the episode is described by :class:`Progress`, plain serializable facts that the graph
keeps in its state; nothing here holds a tensor beyond the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sttrl.actions import Action, Hyperparams, apply, spec_of
from sttrl.config import Config
from sttrl.controllers import Controller, Decided, make_controller
from sttrl.reward import reward as reward_fn
from sttrl.trajectory import StepRecord, Trajectory

if TYPE_CHECKING:  # torch-free at import: LangGraph Studio imports the graph, which imports this module
    from sttrl.evaluate import EvalResult
    from sttrl.runtime import EpisodeRuntime
    from sttrl.trainer import BlockResult, StepInfo

TRAJECTORY = "trajectory.jsonl"


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
    wer: float
    cer: float
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
        return {"step": self.step, "max_actions": self.max_actions, "hp": self.hp.to_dict(),
                "previous_wer": self.previous_wer, "best_wer": self.best_wer, "observation": self.observation,
                "spent": dict(self.spent)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "Progress":
        return cls(step=state["step"], max_actions=state["max_actions"], hp=Hyperparams(**state["hp"]),
                   previous_wer=state["previous_wer"], best_wer=state["best_wer"], observation=dict(state["observation"]),
                   **({"spent": dict(state["spent"])} if state.get("spent") else {}))


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

    @property
    def trains(self) -> bool:
        return spec_of(self.action).trains

    @property
    def hp(self) -> Hyperparams:
        return Hyperparams(**self.hp_after)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Pending":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ----- the phases ------------------------------------------------------------------------------
def start(rt: EpisodeRuntime) -> tuple[Progress, dict[str, Any], EvalResult]:
    """Measure the starting model (validation WER/CER of block 0, loss on the next batch); the first Progress."""
    ev = rt.evaluate(0)
    loss = rt.probe_loss()
    hp = rt.initial_hp()
    max_actions = rt.cfg.env.max_actions
    obs = observation(hp=hp, step=0, max_actions=max_actions, global_step=rt.trainer.state.global_step,
                      max_freeze_layers=rt.max_freeze, train_loss=loss, wer=ev.wer, cer=ev.cer, best_wer=ev.wer,
                      previous_wer=ev.wer, memory_gb=rt.trainer.memory_gb(), memory_device=rt.device.type,
                      memory_budget_gb=rt.cfg.train.memory_budget_gb, status="ok")
    progress = Progress(step=0, max_actions=max_actions, hp=hp, previous_wer=ev.wer, best_wer=ev.wer, observation=obs)
    return progress, {"wer": ev.wer, "cer": ev.cer, "loss": loss}, ev


def pending(progress: Progress, decided: Decided, cfg: Config, seconds: float = 0.0) -> Pending:
    """Apply a decision to the hyperparameters in force (pure)."""
    before = progress.hp
    applied = apply(before, decided.action, cfg.train, int(progress.observation["max_freeze_layers"]))
    return Pending(step=progress.step + 1, action=decided.action.value, rationale=decided.rationale,
                   source=decided.source, attempts=decided.attempts, errors=list(decided.errors),
                   hp_before=before.to_dict(), hp_after=applied.hp.to_dict(), clamped=applied.clamped,
                   note=applied.note, seconds=seconds)


def decide(controller: Controller, progress: Progress, history: list[dict[str, Any]], cfg: Config) -> Pending:
    """Ask ``controller``; a failing controller or an action outside ``env.actions`` is replaced by the
    rule policy for this step (the trajectory says so in ``source``). The episode never crashes here."""
    t0 = time.perf_counter()
    try:
        decided = controller.decide(progress.observation, history)
        if not isinstance(decided.action, Action) or decided.action.value not in cfg.env.actions:
            raise ValueError(f"action {decided.action!r} is not one of the enabled actions {cfg.env.actions}")
    except Exception as exc:  # noqa: BLE001 - the controller must never crash the episode
        rule = make_controller("rule", cfg, seed=cfg.run.seed).decide(progress.observation, history)
        decided = Decided(rule.action, f"rule policy after the agent failed ({type(exc).__name__}: {exc}): "
                          f"{rule.rationale}", "fallback-rule", errors=[f"{type(exc).__name__}: {exc}"])
    return pending(progress, decided, cfg, time.perf_counter() - t0)


def train(rt: EpisodeRuntime, step: Pending, on_step: Callable[[StepInfo], None] | None = None) -> BlockResult:
    """Train the step's block (idempotent per block)."""
    return rt.train_block(step.step, step.hp, on_step=on_step)


def conclude(progress: Progress, step: Pending, train: Mapping[str, Any], ev: Mapping[str, Any], cfg: Config,
             run_id: str) -> tuple[StepRecord, Progress]:
    """Reward, new observation and the step's trajectory record, from the block's and evaluation's results."""
    r = reward_fn(progress.previous_wer, ev["wer"], train["status"], cfg.env.reward)
    best = min(progress.best_wer, ev["wer"])
    obs = observation(hp=step.hp, step=step.step, max_actions=progress.max_actions, global_step=train["global_step"],
                      max_freeze_layers=int(progress.observation["max_freeze_layers"]), train_loss=train["mean_loss"],
                      wer=ev["wer"], cer=ev["cer"], best_wer=best, previous_wer=progress.previous_wer,
                      memory_gb=train["peak_memory_gb"], memory_device=train["memory_device"],
                      memory_budget_gb=progress.observation.get("memory_budget_gb"), status=train["status"])
    timings = {"decide_seconds": step.seconds, "train_seconds": train["seconds"], "eval_seconds": ev["seconds"]}
    timings["step_seconds"] = sum(timings.values())
    was = progress.spent
    spent = {"samples": was["samples"] + train["samples"], "steps": was["steps"] + train["steps_attempted"],
             "evaluations": was["evaluations"] + 1}
    record = StepRecord(run_id=run_id, step=step.step, action=step.action, source=step.source,
                        rationale=step.rationale, clamped=step.clamped, hp_before=step.hp_before,
                        hp_after=step.hp_after, status=train["status"], reward=r, observation=obs, train=dict(train),
                        eval=dict(ev), timings=timings, spent=spent, instance=cfg.env.instance)
    after = Progress(step=step.step, max_actions=progress.max_actions, hp=step.hp, previous_wer=ev["wer"],
                     best_wer=best, observation=obs, spent=spent)
    return record, after


def conclude_stop(progress: Progress, step: Pending, run_id: str,
                  instance: dict[str, Any] | None = None) -> tuple[StepRecord, Progress]:
    """The record of a ``stop`` step: nothing trained, reward 0."""
    obs = {**progress.observation, "step": step.step, "steps_left": progress.max_actions - step.step}
    record = StepRecord(run_id=run_id, step=step.step, action=step.action, source=step.source,
                        rationale=step.rationale, clamped=False, hp_before=step.hp_before, hp_after=step.hp_after,
                        status="ok", reward=0.0, observation=obs,
                        timings={"decide_seconds": step.seconds, "step_seconds": step.seconds},
                        spent=dict(progress.spent), instance=instance)
    after = Progress(step=step.step, max_actions=progress.max_actions, hp=progress.hp,
                     previous_wer=progress.previous_wer, best_wer=progress.best_wer, observation=obs,
                     spent=dict(progress.spent))
    return record, after


def append(run_dir: str | Path, record: StepRecord) -> dict[str, Any]:
    """Append the record to the run's trajectory (a no-op for a step already written); its plain form."""
    Trajectory(Path(run_dir) / TRAJECTORY).append(record)
    return record.model_dump(mode="json", by_alias=True)


def sync_trajectory(run_dir: str | Path, records: list[dict[str, Any]]) -> bool:
    """Make ``trajectory.jsonl`` hold exactly ``records`` (the graph state's, the source of truth), one line per
    step in order; rewritten atomically when it differs (a torn, cut or edited file). True if rewritten."""
    import json

    from sttrl.io import atomic_write_text

    path = Path(run_dir) / TRAJECTORY
    want = "".join(json.dumps(r, sort_keys=False) + "\n" for r in records)
    try:
        have: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        have = None
    if have == want or (have is None and not records):
        return False
    atomic_write_text(path, want)
    return True


# ----- the whole step, for the Gymnasium path ---------------------------------------------------
@dataclass
class StepOutcome:
    pending: Pending
    record: StepRecord
    progress: Progress
    train: BlockResult | None
    eval: EvalResult | None
    terminated: bool
    truncated: bool
    final: dict[str, Any] | None


class Episode:
    """The phases above chained for one runtime: ``start()`` then ``step(decided)`` until it ends."""

    def __init__(self, rt: EpisodeRuntime) -> None:
        self.rt = rt
        self.progress: Progress | None = None

    def start(self) -> tuple[Progress, dict[str, Any], EvalResult]:
        self.progress, start_info, ev = start(self.rt)
        return self.progress, start_info, ev

    def step(self, decided: Decided, seconds: float = 0.0,
             on_step: Callable[[StepInfo], None] | None = None) -> StepOutcome:
        if self.progress is None:
            raise RuntimeError("call start() first")
        rt, cfg = self.rt, self.rt.cfg
        step = pending(self.progress, decided, cfg, seconds)
        tr = ev = None
        if step.trains:
            tr = train(rt, step, on_step)
            ev = rt.evaluate(step.step)
            record, after = conclude(self.progress, step, tr.to_dict(), ev.to_dict(), cfg, rt.run_id)
        else:
            record, after = conclude_stop(self.progress, step, rt.run_id, cfg.env.instance)
        append(rt.run_dir, record)
        self.progress = after
        terminated = not step.trains
        truncated = not terminated and after.budget_spent
        final = rt.save_final() if terminated or truncated else None
        return StepOutcome(step, record, after, tr, ev, terminated, truncated, final)
