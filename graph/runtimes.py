"""The per-process home of each episode's heavy objects (data, model, optimizer), keyed by thread id.

Graph state holds only facts; nodes that need the model ask :func:`get_runtime`. After a restart the
registry is empty, and the first node that needs the runtime rebuilds it from the run directory:
``EpisodeRuntime`` on an existing run directory restores the run's original config and its latest
complete training checkpoint.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

_RUNTIMES: dict[str, Any] = {}
_LOCK = threading.Lock()


def get_runtime(thread_id: str, config: dict[str, Any], run_dir: str | Path, progress: bool = False) -> Any:
    """The live ``EpisodeRuntime`` of ``thread_id``, built (or restored from ``run_dir``) on first use."""
    from sttrl.config import config_from_dict
    from sttrl.runtime import EpisodeRuntime

    with _LOCK:
        rt = _RUNTIMES.get(thread_id)
        if rt is not None and Path(rt.run_dir).resolve() == Path(run_dir).resolve():
            return rt
        rt = EpisodeRuntime(config_from_dict(config), run_dir, progress=progress, run_id=thread_id)
        _RUNTIMES[thread_id] = rt
        return rt


def drop_runtime(thread_id: str) -> None:
    """Forget ``thread_id``'s runtime (frees the model once the episode has ended)."""
    with _LOCK:
        _RUNTIMES.pop(thread_id, None)


def live_threads() -> list[str]:
    with _LOCK:
        return sorted(_RUNTIMES)
