"""SttEnv: a Gymnasium environment in which each step is a hyperparameter decision followed by a real
training block and a real validation evaluation of a Whisper model."""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sttrl.config import Config, load_config
from sttrl.data import SpeechData, build_speech_data
from sttrl.env.actions import Action, parse_action
from sttrl.env.decision import Decided
from sttrl.env.episode import Episode
from sttrl.env.instances import apply as apply_instance
from sttrl.env.phases import Progress
from sttrl.env.runtime import EpisodeRuntime
from sttrl.errors import ConfigError
from sttrl.outward.trajectory import Trajectory
from sttrl.rundir import TRAJECTORY, new_run_id
from sttrl.train.blocks import STATUSES

_F = np.float32


class SttEnv(gym.Env):
    """Steer the fine-tuning of a Whisper model, one hyperparameter decision per step.

    ## Action Space
    ``Discrete(len(config.env.actions))``: the index of an action in ``config.env.actions``, by default every
    registered action (``sttrl.env.actions.REGISTRY``): ``keep, lr_up, lr_down, batch_up, batch_down, freeze_more,
    freeze_less, stop``. ``lr_up``/``lr_down``
    multiply/divide the learning rate by ``train.lr_factor`` (1.5); ``batch_up``/``batch_down`` by
    ``train.batch_factor`` (2); ``freeze_more``/``freeze_less`` change the number of frozen encoder layers
    by one; ``keep`` trains another block unchanged; ``stop`` ends the episode. Values are clamped to the
    bounds in ``train``; ``info["clamped"]`` says when. ``step`` also accepts an action name or ``Action``.

    ## Observation Space
    A ``Dict`` of float32 arrays of shape (1,): ``lr``, ``batch_size``, ``grad_accum``, ``freeze_layers``,
    ``train_loss`` (mean loss of the last block; at reset, the loss on the next batch), ``val_loss`` (teacher-forced
    validation loss, measured after every block), ``wer`` and ``cer`` (validation; with ``env.eval_every`` > 1 the
    last measured values), ``best_wer``, ``memory_gb`` (training-memory peak of the last block: CUDA allocated, or
    on CPU the parameters, gradients, optimizer state and saved activations; the device is in ``info``), and
    Discrete ``status`` (0 ok, 1 oom, 2 nan, 3 diverged), ``step``, ``steps_left``, ``wer_step`` (the step whose
    model ``wer`` was measured on). ``info["observation"]`` holds the same as plain JSON with the device and the
    memory budget (``sttrl.env.phases.Observation``).

    Each step runs ``sttrl.env.episode`` (the same phases the LangGraph episode runs as nodes), so the two
    paths write identical trajectories for the same seed and actions.

    ## Rewards
    The WER gain of the block in the units of ``env.reward.kind`` (a kind of the registry in
    ``sttrl.env.reward``: ``seed``, the default, pays previous WER - current WER; ``log_ratio`` pays
    log(previous / current WER) with both WERs within [``wer_floor``, ``wer_clip``]), minus
    ``env.reward.step_penalty`` (0.05), minus ``oom_penalty`` (1.0), ``nan_penalty`` (2.0) or ``divergence_penalty``
    (2.5) when the block faulted; after a fault the model, optimizer and data cursor are rolled back to the block's
    start while the hyperparameters stay as the action set them (the agent must repair them). ``stop`` trains
    nothing and pays 0. With ``env.eval_every`` > 1 a block without a fresh WER gains 0 and the next measured
    block's gain covers the blocks since.

    ## Episode End
    Terminated by ``stop``; truncated when ``env.max_actions`` decisions are spent. At the end the final
    model is saved under ``run_dir/final`` for the judge (``sttrl.judge.scoring``); ``info["final"]`` has its hash.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        config: Config | str = "debug",
        run_dir: str | Path | None = None,
        progress: bool = False,
        source: str = "policy",
        hf_token: str | None = None,
        data: SpeechData | None = None,
    ) -> None:
        """``hf_token``: resolved by the caller (an entry point) for hub models and data; never stored on disk.
        ``data``: the train and validation utterances of ``config.data``, when the caller already built them (many
        environments in one process share them); otherwise built at the first reset."""
        self.cfg = load_config(config) if isinstance(config, str) else config
        self._run_dir = Path(run_dir) if run_dir else None
        self.progress = progress
        self.source = source
        self.actions = list(self.cfg.env.actions)
        self.action_space = spaces.Discrete(len(self.actions))
        t, e = self.cfg.train, self.cfg.env
        box = lambda lo, hi: spaces.Box(_F(lo), _F(hi), shape=(1,), dtype=_F)
        self.observation_space = spaces.Dict(
            {
                "lr": box(t.lr_min, t.lr_max),
                "batch_size": box(t.batch_min, t.batch_max),
                "grad_accum": box(1, 256),
                "freeze_layers": box(0, 64),
                "train_loss": box(0, np.inf),
                "val_loss": box(0, np.inf),
                "wer": box(0, np.inf),
                "cer": box(0, np.inf),
                "best_wer": box(0, np.inf),
                "memory_gb": box(0, np.inf),
                "status": spaces.Discrete(len(STATUSES)),
                "step": spaces.Discrete(e.max_actions + 1),
                "steps_left": spaces.Discrete(e.max_actions + 1),
                "wer_step": spaces.Discrete(e.max_actions + 1),
            }
        )
        self._hf_token = hf_token
        self._data: SpeechData | None = data
        self._data_cfg = self.cfg.data if data is not None else None
        self.runtime: EpisodeRuntime | None = None
        self.episode: Episode | None = None
        self._done = False
        self.trajectory: Trajectory | None = None
        self._last_run_dir: Path | None = None

    # ----- helpers ----------------------------------------------------------------------------
    def _obs(self) -> dict[str, Any]:
        o = self._plain
        out: dict[str, Any] = {
            k: np.array([o[k] if o[k] is not None else 0.0], dtype=_F)
            for k in (
                "lr",
                "batch_size",
                "grad_accum",
                "freeze_layers",
                "train_loss",
                "val_loss",
                "wer",
                "cer",
                "best_wer",
                "memory_gb",
            )
        }
        out["status"] = STATUSES.index(o["status"])
        out["step"] = o["step"]
        out["steps_left"] = o["steps_left"]
        out["wer_step"] = o["wer_step"]
        return out

    @property
    def _plain(self) -> dict[str, Any]:
        assert self.episode is not None and self.episode.progress is not None
        return self.episode.progress.observation

    @property
    def progress_state(self) -> Progress | None:
        """The episode's serializable progress (hyperparameters in force, step, WERs, last observation)."""
        return self.episode.progress if self.episode else None

    @property
    def run_dir(self) -> Path:
        if self._last_run_dir is None:
            raise RuntimeError("call reset() first")
        return self._last_run_dir

    def close(self) -> None:
        """Free the episode's model, optimizer and features (the run directory stays on disk)."""
        self.runtime = None
        self.episode = None
        gc.collect()

    # ----- Gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Start an episode. ``options``: ``instance`` (an ``env.instances`` seed other than the run seed),
        ``run_id``/``run_dir`` (where it runs), ``start_from`` (a training checkpoint of another run: the episode
        starts from its weights, optimizer, data cursor and step, :meth:`~sttrl.env.runtime.EpisodeRuntime.adopt`)."""
        super().reset(seed=seed)
        options = options or {}
        cfg = self.cfg
        if seed is not None:
            cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": int(seed)})})
        if cfg.env.instances is not None:  # the reset seed draws the instance (sttrl.env.instances)
            cfg = apply_instance(cfg, int(options.get("instance", cfg.run.seed)))
        run_id = options.get("run_id") or new_run_id()
        run_dir = Path(
            options.get("run_dir") or (self._run_dir / run_id if self._run_dir else cfg.run.out_dir / run_id)
        )
        if self._data is None or self._data_cfg != cfg.data:
            self._data = build_speech_data(cfg.data, progress=self.progress, token=self._hf_token)
            self._data_cfg = cfg.data
        self.runtime = EpisodeRuntime(
            cfg, run_dir, progress=self.progress, data=self._data, run_id=run_id, hf_token=self._hf_token
        )
        rt = self.runtime
        if options.get("start_from"):  # a fork: this episode's block 0 is another run's training checkpoint
            rt.adopt(Path(options["start_from"]))
        self._last_run_dir = rt.run_dir
        self.trajectory = Trajectory(rt.run_dir / TRAJECTORY)
        self.episode = Episode(rt)
        self._done = False
        t0 = time.perf_counter()
        ev = self.episode.start().eval
        info = {
            "observation": self._plain,
            "run_dir": str(rt.run_dir),
            "run_id": rt.run_id,
            "eval": ev.to_dict(),
            "instance": rt.cfg.env.instance,
            "seconds": time.perf_counter() - t0,
        }
        return self._obs(), info

    def step(self, action: int | str | Action | Decided):  # type: ignore[override]
        """Gymnasium's step. ``action`` is an index into ``config.env.actions``, an action name, an ``Action``, or a
        :class:`~sttrl.env.decision.Decided` that also carries the rationale and who decided (the trajectory
        records them; otherwise the rationale is empty and the source is the constructor's ``source``)."""
        if self.episode is None or self.episode.progress is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode has ended; call reset()")
        if isinstance(action, Decided):
            decided = Decided(
                parse_action(action.action, self.actions),
                action.rationale,
                action.source,
                action.attempts,
                list(action.errors),
            )
        else:
            act = parse_action(int(action) if isinstance(action, (np.integer,)) else action, self.actions)
            decided = Decided(act, "", self.source)
        out = self.episode.step(decided)
        rec = out.record
        self.last_record = rec
        self._done = out.finished is not None
        # info stays deterministic for a seed (Gymnasium's checker compares it); timings are in the
        # trajectory record (``self.last_record``), not here.
        info: dict[str, Any] = {
            "action": decided.action.value,
            "observation": self._plain,
            "clamped": rec.clamped,
            "note": out.pending.note,
            "status": rec.status,
            "losses": out.train.losses if out.train else [],
            "examples": out.eval.examples if out.eval else [],
        }
        if out.finished is not None:
            info["final"] = out.finished.final
        return self._obs(), float(rec.reward), out.terminated, out.truncated, info


def make_env(
    preset: str | Config = "cpu",
    overrides: Sequence[str] = (),
    config_file: str | Path | None = None,
    **kwargs: Any,
) -> SttEnv:
    """An SttEnv from a preset name (or a Config), an optional YAML/JSON file and dotted ``key=value`` overrides; the
    entry point of ``gymnasium.make("sttrl/Whisper-v0", preset=..., overrides=[...])``. ``kwargs`` go to SttEnv."""
    if isinstance(preset, Config):
        if overrides or config_file:
            raise ConfigError("make_env: give overrides and config_file with a preset name, not with a Config")
        return SttEnv(preset, **kwargs)
    return SttEnv(load_config(preset, config_file, list(overrides)), **kwargs)
