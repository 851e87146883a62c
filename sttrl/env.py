"""SttEnv: a Gymnasium environment in which each step is a hyperparameter decision followed by a real
training block and a real validation evaluation of a Whisper model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sttrl.actions import Action, Hyperparams, apply, parse_action
from sttrl.config import Config, load_config
from sttrl.data import SpeechData, build_speech_data
from sttrl.reward import STATUSES, reward
from sttrl.runtime import EpisodeRuntime, new_run_id
from sttrl.trajectory import StepRecord, Trajectory

_F = np.float32


def observation_dict(
    hp: Hyperparams,
    max_freeze: int,
    train_loss: float | None,
    wer: float,
    cer: float,
    best_wer: float,
    previous_wer: float,
    memory_gb: float,
    memory_device: str,
    status: str,
    step: int,
    steps_left: int,
    global_step: int,
) -> dict[str, Any]:
    """The plain observation that policies, prompts and trajectories use (JSON-serializable)."""
    return {
        "step": step,
        "steps_left": steps_left,
        "global_step": global_step,
        "lr": hp.lr,
        "batch_size": hp.batch_size,
        "grad_accum": hp.grad_accum,
        "freeze_layers": hp.freeze_layers,
        "max_freeze_layers": max_freeze,
        "train_loss": train_loss,
        "wer": wer,
        "cer": cer,
        "best_wer": best_wer,
        "previous_wer": previous_wer,
        "memory_gb": memory_gb,
        "memory_device": memory_device,
        "status": status,
    }


class SttEnv(gym.Env):
    """Steer the fine-tuning of a Whisper model, one hyperparameter decision per step.

    ## Action Space
    ``Discrete(len(config.env.actions))``: the index of an action in ``config.env.actions``, by default
    ``keep, lr_up, lr_down, batch_up, batch_down, freeze_more, freeze_less, stop``. ``lr_up``/``lr_down``
    multiply/divide the learning rate by ``train.lr_factor`` (1.5); ``batch_up``/``batch_down`` by
    ``train.batch_factor`` (2); ``freeze_more``/``freeze_less`` change the number of frozen encoder layers
    by one; ``keep`` trains another block unchanged; ``stop`` ends the episode. Values are clamped to the
    bounds in ``train``; ``info["clamped"]`` says when. ``step`` also accepts an action name or ``Action``.

    ## Observation Space
    A ``Dict`` of float32 arrays of shape (1,): ``lr``, ``batch_size``, ``grad_accum``, ``freeze_layers``,
    ``train_loss`` (mean loss of the last block; at reset, the loss on the next batch), ``wer`` and ``cer``
    (validation), ``best_wer``, ``memory_gb`` (training-memory peak of the last block: CUDA allocated, or on CPU
    the parameters, gradients, optimizer state and saved activations; the device is in ``info``), and Discrete ``status`` (0 ok, 1 oom, 2 nan, 3 diverged), ``step``, ``steps_left``.
    ``info["observation"]`` holds the same as plain JSON with the device.

    ## Rewards
    ``(previous WER - current WER) - env.reward.step_penalty`` (0.05), minus ``oom_penalty`` (1.0),
    ``nan_penalty`` (2.0) or ``divergence_penalty`` (2.5) when the block faulted; after a fault the model,
    optimizer and data cursor are rolled back to the block's start while the hyperparameters stay as the
    action set them (the agent must repair them). ``stop`` trains nothing and pays 0.

    ## Episode End
    Terminated by ``stop``; truncated when ``env.max_actions`` decisions are spent. At the end the final
    model is saved under ``run_dir/final`` for the judge (``sttrl.judge``); ``info["final"]`` has its hash.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        config: Config | str = "debug",
        run_dir: str | Path | None = None,
        progress: bool = False,
        source: str = "policy",
    ) -> None:
        self.cfg = load_config(config) if isinstance(config, str) else config
        self._run_dir = Path(run_dir) if run_dir else None
        self.progress = progress
        self.source = source
        self.actions = list(self.cfg.env.actions)
        self.action_space = spaces.Discrete(len(self.actions))
        t, e = self.cfg.train, self.cfg.env
        box = lambda lo, hi: spaces.Box(_F(lo), _F(hi), shape=(1,), dtype=_F)  # noqa: E731
        self.observation_space = spaces.Dict(
            {
                "lr": box(t.lr_min, t.lr_max),
                "batch_size": box(t.batch_min, t.batch_max),
                "grad_accum": box(1, 256),
                "freeze_layers": box(0, 64),
                "train_loss": box(0, np.inf),
                "wer": box(0, np.inf),
                "cer": box(0, np.inf),
                "best_wer": box(0, np.inf),
                "memory_gb": box(0, np.inf),
                "status": spaces.Discrete(len(STATUSES)),
                "step": spaces.Discrete(e.max_actions + 1),
                "steps_left": spaces.Discrete(e.max_actions + 1),
            }
        )
        self._data: SpeechData | None = None
        self.runtime: EpisodeRuntime | None = None
        self.trajectory: Trajectory | None = None
        self._last_run_dir: Path | None = None

    # ----- helpers ----------------------------------------------------------------------------
    def _obs(self) -> dict[str, Any]:
        o = self._plain
        out: dict[str, Any] = {
            k: np.array([o[k] if o[k] is not None else 0.0], dtype=_F)
            for k in ("lr", "batch_size", "grad_accum", "freeze_layers", "train_loss", "wer", "cer", "best_wer", "memory_gb")
        }
        out["status"] = STATUSES.index(o["status"])
        out["step"] = o["step"]
        out["steps_left"] = o["steps_left"]
        return out

    def _make_plain(self, loss: float | None, wer: float, cer: float, mem: float, status: str) -> dict[str, Any]:
        rt = self.runtime
        assert rt is not None
        return observation_dict(
            self.hp, rt.max_freeze, loss, wer, cer, self.best_wer, self.previous_wer, mem, rt.device.type, status,
            self.step_index, self.cfg.env.max_actions - self.step_index, rt.trainer.state.global_step,
        )

    @property
    def run_dir(self) -> Path:
        if self._last_run_dir is None:
            raise RuntimeError("call reset() first")
        return self._last_run_dir

    def close(self) -> None:
        """Free the episode's model, optimizer and features (the run directory stays on disk)."""
        self.runtime = None
        import gc

        gc.collect()

    # ----- Gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        options = options or {}
        cfg = self.cfg
        if seed is not None:
            cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": int(seed)})})
        run_id = options.get("run_id") or new_run_id()
        run_dir = Path(options.get("run_dir") or (self._run_dir / run_id if self._run_dir else cfg.run.out_dir / run_id))
        if self._data is None or self._data_cfg != cfg.data:
            self._data = build_speech_data(cfg.data, progress=self.progress)
            self._data_cfg = cfg.data
        self.runtime = EpisodeRuntime(cfg, run_dir, progress=self.progress, data=self._data, run_id=run_id)
        rt = self.runtime
        self._last_run_dir = rt.run_dir
        self.trajectory = Trajectory(rt.run_dir / "trajectory.jsonl")
        self.hp = rt.initial_hp()
        self.step_index = 0
        t0 = time.perf_counter()
        ev = rt.evaluate(0)
        self.previous_wer = self.best_wer = ev.wer
        loss = rt.probe_loss()
        self._plain = self._make_plain(loss, ev.wer, ev.cer, 0.0, "ok")
        self.done = False
        info = {"observation": self._plain, "run_dir": str(rt.run_dir), "run_id": rt.run_id,
                "eval": ev.to_dict(), "seconds": time.perf_counter() - t0}
        return self._obs(), info

    def step(self, action: int | str | Action, rationale: str = "", source: str | None = None):  # type: ignore[override]
        if self.runtime is None:
            raise RuntimeError("call reset() before step()")
        if self.done:
            raise RuntimeError("the episode has ended; call reset()")
        rt = self.runtime
        act = parse_action(int(action) if isinstance(action, (np.integer,)) else action, self.actions)
        self.step_index += 1
        before = self.hp
        t0 = time.perf_counter()
        info: dict[str, Any] = {"action": act.value}
        timings: dict[str, float] = {}
        if act is Action.STOP:
            applied_note, clamped, status, r = "stop", False, "ok", 0.0
            train_res = ev = None
            self._plain = {**self._plain, "step": self.step_index,
                           "steps_left": self.cfg.env.max_actions - self.step_index}
        else:
            applied = apply(self.hp, act, self.cfg.train, rt.max_freeze)
            self.hp, clamped, applied_note = applied.hp, applied.clamped, applied.note
            train_res = rt.train_block(self.step_index, self.hp)
            t1 = time.perf_counter()
            ev = rt.evaluate(self.step_index)
            timings["train_seconds"] = t1 - t0
            timings["eval_seconds"] = time.perf_counter() - t1
            status = train_res.status
            r = reward(self.previous_wer, ev.wer, status, self.cfg.env.reward)
            self.best_wer = min(self.best_wer, ev.wer)
            self._plain = self._make_plain(train_res.mean_loss, ev.wer, ev.cer, train_res.peak_memory_gb, status)
            self.previous_wer = ev.wer
        terminated = act is Action.STOP
        truncated = not terminated and self.step_index >= self.cfg.env.max_actions
        record = StepRecord(
            run_id=rt.run_id, step=self.step_index, action=act.value, source=source or self.source,
            rationale=rationale, clamped=clamped, hp_before=before.to_dict(), hp_after=self.hp.to_dict(),
            status=status, reward=r, observation=self._plain,
            train=train_res.to_dict() if train_res else None, eval=ev.to_dict() if ev else None,
            timings={**timings, "step_seconds": time.perf_counter() - t0},
        )
        self.last_record = record
        self.trajectory.append(record)  # type: ignore[union-attr]
        # info stays deterministic for a seed (Gymnasium's checker compares it); timings and the process's
        # RSS are in the trajectory record (``self.last_record``), not here.
        info.update({"observation": self._plain, "clamped": clamped, "note": applied_note, "status": status,
                     "losses": train_res.losses if train_res else [], "examples": ev.examples if ev else []})
        if terminated or truncated:
            self.done = True
            info["final"] = rt.save_final()
        return self._obs(), float(r), terminated, truncated, info


def make_env(preset_or_config: str | Config = "cpu", **kwargs: Any) -> SttEnv:
    """Build an SttEnv from a preset name or a Config."""
    return SttEnv(preset_or_config, **kwargs)
