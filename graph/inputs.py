"""What an episode input may name when it comes through the LangGraph server (Studio, ``langgraph dev``, the API).

A server takes inputs from whoever reaches its port, so every filesystem path an input names must lie inside the
server's roots, after symlinks are resolved:

- ``STTRL_SERVER_ROOT`` (default ``./runs`` of the server's working directory): run directories (``run_dir``,
  ``run.out_dir``, which defaults to it on the server), file sinks and trackers, model directories of
  ``--agent learned`` or ``local:`` models, any other path field of the config;
- ``STTRL_SERVER_CACHE`` (default ``./.cache/sttrl``): the data cache (``data.cache_dir``, which defaults to it on
  the server), which may also hold models;
- ``STTRL_SERVER_CONFIG_DIR`` (unset: none): the only directory a ``config_file`` is read from, named relative to it.
  Without it a server input carries its config inline (``config``, ``preset``, ``overrides``).

``run.sink=env:VAR`` (it reads the server's environment) is refused too. A refused input is a
:class:`ServerInputError` whose message names the field and the root, never a file's content. The checks run twice:
in the custom auth's ``threads.create_run`` handler (``graph/auth.py``: a 403 before a run exists) and in every node
that touches files (state written through ``update_state`` passes no handler).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langgraph.config import get_config

from sttrl.config import Config, config_from_dict, load_config, parse_override, path_fields
from sttrl.errors import ConfigError

ROOT_VARIABLE = "STTRL_SERVER_ROOT"
CACHE_VARIABLE = "STTRL_SERVER_CACHE"
CONFIG_DIR_VARIABLE = "STTRL_SERVER_CONFIG_DIR"
PATH_LIKE_URLS = ("file://", "sqlite:///", "local://")


class ServerInputError(ConfigError):
    """A server input names a path outside the server's roots, or a config file the server does not serve."""


def roots() -> tuple[Path, Path]:
    """The server's run root and data cache root (absolute, symlinks resolved)."""
    run_root = Path(os.environ.get(ROOT_VARIABLE) or "runs")
    cache_root = Path(os.environ.get(CACHE_VARIABLE) or ".cache/sttrl")
    return run_root.expanduser().resolve(), cache_root.expanduser().resolve()


def on_server() -> bool:
    """Whether the running graph was started by the LangGraph server (it puts ``graph_id`` into every run's
    configurable; the CLI and the benchmark do not, and a client cannot take it out)."""
    try:
        return "graph_id" in (get_config().get("configurable") or {})
    except RuntimeError:  # not inside a runnable
        return False


def check_path(field: str, value: str | os.PathLike[str]) -> None:
    """Refuse ``value`` unless it lies inside the run root or the data cache root."""
    resolved = Path(os.path.expanduser(os.fspath(value))).resolve()
    run_root, cache_root = roots()
    if not (resolved.is_relative_to(run_root) or resolved.is_relative_to(cache_root)):
        raise ServerInputError(
            f"{field} {os.fspath(value)!r} is outside the server's run root {run_root} ({ROOT_VARIABLE}) and data "
            f"cache {cache_root} ({CACHE_VARIABLE}); a server input may only name paths inside them"
        )


def _url_path(url: str) -> str | None:
    for prefix in PATH_LIKE_URLS:
        if url.startswith(prefix):
            return url[len(prefix) - 1 :] if prefix == "sqlite:///" else url[len(prefix) :]
    return None


def check_config(cfg: Config) -> None:
    """Every path field of ``cfg`` (and a local model, file sink or file tracker) inside the server's roots."""
    for field, value in path_fields(cfg):
        check_path(field, value)
    if cfg.model.source == "local":
        check_path("model.name", cfg.model.name)
    sink = cfg.run.sink or ""
    if sink.startswith("env:"):
        raise ServerInputError("run.sink=env:… reads the server's environment: a server input names its sink URL")
    if (path := _url_path(sink)) is not None:
        check_path("run.sink", path)
    uri = cfg.run.tracker_uri
    if uri:
        path = _url_path(uri) if "://" in uri else uri
        if path is not None:
            check_path("run.tracker_uri", path)


def check_agent_model(agent: str, model: str | None) -> None:
    """A model that names a file or directory (``--agent learned``, ``local:PATH``) inside the server's roots."""
    if not model:
        return
    if agent == "learned":
        check_path("model", model)
    elif model.startswith("local:"):
        name = model.split(":", 1)[1].split("?", 1)[0]
        # sttrl.llm.local.resolve_model's reading: a hub id (org/name) is not a path
        looks_like_path = name.startswith(("/", ".", "~")) or name.endswith(".gguf") or name.count("/") > 1
        if looks_like_path or Path(name).expanduser().exists():
            check_path("model", name)


def config_file(name: str) -> Path:
    """The config file ``name`` from ``STTRL_SERVER_CONFIG_DIR`` (relative to it); nothing else is read."""
    folder = os.environ.get(CONFIG_DIR_VARIABLE)
    if not folder:
        raise ServerInputError(
            f"config_file is not served here ({CONFIG_DIR_VARIABLE} is not set): send the config inline "
            "(config, or preset and overrides)"
        )
    base = Path(folder).expanduser().resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise ServerInputError(f"config_file {name!r} is outside the server's config directory ({CONFIG_DIR_VARIABLE})")
    return path


def _server_defaults() -> dict[str, Any]:
    """What a server input starts from: runs under the run root, data in the data cache (an input may move them
    within the roots)."""
    run_root, cache_root = roots()
    return {"run": {"out_dir": str(run_root)}, "data": {"cache_dir": str(cache_root)}}


def resolve_input(state: Mapping[str, Any]) -> Config:
    """The config of a server input, its config file read only from the config directory; every path checked."""
    if state.get("config"):
        cfg = config_from_dict(state["config"])
    else:
        name = state.get("config_file")
        cfg = load_config(
            state.get("preset") or "cpu",
            config_file(str(name)) if name else None,
            list(state.get("overrides") or []),
            base=_server_defaults(),
        )
    check_config(cfg)
    return cfg


def check_state(state: Mapping[str, Any]) -> None:
    """The paths a thread's state names (run directory, config, agent model) inside the server's roots."""
    if state.get("run_dir"):
        check_path("run_dir", state["run_dir"])
    if state.get("config"):
        check_config(config_from_dict(state["config"]))
    check_agent_model(state.get("agent") or "rule", state.get("model"))


def check_raw_input(inp: Mapping[str, Any]) -> None:
    """What can be checked of a run's input before the run exists (without reading any file): the paths it names,
    a config file's place. A config that does not validate is left to the run's own error."""
    if not isinstance(inp, Mapping) or not inp:  # no input: the run resumes its thread (checked in the graph)
        return
    if inp.get("run_dir"):
        check_path("run_dir", str(inp["run_dir"]))
    if inp.get("config_file"):
        config_file(str(inp["config_file"]))
    check_agent_model(str(inp.get("agent") or "rule"), inp.get("model"))
    try:
        if inp.get("config"):
            cfg = config_from_dict(dict(inp["config"]))
        else:
            for item in inp.get("overrides") or []:
                parse_override(str(item))
            overrides = [str(o) for o in inp.get("overrides") or []]
            cfg = load_config(str(inp.get("preset") or "cpu"), None, overrides, base=_server_defaults())
    except ConfigError:
        return
    check_config(cfg)
