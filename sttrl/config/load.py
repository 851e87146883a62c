"""Reading configs: presets, YAML/JSON files, dotted ``key=value`` overrides, the shared CLI options, and
secrets from the environment or ``.env`` (the only reader of secrets in ``os.environ``; :mod:`sttrl.keys` reads where
the judge key lives from it too).

The package :mod:`sttrl.config` exports what callers use.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, ValidationError

from sttrl.config.policy import POLICY_PRESET_DIR, policy_presets
from sttrl.config.schema import PRESET_DIR, Config
from sttrl.errors import ConfigError


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _where(exc: Exception) -> str:
    """``line N, column M: problem`` of a YAML or JSON error, one line, without the text it quotes."""
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    mark = getattr(exc, "problem_mark", None)
    problem = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem or type(exc).__name__}"
    return problem or type(exc).__name__


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid {kind}: {_where(exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (UTF-8)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, not {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``"train.lr=3e-4"`` -> ``{"train": {"lr": 3e-4}}``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.field=value, e.g. train.lr=3e-4")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({_where(exc)})") from None
    out: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        out = {part: out}
    return out


def _format_validation(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see sttrl/config/ for valid fields)"
        got = err.get("input")
        shown = (
            f" (got {got!r})"
            if got is not None and not isinstance(got, dict) and err["type"] != "extra_forbidden"
            else ""
        )
        lines.append(f"{loc or 'config'}: {msg}{shown}")
    return "invalid config: " + "; ".join(lines)


def load_config(
    preset: str | None = "cpu",
    file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
    policy_preset: str | None = None,
) -> Config:
    """Resolve a config from a preset name, an optional policy preset (``sttrl/presets/policy/``), an optional
    file and dotted overrides, merged in that order."""
    data: dict[str, Any] = dict(base or {})
    if preset:
        if preset not in available_presets():  # a name, never a path: "../x" would read another file
            raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(available_presets())}")
        path = PRESET_DIR / f"{preset}.yaml"
        data = _merge(data, _read_mapping(path))
        data["preset"] = preset
    if policy_preset:
        if policy_preset not in policy_presets():  # a name, never a path
            raise ConfigError(f"unknown policy preset {policy_preset!r}; valid: {', '.join(policy_presets())}")
        path = POLICY_PRESET_DIR / f"{policy_preset}.yaml"
        data = _merge(data, _read_mapping(path))
    if file:
        data = _merge(data, _read_mapping(Path(file)))
    for item in overrides:
        data = _merge(data, parse_override(item))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from None


def config_from_dict(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--preset``, ``--config`` and ``--set`` options every sttrl command line shares."""
    parser.add_argument(
        "--preset", default="cpu", help=f"config preset: {', '.join(available_presets())} (default: cpu)"
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML or JSON config file merged over the preset")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, e.g. train.lr=3e-4 (repeatable)",
    )


def secret(name: str, env_file: str | Path = ".env") -> str | None:
    """A secret (HF_TOKEN, GROQ_API_KEY…) from the environment, else from ``.env``. Never logged or stored."""
    value = os.environ.get(name)
    if value:
        return value
    path = Path(env_file)
    if path.is_file():
        value = dotenv_values(path).get(name)
    return value or None


def absolute_paths(cfg: Config, base: str | Path | None = None) -> Config:
    """``cfg`` with every relative path field (``data.cache_dir``, ``data.hub.local_dir``, ``run.out_dir``,
    ``bench.schedule_file``, ``bench.contextual_file``, ``bench.lookahead_file``, ``cache.dir``: any field typed
    ``Path``) and a ``local`` model's directory made absolute against ``base`` (default: the working directory).
    Entry points call it once, so a process that runs elsewhere (a Ray Tune trial runs in a working directory of its
    own, a worker on another machine) reads and writes where the user meant."""
    root = Path(base) if base is not None else Path.cwd()

    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (root / p).resolve()

    data = with_fields(cfg.to_dict(), {field: str(fix(value)) for field, value in path_fields(cfg)})
    if cfg.model.source == "local" and cfg.model.name:
        data["model"]["name"] = str(fix(Path(cfg.model.name)))
    return config_from_dict(data)


def path_fields(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """Every field of ``model`` (a :class:`Config` or a section) typed ``Path``, as ``(dotted name, value)``: what
    :func:`absolute_paths` makes absolute and what the LangGraph server checks against its roots."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from path_fields(value, f"{prefix}{name}.")
        elif isinstance(value, Path):
            yield f"{prefix}{name}", value


def with_fields(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a config as a dict) with each dotted field of ``values`` set, in place and returned."""
    for field, value in values.items():
        *parents, leaf = field.split(".")
        node = data
        for name in parents:
            node = node[name]
        node[leaf] = value
    return data
