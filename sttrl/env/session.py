"""One episode driven from outside, one decision at a time: what the OpenEnv server's sessions (:mod:`sttrl.openenv`)
and TRL's rollouts (:mod:`sttrl.policy.grpo`) hold. A session is an :class:`~sttrl.env.gym.SttEnv` (so every step
runs the one episode loop, :mod:`sttrl.env.episode`) over training data shared by every session of the process,
plus what an outside trainer asks between steps: the return so far, whether and why the episode ended, the
current block's checkpoint (to fork from) and the judge's report.
"""

from __future__ import annotations

import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sttrl.config import Config
from sttrl.data import build_speech_data
from sttrl.env.actions import parse_action
from sttrl.env.decision import Decided
from sttrl.errors import SessionError
from sttrl.rundir import CHECKPOINTS

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DATA: dict[str, Any] = {}
_DATA_LOCK = threading.Lock()


def shared_speech_data(cfg: Config, hf_token: str | None = None) -> Any:
    """The train and validation utterances of ``cfg.data``, built once per process and shared by its sessions (they
    only read them)."""
    key = cfg.data.model_dump_json()
    with _DATA_LOCK:
        if key not in _DATA:
            _DATA[key] = build_speech_data(cfg.data, progress=False, token=hf_token)
        return _DATA[key]


@dataclass
class SessionStep:
    """What one decision did: the new plain observation, the reward, and whether (and why) the episode ended."""

    observation: dict[str, Any]
    reward: float
    done: bool
    end_reason: str | None
    clamped: bool
    note: str
    final: dict[str, Any] | None = None


@dataclass
class EpisodeSession:
    """An episode under ``root`` (one run directory per reset, named by its run id = thread id)."""

    cfg: Config
    root: Path
    source: str = "outside"
    hf_token: str | None = None
    env: Any = None
    observation: dict[str, Any] | None = None
    total_reward: float = 0.0
    steps: int = 0
    end_reason: str | None = None
    rewards: list[float] = field(default_factory=list)

    @property
    def started(self) -> bool:
        return self.observation is not None

    @property
    def done(self) -> bool:
        return self.end_reason is not None

    @property
    def run_dir(self) -> Path | None:
        return self.env.run_dir if self.started else None

    @property
    def run_id(self) -> str | None:
        return self.env.runtime.run_id if self.started and self.env.runtime is not None else None

    def reset(
        self,
        seed: int | None = None,
        instance: int | None = None,
        run_id: str | None = None,
        start_from: Path | None = None,
    ) -> dict[str, Any]:
        """Start a new episode (closing the previous one): the starting observation. ``run_id`` (the thread id) names
        its run directory under ``root`` and must be new; ``instance`` draws from ``env.instances`` (default: the
        seed); ``start_from``: a training checkpoint (another episode's :meth:`checkpoint`) the episode starts from."""
        from sttrl.env.gym import SttEnv  # torch: loaded when an episode starts, not when the server imports

        if run_id is not None and (not _RUN_ID.match(run_id) or (self.root / run_id).exists()):
            raise SessionError(f"episode_id {run_id!r} is taken or not a name (letters, digits, '._-', at most 64)")
        self.close()
        data = shared_speech_data(self.cfg, self.hf_token)
        self.env = SttEnv(self.cfg, run_dir=self.root, source=self.source, hf_token=self.hf_token, data=data)
        options: dict[str, Any] = {"run_id": run_id} if run_id else {}
        if instance is not None:
            options["instance"] = int(instance)
        if start_from is not None:
            options["start_from"] = str(start_from)
        _, info = self.env.reset(seed=seed, options=options)
        self.observation, self.total_reward, self.steps, self.end_reason, self.rewards = (
            info["observation"],
            0.0,
            0,
            None,
            [],
        )
        return self.observation

    def step(self, action: str, rationale: str = "", source: str | None = None) -> SessionStep:
        """Apply ``action`` (a name from ``env.actions``): train, evaluate and reward one block, or end at ``stop``."""
        if not self.started:
            raise SessionError("no episode in this session: reset first")
        if self.done:
            raise SessionError(
                f"the episode ended ({self.end_reason}) after {self.steps} steps: reset to start another"
            )
        act = parse_action(action, self.env.actions)  # a clear ValueError for a name that is not enabled
        _, reward, term, trunc, info = self.env.step(Decided(act, rationale, source or self.source, 1))
        self.observation, self.steps = info["observation"], self.steps + 1
        self.total_reward += float(reward)
        self.rewards.append(float(reward))
        self.end_reason = "stop" if term else ("budget" if trunc else None)
        return SessionStep(
            self.observation,
            float(reward),
            self.done,
            self.end_reason,
            info["clamped"],
            info["note"],
            info.get("final"),
        )

    def checkpoint(self) -> dict[str, Any] | None:
        """``{block, path, sha256}`` of the current block's training checkpoint (``graph.run --fork`` and
        :func:`sttrl.env.fork.fork_run_dir` start from it), or None when it was not kept."""
        if not self.started or self.env.runtime is None:
            return None
        rt = self.env.runtime
        block = rt.completed_blocks()[-1] if rt.completed_blocks() else None
        return rt.checkpoint_info(block) if block is not None else None

    def judge(self) -> dict[str, Any]:
        """The judge's report on the hidden test split (written as the run's ``judge.json``); the episode must be
        over."""
        from sttrl.judge.scoring import judge  # torch: the judge loads only when an episode is scored

        if not self.done:
            raise SessionError("the judge scores a finished episode: step until done (stop or budget)")
        return judge(self.env.run_dir, progress=False, hf_token=self.hf_token)

    def close(self, drop_checkpoints: bool = False) -> None:
        """Free the episode's model, optimizer and features; ``drop_checkpoints`` also deletes its training
        checkpoints (the trajectory, evaluations and final model stay)."""
        if self.env is None:
            return
        run_dir = self.env.run_dir if self.started else None
        self.env.close()
        self.env, self.observation = None, None
        if drop_checkpoints and run_dir is not None:
            shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
