"""The per-process home of each thread's live objects: its ``EpisodeRuntime`` (data, model, optimizer) and
its controller, keyed by thread id.

Graph state holds only facts; nodes that need the model ask :func:`episode_runtime`. After a restart the
registry is empty, and the first node that needs the runtime rebuilds it from the run directory
(``EpisodeRuntime`` on an existing run directory restores the run's original config and its latest
complete training checkpoint). Secrets are resolved here once per process (the graph's entry point
when it runs inside ``langgraph dev`` or the API server), or set by the CLI with :func:`set_secrets`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graph.agents import api_key_name, make_agent
from sttrl.config import config_from_dict, secret
from sttrl.env.decision import Controller

if TYPE_CHECKING:  # torch loads when the first runtime is built, not when Studio imports the graph
    from sttrl.env.runtime import EpisodeRuntime

_RUNTIMES: dict[str, EpisodeRuntime] = {}
_CONTROLLERS: dict[str, tuple[tuple[str, str], Controller]] = {}
_LOCK = threading.Lock()
_SECRETS: dict[str, str | None] = {}


def set_secrets(**values: str | None) -> None:
    """Entry points (CLIs) hand over the secrets they resolved: ``hf_token=…``, ``api_key=…``."""
    _SECRETS.update(values)


def set_api_key(model: str, key: str | None) -> None:
    """The CLI hands over the LLM key it resolved for ``model``."""
    _SECRETS[f"api_key:{model}"] = key


def resolve_once(key: str, env_name: str | None) -> str | None:
    if key not in _SECRETS:  # resolved once per process, never stored in state or files
        _SECRETS[key] = secret(env_name) if env_name else None
    return _SECRETS[key]


def hf_token() -> str | None:
    return resolve_once("hf_token", "HF_TOKEN")


def episode_runtime(
    thread_id: str, config: dict[str, Any], run_dir: str | Path, progress: bool = False
) -> EpisodeRuntime:
    """The live ``EpisodeRuntime`` of ``thread_id``, built (or restored from ``run_dir``) on first use."""
    # torch: loaded with the first runtime, not when Studio imports the graph
    from sttrl.env.runtime import EpisodeRuntime

    with _LOCK:
        rt = _RUNTIMES.get(thread_id)
        if rt is not None and Path(rt.run_dir).resolve() == Path(run_dir).resolve():
            return rt
        cfg = config_from_dict(config)
        token = hf_token() if "hub" in (cfg.model.source, cfg.data.source) else None
        rt = EpisodeRuntime(cfg, run_dir, progress=progress, run_id=thread_id, hf_token=token)
        _RUNTIMES[thread_id] = rt
        return rt


def drop_episode_runtime(thread_id: str) -> None:
    """Forget ``thread_id``'s runtime (frees the model once the episode has ended)."""
    with _LOCK:
        _RUNTIMES.pop(thread_id, None)


def controller(thread_id: str, name: str, cfg: Any, model: str | None) -> Controller:
    """The controller ``name`` of ``thread_id``, built once per process (an LLM's key is resolved then)."""
    key = (name, model or "")
    with _LOCK:
        cached = _CONTROLLERS.get(thread_id)
        if cached is not None and cached[0] == key:
            return cached[1]
    api_key = resolve_once(f"api_key:{model}", api_key_name(model)) if name == "llm" and model else None
    built = make_agent(name, cfg, model, api_key=api_key)
    with _LOCK:
        _CONTROLLERS[thread_id] = (key, built)
    return built


def drop_controller(thread_id: str) -> None:
    with _LOCK:
        _CONTROLLERS.pop(thread_id, None)
