"""The OpenEnv action, observation and state of sttrl: typed pydantic models on openenv-core's bases.

An observation is what :class:`sttrl.env.episode.Observation` holds, plus the enabled actions, whether the action
was clamped, and at the end why the episode ended and the judge's report; ``reward`` and ``done`` are openenv's
fields. The state names the episode's thread (``episode_id``, also the run directory's name) and the current
block's training checkpoint, from which ``python -m graph.run --fork`` or :func:`sttrl.env.fork.fork_run_dir` can
start a new thread.
"""

from __future__ import annotations

from typing import Any

from openenv.core.env_server.types import Action, Observation, State
from pydantic import Field

from sttrl.env.actions import Action as ActionName


class SttrlAction(Action):
    """One decision: the action to apply before the next training block, why, and who decided."""

    action: ActionName = Field(description="A registered action; the server's config must enable it (env.actions).")
    rationale: str = Field("", max_length=2000, description="Why: recorded in the trajectory.")
    source: str = Field("openenv", pattern=r"^[A-Za-z0-9._-]{1,40}$", description="Who decided (the trajectory).")


class SttrlObservation(Observation):
    """The episode after the last block (or at the start); ``reward`` and ``done`` come with it."""

    step: int = 0
    steps_left: int = 0
    global_step: int = 0
    lr: float = 0.0
    batch_size: int = 0
    grad_accum: int = 1
    freeze_layers: int = 0
    max_freeze_layers: int = 0
    train_loss: float | None = None
    wer: float = 0.0
    cer: float = 0.0
    best_wer: float = 0.0
    previous_wer: float = 0.0
    memory_gb: float = 0.0
    memory_device: str = "cpu"
    memory_budget_gb: float | None = None
    status: str = "ok"
    actions: list[str] = Field(default_factory=list, description="The actions this server enables.")
    clamped: bool = False
    note: str = ""
    end_reason: str | None = Field(None, description="stop | budget once done.")
    judge: dict[str, Any] | None = Field(None, description="The judge's report on the hidden test split (at the end).")


class SttrlState(State):
    """The session's episode: its thread (``episode_id``), run directory, current checkpoint and return."""

    run_dir: str | None = None
    checkpoint: dict[str, Any] | None = Field(None, description="{block, path, sha256} of the current block.")
    done: bool = False
    end_reason: str | None = None
    total_reward: float = 0.0
    instance: dict[str, Any] | None = None
