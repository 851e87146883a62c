"""Fork a LangGraph episode thread at a past step, with its training checkpoint (``python -m graph.run --fork``).

The new thread's state is the parent's state right after step ``step``'s ``reward`` node (found with
``get_state_history``), written to a fresh thread with ``update_state(..., as_node="reward")`` (``"setup"``
for step 0), so its next node is ``observe``. With an action, the decision is written too
(``as_node="decide"``) and the next node trains it. The run directory is forked by :mod:`sttrl.env.fork` (the
block checkpoint hard-linked), so training continues from the parent's weights, optimizer, RNG and data
cursor of that block: a fork that repeats the parent's next action ends with the parent's numbers.

Every check runs before anything is written: an unknown thread, a step outside its history, an action its
config does not enable, or a new thread id (or run directory) that exists are one-line ``ForkError``s.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sttrl.config import config_from_dict
from sttrl.env import episode
from sttrl.env.actions import Action
from sttrl.env.decision import Decided
from sttrl.errors import ForkError

FORK_SOURCE = "fork"


def _cfg(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def snapshot_after(compiled: Any, thread_id: str, step: int) -> Any:
    """The parent's checkpoint right after step ``step`` was recorded (next node: ``observe``)."""
    latest = compiled.get_state(_cfg(thread_id))
    if not latest.values:
        raise ForkError(f"unknown thread {thread_id!r}: it is not in this checkpointer (see --list)")
    done: list[int] = []
    for snap in compiled.get_state_history(_cfg(thread_id)):
        v = snap.values or {}
        at_step = tuple(snap.next) == ("observe",) and isinstance(v.get("step"), int) and v.get("run_dir")
        if at_step and len(v.get("records") or []) == v["step"]:
            done.append(v["step"])
            if v["step"] == step:
                return snap
    have = f"0..{max(done)}" if done else "none (its setup never finished)"
    raise ForkError(f"--at {step} is outside the history of thread {thread_id}: the steps it completed are {have}")


def fork(
    compiled: Any,
    parent_id: str,
    step: int,
    new_id: str,
    *,
    action: str | None = None,
    run_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Create thread ``new_id`` as the fork of ``parent_id`` after step ``step`` (next decision ``action``, or
    the agent's own when None); returns the new thread's state values. Nothing is written on an error."""
    # torch: sttrl.env.fork reads the block checkpoint; --list and --tree never load it
    from sttrl.env.fork import fork_run_dir

    if compiled.get_state(_cfg(new_id)).values:
        raise ForkError(f"thread {new_id!r} already exists: choose another --thread-id")
    snap = snapshot_after(compiled, parent_id, step)
    values = dict(snap.values)
    cfg = config_from_dict(values["config"])
    if action is not None and action not in cfg.env.actions:
        raise ForkError(
            f"--action {action!r} is not in the action set of thread {parent_id}: {', '.join(cfg.env.actions)}"
        )
    child_dir = Path(run_dir) if run_dir else Path(cfg.run.out_dir) / new_id
    parent_info = {"thread": parent_id, "checkpoint_id": snap.config["configurable"].get("checkpoint_id")}
    made = fork_run_dir(values["run_dir"], child_dir, step, values.get("records") or [], parent_info)
    try:
        values.update(
            thread_id=new_id,
            run_id=made["run_id"],
            run_dir=str(child_dir),
            checkpoints=[made["checkpoint"]],
            parent=made["parent"],
            final=None,
            judge=None,
            end_reason=None,
        )
        cfg_new = compiled.update_state(_cfg(new_id), values, as_node="reward" if step > 0 else "setup")
        if action is not None:
            progress = episode.Progress.from_state(values)
            obs = {**progress.observation, "step": progress.step, "steps_left": progress.max_actions - progress.step}
            progress.observation = obs
            why = f"forked from thread {parent_id} after step {step} with this action"
            pending = episode.pending(progress, Decided(Action(action), why, FORK_SOURCE), cfg)
            compiled.update_state(
                cfg_new,
                {
                    "observation": obs,
                    "decision": pending.to_dict(),
                    "hp": pending.hp_after,
                    "train": None,
                    "eval": None,
                },
                as_node="decide",
            )
    except BaseException:
        try:
            compiled.checkpointer.delete_thread(new_id)
        finally:
            shutil.rmtree(child_dir, ignore_errors=True)
        raise
    return compiled.get_state(_cfg(new_id)).values
