"""sttrl: an environment in which an agent steers the real fine-tuning of a Whisper model for Swahili.

Importing sttrl registers the Gymnasium id ``sttrl/Whisper-v0`` (an entry-point string: torch loads only when
``gymnasium.make`` builds the env), so ``gymnasium.make("sttrl/Whisper-v0", preset="debug", overrides=[...])``
works after ``import sttrl``.
"""

from __future__ import annotations

from typing import Any

import gymnasium

from sttrl.config import Config, load_config
from sttrl.env.actions import Action

__version__ = "0.1.0"
__all__ = ["SttEnv", "make_env", "load_config", "Action", "Config", "GYM_ID"]

GYM_ID = "sttrl/Whisper-v0"


def _register_gym() -> None:
    """Register :data:`GYM_ID` with Gymnasium (once); imports gymnasium and numpy, never torch."""
    if GYM_ID not in gymnasium.registry:
        gymnasium.register(id=GYM_ID, entry_point="sttrl.env.gym:make_env", disable_env_checker=False)


_register_gym()


def __getattr__(name: str) -> Any:
    """``SttEnv`` and ``make_env`` on first use: ``import sttrl`` stays torch-free."""
    if name in ("SttEnv", "make_env"):
        from sttrl.env import gym  # torch loads here, on first use of the environment, not at `import sttrl`

        return getattr(gym, name)
    raise AttributeError(f"module 'sttrl' has no attribute {name!r}")
