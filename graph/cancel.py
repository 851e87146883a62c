"""Cancelling a training block from the LangGraph server (``runs.cancel``).

LangGraph runs a sync node in a worker thread; cancelling the run cancels the awaiting task but not the Python code
in that thread, so a cancelled run's block kept training inside the server. :func:`run_cancellable` runs the sync
node in a worker thread with a flag the node reads through :func:`check` at every optimizer step: on cancellation
it sets the flag, waits for the worker to let go of the model, then re-raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from langchain_core.runnables.config import run_in_executor


class TrainingCancelled(Exception):
    """The run was cancelled (``runs.cancel``) while its block trained: raised at the next optimizer step."""


# Set by ``run_cancellable`` (the server's path) for the worker thread; None on the CLI's sync path.
_CANCEL: ContextVar[threading.Event | None] = ContextVar("sttrl_train_cancel", default=None)


def check(where: str) -> None:
    """Raise :class:`TrainingCancelled` when the run that runs this code was cancelled."""
    flag = _CANCEL.get()
    if flag is not None and flag.is_set():
        raise TrainingCancelled(f"run cancelled at {where}")


async def run_cancellable(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a worker thread that :func:`check` can stop when this coroutine is cancelled."""
    stop = threading.Event()
    token = _CANCEL.set(stop)
    try:  # the task copies this context (with the flag) and run_in_executor copies it into the thread
        task = asyncio.ensure_future(run_in_executor(None, fn, *args))
    finally:
        _CANCEL.reset(token)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(BaseException):  # the worker's own end (cancelled, or failed): the run is cancelled
            await task
        raise
