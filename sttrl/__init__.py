"""sttrl: an environment in which an agent steers the real fine-tuning of a Whisper model for Swahili."""

from __future__ import annotations

from typing import Any

from sttrl.config import Config, load_config
from sttrl.env.actions import Action

__version__ = "0.1.0"
__all__ = ["SttEnv", "make_env", "load_config", "Action", "Config"]


def __getattr__(name: str) -> Any:
    """``SttEnv`` and ``make_env`` on first use: ``import sttrl`` stays torch-free."""
    if name in ("SttEnv", "make_env"):
        from sttrl.env import gym  # torch loads here, on first use of the environment, not at `import sttrl`

        return getattr(gym, name)
    raise AttributeError(f"module 'sttrl' has no attribute {name!r}")
