"""The OpenEnv environment: each session is one :class:`~sttrl.env.session.EpisodeSession` (its own thread id and
run directory); ``reset``, ``step`` and ``state`` map onto it. Sessions of one server run their torch work on the
process's one torch thread (:mod:`sttrl.train.memory`), one block at a time, and share the training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import EnvironmentMetadata

from sttrl import __version__
from sttrl.config import Config
from sttrl.env.session import EpisodeSession
from sttrl.errors import SessionError
from sttrl.openenv.models import SttrlAction, SttrlObservation, SttrlState


@dataclass(frozen=True)
class ServerSettings:
    """What every session of a server shares: the config, where run directories go, whether the judge scores a
    finished episode, and the HF token (resolved by the entry point; hub data only)."""

    cfg: Config
    root: Path
    judge: bool = True
    hf_token: str | None = None


class SttrlEnvironment(Environment[SttrlAction, SttrlObservation, SttrlState]):
    """One sttrl episode per session (see the module docstring)."""

    SUPPORTS_CONCURRENT_SESSIONS = True  # each session has its own run directory and runtime

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__()
        self.settings = settings
        self.session = EpisodeSession(settings.cfg, settings.root, source="openenv", hf_token=settings.hf_token)
        self.report: dict[str, Any] | None = None

    def reset(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        instance: int | None = None,
        start_from: str | None = None,
        **kwargs: Any,
    ) -> SttrlObservation:
        """Start an episode: ``seed`` (the run seed; draws the instance), ``episode_id`` (the thread id and run
        directory name, new), ``instance`` (an ``env.instances`` seed other than the run seed), ``start_from`` (a
        fork: the ``checkpoint.path`` of an episode of this server, whose state the new episode starts from)."""
        if kwargs:
            raise SessionError(f"reset takes seed, episode_id, instance and start_from; unknown: {sorted(kwargs)}")
        start = None
        if start_from is not None:
            start = Path(start_from).resolve()
            if not start.is_relative_to(self.settings.root) or not (start / "state.json").is_file():
                raise SessionError(f"start_from {start_from!r} is not a training checkpoint of this server's episodes")
        self.report = None
        obs = self.session.reset(seed=seed, instance=instance, run_id=episode_id, start_from=start)
        return self._observation(obs, reward=None, done=False)

    def step(self, action: SttrlAction, timeout_s: float | None = None, **kwargs: Any) -> SttrlObservation:
        """Train, evaluate and reward one block with ``action`` (or end the episode at ``stop``); at the end the judge
        scores the final model when the server was started with it."""
        out = self.session.step(action.action.value, action.rationale, action.source)
        if out.done and self.settings.judge:
            self.report = self.session.judge()
        obs = self._observation(out.observation, reward=out.reward, done=out.done)
        obs.clamped, obs.note, obs.end_reason, obs.judge = out.clamped, out.note, out.end_reason, self.report
        return obs

    def _observation(self, plain: dict[str, Any], reward: float | None, done: bool) -> SttrlObservation:
        fields = {k: v for k, v in plain.items() if k in SttrlObservation.model_fields}
        return SttrlObservation(**fields, actions=list(self.settings.cfg.env.actions), reward=reward, done=done)

    @property
    def state(self) -> SttrlState:
        s = self.session
        return SttrlState(
            episode_id=s.run_id,
            step_count=s.steps,
            run_dir=str(s.run_dir) if s.run_dir else None,
            checkpoint=s.checkpoint(),
            done=s.done,
            end_reason=s.end_reason,
            total_reward=s.total_reward,
            instance=s.env.runtime.cfg.env.instance if s.started else None,
        )

    def get_metadata(self) -> EnvironmentMetadata:
        return EnvironmentMetadata(
            name="sttrl",
            description="Steer the real fine-tuning of a Whisper speech recognizer for Swahili, one hyperparameter "
            "decision per training block; a judge scores the final model on a hidden domain.",
            version=__version__,
        )

    def close(self) -> None:
        self.session.close()
