"""The ONE episode loop and its typed phases; every way in runs these and nothing else.

A step is: decide → apply the action (pure) → **train** a block → **evaluate** → **reward** (the new observation and
the step's record) → **append** (trajectory file, then sinks and trackers) → **finish** when ``stop`` was decided or
the budget is spent (the stop record, the final model for the judge). :meth:`Episode.step` chains the phases for one
decision, :meth:`Episode.run` runs a whole episode with a controller. The Gymnasium env (``SttEnv.step``) calls
:meth:`Episode.step`; the LangGraph episode runs each phase as its own checkpointed node (``graph.nodes``: a node
converts state to a phase's arguments and its typed result back to state); the lookahead controller calls
:meth:`Episode.step` with a probe to continue from.

Every phase is idempotent per step after a crash: training and evaluation are cached per block by
:class:`~sttrl.env.runtime.EpisodeRuntime`, appending a step already written is a no-op, and the final save
overwrites atomically. Between steps the episode is described by :class:`~sttrl.env.phases.Progress`: plain
serializable facts that the graph keeps in its state; the phases' typed results are in :mod:`sttrl.env.phases` too.
Nothing here holds a tensor beyond the runtime.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sttrl.config import Config
from sttrl.env.actions import Action, apply
from sttrl.env.decision import Controller, Decided
from sttrl.env.phases import (
    Finished,
    Observation,
    Pending,
    Progress,
    Rewarded,
    Started,
    StepOutcome,
    Trained,
    observation,
)
from sttrl.env.reward import reward as reward_fn
from sttrl.eval.result import EvalResult
from sttrl.io import atomic_write_text
from sttrl.outward.publish import publish_step
from sttrl.outward.trajectory import StepRecord, Trajectory
from sttrl.rundir import TRAJECTORY
from sttrl.train.blocks import BlockResult, StepInfo

if TYPE_CHECKING:  # torch-free at import: LangGraph Studio imports the graph, which imports this module
    from sttrl.env.runtime import EpisodeRuntime

__all__ = [  # the phases' facts live in sttrl.env.phases; callers reach them through this module as well
    "Episode",
    "Finished",
    "Observation",
    "Pending",
    "Progress",
    "Rewarded",
    "Started",
    "StepOutcome",
    "Trained",
    "append",
    "conclude",
    "conclude_stop",
    "decide",
    "observation",
    "pending",
    "sync_trajectory",
]


# ----- pure steps ------------------------------------------------------------------------------
def pending(progress: Progress, decided: Decided, cfg: Config, seconds: float = 0.0) -> Pending:
    """Apply a decision to the hyperparameters in force (pure)."""
    before = progress.hp
    applied = apply(before, decided.action, cfg.train, int(progress.observation["max_freeze_layers"]))
    return Pending(
        step=progress.step + 1,
        action=decided.action.value,
        rationale=decided.rationale,
        source=decided.source,
        attempts=decided.attempts,
        errors=list(decided.errors),
        hp_before=before.to_dict(),
        hp_after=applied.hp.to_dict(),
        clamped=applied.clamped,
        note=applied.note,
        seconds=seconds,
    )


def decide(
    controller: Controller, progress: Progress, history: list[dict[str, Any]], cfg: Config, fallback: Controller
) -> Pending:
    """Ask ``controller``; a failing controller or an action outside ``env.actions`` is replaced by ``fallback``
    for this step (the trajectory says so in ``source``: ``fallback-<name>``). The episode never crashes here."""
    t0 = time.perf_counter()
    try:
        decided = controller.decide(progress.observation, history)
        if not isinstance(decided.action, Action) or decided.action.value not in cfg.env.actions:
            raise ValueError(f"action {decided.action!r} is not one of the enabled actions {cfg.env.actions}")
    except Exception as exc:  # noqa: BLE001 - any controller failure becomes the fallback's decision, never a crash
        alt = fallback.decide(progress.observation, history)
        error = f"{type(exc).__name__}: {exc}"
        decided = Decided(
            alt.action,
            f"{fallback.name} policy after the agent failed ({error}): {alt.rationale}",
            f"fallback-{fallback.name}",
            errors=[error],
        )
    return pending(progress, decided, cfg, time.perf_counter() - t0)


def conclude(
    progress: Progress, step: Pending, train: BlockResult, ev: EvalResult, cfg: Config, run_id: str
) -> Rewarded:
    """Reward, new observation and the step's trajectory record, from the block's and evaluation's results."""
    r = reward_fn(progress.previous_wer, ev.wer, train.status, cfg.env.reward)  # a carried WER: no gain
    best = min(progress.best_wer, ev.wer)
    obs = observation(
        hp=step.hp,
        step=step.step,
        max_actions=progress.max_actions,
        global_step=train.global_step,
        max_freeze_layers=int(progress.observation["max_freeze_layers"]),
        train_loss=train.mean_loss,
        val_loss=ev.val_loss,
        wer=ev.wer,
        cer=ev.cer,
        wer_step=ev.wer_measured_after(step.step),
        best_wer=best,
        previous_wer=progress.previous_wer,
        memory_gb=train.peak_memory_gb,
        memory_device=train.memory_device,
        memory_budget_gb=progress.observation.get("memory_budget_gb"),
        status=train.status,
    )
    timings = {
        "decide_seconds": step.seconds,
        "train_seconds": train.seconds,
        "eval_seconds": ev.seconds + ev.loss_seconds,
    }
    timings["step_seconds"] = sum(timings.values())
    was = progress.spent
    spent = {
        "samples": was["samples"] + train.samples,
        "steps": was["steps"] + train.steps_attempted,
        "evaluations": was["evaluations"] + int(ev.wer_block is None),  # WER decodes (the loss is measured every block)
    }
    record = StepRecord(
        run_id=run_id,
        step=step.step,
        action=step.action,
        source=step.source,
        rationale=step.rationale,
        clamped=step.clamped,
        hp_before=step.hp_before,
        hp_after=step.hp_after,
        status=train.status,
        reward=r,
        observation=obs,
        train=train.to_dict(),
        eval=ev.to_dict(),
        timings=timings,
        spent=spent,
        instance=cfg.env.instance,
    )
    after = Progress(
        step=step.step,
        max_actions=progress.max_actions,
        hp=step.hp,
        previous_wer=ev.wer,
        best_wer=best,
        observation=obs,
        spent=spent,
    )
    return Rewarded(record, after)


def conclude_stop(progress: Progress, step: Pending, run_id: str, instance: dict[str, Any] | None = None) -> Rewarded:
    """The record of a ``stop`` step: nothing trained, reward 0."""
    obs = {**progress.observation, "step": step.step, "steps_left": progress.max_actions - step.step}
    record = StepRecord(
        run_id=run_id,
        step=step.step,
        action=step.action,
        source=step.source,
        rationale=step.rationale,
        clamped=False,
        hp_before=step.hp_before,
        hp_after=step.hp_after,
        status="ok",
        reward=0.0,
        observation=obs,
        timings={"decide_seconds": step.seconds, "step_seconds": step.seconds},
        spent=dict(progress.spent),
        instance=instance,
    )
    after = Progress(
        step=step.step,
        max_actions=progress.max_actions,
        hp=progress.hp,
        previous_wer=progress.previous_wer,
        best_wer=progress.best_wer,
        observation=obs,
        spent=dict(progress.spent),
    )
    return Rewarded(record, after)


def append(run_dir: str | Path, record: StepRecord) -> dict[str, Any]:
    """Append the record to the run's trajectory (a no-op for a step already written), then hand a newly written
    step to the run's sink and tracker (returns at once, never raises); the record's plain form."""
    if Trajectory(Path(run_dir) / TRAJECTORY).append(record):
        publish_step(Path(run_dir), record)
    return record.model_dump(mode="json", by_alias=True)


def sync_trajectory(run_dir: str | Path, records: list[dict[str, Any]]) -> bool:
    """Make ``trajectory.jsonl`` hold exactly ``records`` (the graph state's, the source of truth), one line per
    step in order; rewritten atomically when it differs (a torn, cut or edited file). True if rewritten."""
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


# ----- the loop --------------------------------------------------------------------------------
class Episode:
    """One episode over one runtime: the phases as methods, :meth:`step` for one decision, :meth:`run` for all."""

    def __init__(self, rt: EpisodeRuntime, progress: Progress | None = None) -> None:
        self.rt = rt
        self.progress = progress

    @property
    def cfg(self) -> Config:
        return self.rt.cfg

    # ----- phases ------------------------------------------------------------------------------
    def start(self) -> Started:
        """Measure the starting model (validation WER/CER and loss of block 0, training loss on the next batch); the
        first Progress."""
        rt = self.rt
        ev = rt.evaluate(0)
        loss = rt.probe_loss()
        hp = rt.initial_hp()
        max_actions = rt.cfg.env.max_actions
        obs = observation(
            hp=hp,
            step=0,
            max_actions=max_actions,
            global_step=rt.trainer.state.global_step,
            max_freeze_layers=rt.max_freeze,
            train_loss=loss,
            val_loss=ev.val_loss,
            wer=ev.wer,
            cer=ev.cer,
            wer_step=0,
            best_wer=ev.wer,
            previous_wer=ev.wer,
            memory_gb=rt.trainer.memory_gb(),
            memory_device=rt.device.type,
            memory_budget_gb=rt.cfg.train.memory_budget_gb,
            status="ok",
        )
        self.progress = Progress(
            step=0, max_actions=max_actions, hp=hp, previous_wer=ev.wer, best_wer=ev.wer, observation=obs
        )
        return Started(self.progress, {"wer": ev.wer, "cer": ev.cer, "loss": loss}, ev)

    def train(
        self, step: Pending, on_step: Callable[[StepInfo], None] | None = None, continue_from: Path | None = None
    ) -> Trained:
        """Train the step's block (idempotent per block); ``continue_from``: a probe of it to continue."""
        result = self.rt.train_block(step.step, step.hp, on_step=on_step, continue_from=continue_from)
        return Trained(result, self.rt.checkpoint_info(step.step))

    def evaluate(self, step: Pending | int, last: bool = False) -> EvalResult:
        """Validation loss after the step's block, and its WER/CER when ``env.eval_every`` decodes this block or the
        episode ends after it (``last``); otherwise the last measured WER is carried (cached per block)."""
        block = step if isinstance(step, int) else step.step
        return self.rt.evaluate(block, wer=self.cfg.env.wer_due(block, last))

    def reward(self, progress: Progress, step: Pending, train: BlockResult, ev: EvalResult) -> Rewarded:
        """The step's reward, observation and record (pure; see :func:`conclude`)."""
        return conclude(progress, step, train, ev, self.cfg, self.rt.run_id)

    def append(self, record: StepRecord) -> dict[str, Any]:
        """Write the step to the trajectory and publish it (see :func:`append`)."""
        return append(self.rt.run_dir, record)

    def finish(self, progress: Progress, stop: Pending | None = None) -> Finished:
        """End the episode: record the ``stop`` step when that was the decision, then save the final model."""
        rewarded = conclude_stop(progress, stop, self.rt.run_id, self.cfg.env.instance) if stop else None
        if rewarded is not None:
            self.append(rewarded.record)
            progress = rewarded.progress
        final = self.rt.save_final()
        return Finished("stop" if stop else "budget", rewarded.record if rewarded else None, progress, final)

    # ----- chained ----------------------------------------------------------------------------
    def step(
        self,
        decided: Decided,
        seconds: float = 0.0,
        on_step: Callable[[StepInfo], None] | None = None,
        continue_from: Path | None = None,
        last: bool = False,
    ) -> StepOutcome:
        """One decision through every phase (see :meth:`advance`)."""
        if self.progress is None:
            raise RuntimeError("call start() first")
        return self.advance(pending(self.progress, decided, self.cfg, seconds), on_step, continue_from, last)

    def advance(
        self,
        step: Pending,
        on_step: Callable[[StepInfo], None] | None = None,
        continue_from: Path | None = None,
        last: bool = False,
    ) -> StepOutcome:
        """Train, evaluate, reward and append a decided step, and finish the episode at ``stop`` or a spent budget.
        ``last``: finish after this block although decisions are left (a controller whose sample budget ran out)."""
        if self.progress is None:
            raise RuntimeError("call start() first")
        if not step.trains:
            finished = self.finish(self.progress, stop=step)
            assert finished.record is not None
            self.progress = finished.progress
            return StepOutcome(step, finished.record, finished.progress, None, None, finished)
        trained = self.train(step, on_step, continue_from)
        ev = self.evaluate(step, last)
        rewarded = self.reward(self.progress, step, trained.result, ev)
        self.append(rewarded.record)
        self.progress = rewarded.progress
        finished = self.finish(self.progress) if last or self.progress.budget_spent else None
        return StepOutcome(step, rewarded.record, self.progress, trained.result, ev, finished)

    def run(
        self, controller: Controller, fallback: Controller, on_outcome: Callable[[StepOutcome], None] | None = None
    ) -> list[StepOutcome]:
        """A whole episode: start (unless started), then decide and step until ``stop`` or the budget is spent."""
        if self.progress is None:
            self.start()
        outcomes: list[StepOutcome] = []
        history: list[dict[str, Any]] = []
        while True:
            assert self.progress is not None
            outcome = self.advance(decide(controller, self.progress, history, self.cfg, fallback))
            outcomes.append(outcome)
            history.append(outcome.record.model_dump(mode="json", by_alias=True))
            if on_outcome:
                on_outcome(outcome)
            if outcome.finished is not None:
                return outcomes
