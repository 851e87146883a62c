"""Graph state of one episode: only serializable facts (plain dicts, lists, strings, numbers).

The model, optimizer and data never enter the state; they live in a per-process runtime keyed by
thread id (``graph.live``) and are rebuilt from the run directory after a restart. The
LangGraph checkpointer persists this state after every node (``durability="sync"``), so a run
killed at any moment resumes from its thread id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from typing_extensions import TypedDict

from sttrl.env.decision import Controller


class EpisodeInput(TypedDict, total=False):
    """What starts an episode (the CLI fills it; in Studio, type it in the input form).

    Either ``config`` (a resolved config as a dict) or ``preset`` + ``config_file`` + ``overrides``
    (dotted ``key=value`` strings, as with ``--set``). ``agent`` is a registered episode controller
    (``rule`` by default; ``random``, ``static``, ``llm``…); ``model`` is the LLM's ``provider:model`` string.
    ``run_dir`` defaults to ``run.out_dir/<thread id>``. ``instance`` (a seed) draws the starting conditions from
    ``env.instances``.
    """

    preset: str
    config_file: str
    overrides: list[str]
    config: dict[str, Any]
    agent: str
    model: str
    run_dir: str
    instance: int


class EpisodeState(EpisodeInput, total=False):
    """Everything the episode knows between nodes.

    - ``step``: decisions completed (trajectory records written); the pending step is ``step + 1``.
    - ``hp``: the hyperparameters in force (after a fault they stay as the action set them).
    - ``start``: the starting model's validation WER/CER and loss (block 0).
    - ``observation``: the plain observation (``sttrl.env.episode.Observation``) after the last block.
    - ``decision``: the pending step's ``{step, action, rationale, source, attempts, errors,
      hp_before, hp_after, clamped, note, seconds}``; ``train``/``eval``: its results.
    - ``spent``: budget spent so far (training samples and steps attempted, evaluations).
    - ``records``: one trajectory record per completed step (also in ``trajectory.jsonl``).
    - ``checkpoints``: ``{block, path, sha256}`` of every block checkpoint written.
    - ``final``: the saved final model (path, sha256); ``judge``: the judge's report (summary).
    """

    thread_id: str
    run_id: str
    max_actions: int
    step: int
    hp: dict[str, Any]
    previous_wer: float
    best_wer: float
    start: dict[str, Any]
    observation: dict[str, Any]
    decision: dict[str, Any] | None
    train: dict[str, Any] | None
    eval: dict[str, Any] | None
    records: list[dict[str, Any]]
    spent: dict[str, Any]
    checkpoints: list[dict[str, Any]]
    final: dict[str, Any] | None
    judge: dict[str, Any] | None
    end_reason: str | None
    parent: dict[str, Any] | None  # a fork's parent: thread, step, run id, checkpoint hash (graph.fork)


class EpisodeOutput(TypedDict, total=False):
    """What a finished episode returns."""

    thread_id: str
    run_id: str
    run_dir: str
    step: int
    records: list[dict[str, Any]]
    final: dict[str, Any] | None
    judge: dict[str, Any] | None
    end_reason: str | None


@dataclass
class EpisodeContext:
    """Per-invocation, per-process objects (never persisted): an injected agent that replaces the one
    named in the state (tests, custom controllers), and whether sttrl shows its own progress bars."""

    agent: Controller | None = None
    progress: bool = False
