"""Prompt templates as files (``prompts/`` at the repository root), loaded by name: no prompt strings in code."""

from __future__ import annotations

from pathlib import Path

from sttrl.errors import ConfigError

PROMPT_DIR = Path(__file__).resolve().parents[2] / "prompts"


def load_prompt(name: str) -> str:
    """The text of ``prompts/<name>`` (``.md`` is added when the name has no suffix)."""
    path = PROMPT_DIR / (name if Path(name).suffix else f"{name}.md")
    if not path.is_file():
        raise ConfigError(f"prompt file {path} is missing")
    return path.read_text(encoding="utf-8")
