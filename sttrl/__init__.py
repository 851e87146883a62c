"""sttrl: an environment in which an agent steers the real fine-tuning of a Whisper model for Swahili."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["SttEnv", "make_env", "load_config", "Action", "Config"]


def __getattr__(name: str) -> Any:  # lazy: `import sttrl` stays cheap; torch loads on first use
    if name in ("SttEnv", "make_env"):
        from sttrl.env import gym  # torch loads here, on first use

        return getattr(gym, name)
    if name in ("load_config", "Config"):
        from sttrl import config

        return getattr(config, name)
    if name == "Action":
        from sttrl.env.actions import Action

        return Action
    raise AttributeError(f"module 'sttrl' has no attribute {name!r}")
