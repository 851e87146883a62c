"""One typed config tree for sttrl: model, data, train, env (reward), run, and the sections with a module of their
own: model and data (:mod:`sttrl.config.data`), agent, lookahead and bench (:mod:`sttrl.config.control`),
policy, env.instances, cache.

Presets live in ``sttrl/presets/<name>.yaml`` as partial overrides of the defaults below.
``load_config`` merges, in order: defaults, a preset, a YAML/JSON file, dotted ``key=value``
overrides. Unknown keys and out-of-range values raise :class:`ConfigError` naming the field. Actions, reward kinds
and evaluation engines are validated against their registries.

Secrets are never part of the config (:func:`sttrl.config.load.secret` reads them at the entry points), so they
never reach a checkpoint or a trajectory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from sttrl.config.base import Strict
from sttrl.config.cache import CacheConfig
from sttrl.config.control import AgentConfig, BenchConfig, LookaheadConfig
from sttrl.config.data import DataConfig, ModelConfig
from sttrl.config.instances import InstancesConfig
from sttrl.config.policy import PolicyConfig
from sttrl.config.sink_url import check_sink_settings
from sttrl.env.actions import ALL_ACTIONS
from sttrl.env.reward import REWARD_KINDS
from sttrl.eval import engines
from sttrl.io import atomic_write_text

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


class TrainConfig(Strict):
    """Starting hyperparameters, their bounds, and the fault rules of a training block."""

    lr: float = Field(1e-3, gt=0.0, le=1.0)
    batch_size: int = Field(16, ge=1, le=4096)
    grad_accum: int = Field(1, ge=1, le=256)
    freeze_layers: int = Field(0, ge=0, le=64, description="First k encoder layers (and the conv stem) frozen.")
    lr_min: float = Field(1e-7, gt=0.0)
    lr_max: float = Field(1e-1, gt=0.0, le=1.0)
    batch_min: int = Field(1, ge=1)
    batch_max: int = Field(64, ge=1)
    lr_factor: float = Field(1.5, gt=1.0, le=10.0)
    batch_factor: int = Field(2, ge=2, le=8)
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    grad_clip: float | None = Field(1.0, gt=0.0)
    warmup_steps: int = Field(
        0, ge=0, description="Linear lr warm-up over the first global steps (lr_schedule=constant only)."
    )
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description="Per-step lr inside the trainer: constant (the action's lr, after warmup_steps); "
        "linear or cosine: linear warm-up over warmup_fraction of the horizon to the action's lr (the peak), then "
        "linear or cosine decay to lr_final_fraction x peak at the horizon (the episode's total optimizer steps at "
        "its starting hyperparameters, computed from the budget). Used by the schedule controller.",
    )
    warmup_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Warm-up share of the horizon (lr_schedule linear/cosine)."
    )
    lr_final_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="lr at the horizon as a fraction of the peak (lr_schedule linear/cosine)."
    )
    divergence_ratio: float = Field(
        2.0,
        gt=1.0,
        description="A block diverges when the mean loss of its last quarter exceeds this times the "
        "reference loss (the previous good block's mean, else the starting loss measured at setup).",
    )
    memory_budget_gb: float | None = Field(
        None,
        gt=0.0,
        description="CPU: a training-memory peak above this many GB is an OOM transition; the peak counts tensor "
        "bytes (parameters, gradients, optimizer state and the activations saved for backward), not process RSS, "
        "so a resume replays it exactly. A real allocation failure is an OOM transition too. GPU: real OOM only.",
    )
    eval_batch_size: int = Field(16, ge=1, le=1024)
    max_eval_utterances: int | None = Field(None, ge=1, description="Validation utterances scored per evaluation.")
    example_transcripts: int = Field(3, ge=0, le=50)
    eval_engine: str = Field(
        "transformers",
        description="Decoder of evaluations and the judge: an engine of sttrl.eval.engines (one module each; built "
        "in: transformers generate(), or ct2: CTranslate2, the current weights converted in memory; same prompt, "
        "length limit and normalizer). See README 'Evaluation engines'.",
    )
    eval_compute_type: Literal["auto", "float32", "int8", "int8_float32", "float16", "int8_float16", "bfloat16"] = (
        Field("auto", description="CTranslate2 compute type (eval_engine=ct2): auto = float32 on CPU, float16 on CUDA.")
    )

    @field_validator("eval_engine")
    @classmethod
    def _known_engine(cls, name: str) -> str:
        if name not in engines.names():
            raise ValueError(f"unknown evaluation engine; valid: {', '.join(engines.names())}")
        return name

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if not self.lr_min <= self.lr <= self.lr_max:
            raise ValueError(
                f"train.lr {self.lr} must lie within [train.lr_min, train.lr_max] = [{self.lr_min}, {self.lr_max}]"
            )
        if not self.batch_min <= self.batch_size <= self.batch_max:
            raise ValueError(
                f"train.batch_size {self.batch_size} must lie within [train.batch_min, train.batch_max] = "
                f"[{self.batch_min}, {self.batch_max}]"
            )
        return self


class RewardConfig(Strict):
    """The reward of a step, by ``kind`` (the registry :data:`sttrl.env.reward.REWARD_KINDS`), minus ``step_penalty``
    and a fault penalty. Built-in kinds:

    - ``seed``: previous WER - current WER (the seed's formula; its scale is the model's starting WER, so an
      untuned model's first block dominates the return).
    - ``log_ratio``: log(min(previous, wer_clip) / min(current, wer_clip)), WERs floored at ``wer_floor``: scale-free
      (a 10 % relative gain pays the same at WER 3.4 and at 0.2) and bounded by the clip at the start."""

    kind: str = Field("seed", description="A reward kind of sttrl.env.reward (built in: seed, log_ratio).")
    wer_clip: float = Field(1.0, gt=0.0, le=100.0, description="log_ratio: WERs above this count as this.")
    wer_floor: float = Field(1e-3, gt=0.0, le=1.0, description="log_ratio: WERs below this count as this.")
    step_penalty: float = Field(0.05, ge=0.0)
    oom_penalty: float = Field(1.0, ge=0.0)
    nan_penalty: float = Field(2.0, ge=0.0)
    divergence_penalty: float = Field(2.5, ge=0.0)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, name: str) -> str:
        if name not in REWARD_KINDS:
            raise ValueError(f"unknown reward kind; valid: {', '.join(sorted(REWARD_KINDS))}")
        return name


class EnvConfig(Strict):
    """Episode shape: actions, block length, budget, reward."""

    steps_per_action: int = Field(20, ge=1, le=100_000, description="Optimizer steps per action (budget_unit=steps).")
    budget_unit: Literal["steps", "samples"] = Field(
        "steps",
        description="steps: each action trains steps_per_action optimizer steps (a bigger batch buys more "
        "compute); samples: each action trains samples_per_action training samples, whatever the batch size.",
    )
    samples_per_action: int | None = Field(
        None,
        ge=1,
        le=100_000_000,
        description="Training samples per action when budget_unit=samples; a block "
        "trains ceil(samples_per_action / (batch_size x grad_accum)) steps (exact when it divides).",
    )
    max_actions: int = Field(8, ge=1, le=10_000, description="Decisions per episode before the budget is spent.")
    actions: list[str] = Field(default_factory=lambda: list(ALL_ACTIONS), min_length=1)
    eval_every: int = Field(
        1,
        ge=1,
        le=10_000,
        description="Validation WER is decoded after every k-th block, at the start and after the last block of "
        "the budget; the teacher-forced validation loss is measured after every block. An observation between "
        "WER evaluations carries the last measured WER (wer_step names the step it was measured after). The "
        "reward of a block without a fresh WER has a WER gain of 0 (its step and fault penalties still apply); "
        "the next measured block's gain covers every block since the last measurement, so an episode's return "
        "is the same sum of gains as with k=1.",
    )
    checkpoint_every: int = Field(0, ge=0, description="Intra-block checkpoint every N steps; 0 = block end only.")
    keep_checkpoints: int = Field(
        2,
        ge=0,
        le=1000,
        description="Block checkpoints kept in the run directory (the last N); 0 keeps every block, "
        "so that the run can be forked at any step (python -m graph.run --fork; disk cost per block in README).",
    )
    reward: RewardConfig = Field(default_factory=RewardConfig)
    instances: InstancesConfig | None = Field(
        None,
        description="A distribution of starting conditions drawn by the reset seed (sttrl.env.instances); "
        "null: every episode starts from the preset's values.",
    )
    instance: dict[str, Any] | None = Field(
        None, description="The instance this config was drawn for (written by sttrl.env.instances.apply, not by hand)."
    )

    @model_validator(mode="after")
    def _check(self) -> EnvConfig:
        bad = [a for a in self.actions if a not in ALL_ACTIONS]
        if bad:
            raise ValueError(f"env.actions: unknown {bad}; valid: {list(ALL_ACTIONS)}")
        if len(set(self.actions)) != len(self.actions):
            raise ValueError("env.actions must not repeat an action")
        if self.budget_unit == "samples" and self.samples_per_action is None:
            raise ValueError("env.samples_per_action is required when env.budget_unit=samples")
        return self

    def block_steps(self, batch_size: int, grad_accum: int = 1) -> int:
        """Optimizer steps one block trains: ``steps_per_action``, or with ``budget_unit=samples`` as many as
        ``samples_per_action`` needs at this batch size and accumulation (at least one)."""
        if self.budget_unit == "samples":
            assert self.samples_per_action is not None
            return max(1, -(-self.samples_per_action // (batch_size * grad_accum)))
        return self.steps_per_action

    def wer_due(self, block: int, last: bool = False) -> bool:
        """Whether the evaluation after ``block`` decodes a fresh WER (``eval_every``): at the start (block 0),
        every ``eval_every``-th block, the budget's last block, and a block the episode ends after (``last``)."""
        return last or block == 0 or block % self.eval_every == 0 or block >= self.max_actions


class RunConfig(Strict):
    """Seed, output, device, and where trajectories go outward (sink, tracker)."""

    seed: int = Field(0, ge=0, le=2**31 - 1)
    out_dir: Path = Path("runs")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Training dtype (bf16 autocast on CUDA).")
    threads: int | None = Field(None, ge=1, le=512, description="torch CPU threads; null = torch's default.")
    deterministic: bool = Field(
        True,
        description="torch's deterministic algorithms (sttrl/train/device.py): identical decisions give "
        "bit-identical numbers with several CPU threads too; false trades that for kernels that may be faster.",
    )
    # Trajectories outward (sttrl.outward.sinks, sttrl.outward.tracking): see README "Sinks" and "Experiment tracking".
    sink: str | None = Field(
        None,
        description="Where step records and run artifacts are uploaded: any fsspec URL (s3://bucket/prefix, gs://…, "
        "file:///dir, memory://prefix), a pre-signed HTTP PUT URL template, or env:VAR to read the URL from an "
        "environment variable (for URLs that carry a signature). null = no upload.",
    )
    sink_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options without secrets (e.g. {client_kwargs: {endpoint_url: …}}); credentials "
        "come from the environment (AWS_ACCESS_KEY_ID…).",
    )
    sink_flush_seconds: float = Field(
        60.0, ge=0.0, le=3600.0, description="How long the end of a run waits for pending uploads."
    )
    tracker: Literal["none", "wandb", "mlflow"] = Field(
        "none", description="Experiment tracker for steps and artifacts."
    )
    tracker_uri: str | None = Field(
        None,
        description="mlflow: the tracking URI (http://host:port, sqlite:///…); wandb: the directory for its files.",
    )
    tracker_project: str = Field("sttrl", min_length=1, description="W&B project / MLflow experiment name.")
    wandb_mode: Literal["offline", "online"] = Field(
        "offline", description="online needs WANDB_API_KEY in the environment."
    )

    @model_validator(mode="after")
    def _check_outward(self) -> RunConfig:
        check_sink_settings(self.sink, self.sink_options)
        return self


class Config(Strict):
    preset: str = "default"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    lookahead: LookaheadConfig = Field(default_factory=LookaheadConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)

    @model_validator(mode="after")
    def _check_instances(self) -> Config:
        if self.env.instances is not None:
            t = self.train
            self.env.instances.check_bounds(t.lr_min, t.lr_max, t.batch_min, t.batch_max)
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> Path:
        """Write the resolved config as YAML or JSON (by suffix), atomically."""
        path = Path(path)
        data = self.to_dict()
        text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
        atomic_write_text(path, text)
        return path
