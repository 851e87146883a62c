"""The controllers' sections of the config: ``agent`` (how an LLM controller is asked), ``lookahead`` (the lookahead
controller's probes) and ``bench`` (the benchmark's search peers)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from sttrl.config.base import Strict


class AgentConfig(Strict):
    """How an LLM controller is asked (hosted or local chat models)."""

    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature of the chat model.")
    timeout_s: float = Field(60.0, gt=0.0, le=3600.0, description="Per-request timeout of hosted chat models.")
    max_attempts: int = Field(3, ge=1, le=20, description="Structured-output attempts before the rule fallback.")
    backoff_s: float = Field(2.0, ge=0.0, le=600.0, description="First back-off after a transient error; doubles.")
    history_window: int = Field(8, ge=0, le=1000, description="Past steps shown in the prompt.")


class LookaheadConfig(Strict):
    """The ``lookahead`` controller (sttrl.control.lookahead): probe candidate actions from the current block
    checkpoint, keep the best, continue from its probe. Every probe sample counts against the episode's budget."""

    candidates: list[str] = Field(
        default_factory=lambda: ["lr_up", "lr_down", "batch_up", "batch_down", "freeze_more", "freeze_less", "keep"],
        min_length=1,
        description="Actions probed at each decision (those enabled in env.actions; never stop).",
    )
    probe_samples: int = Field(
        64,
        ge=1,
        le=10_000_000,
        description="Training samples per probe (at least one optimizer step; at most a whole block).",
    )
    criterion: str = Field(
        "train_loss",
        min_length=1,
        description="Which probe wins, by name from the criterion registry (sttrl.control.lookahead.CRITERIA): "
        "train_loss, the lowest mean training loss over the probe's last half (default: separates settings after "
        "few steps); val_wer, the lowest WER on probe_eval_utterances validation utterances (decodes once per "
        "probe); val_loss, the lowest teacher-forced validation loss on those utterances (one forward pass per batch, "
        "no decoding; sttrl.eval.loss); or another registered criterion. Checked when a lookahead runs.",
    )
    probe_eval_utterances: int = Field(
        16, ge=1, le=100_000, description="Validation utterances for val_wer and val_loss."
    )
    probe_share: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="The largest share of the episode's sample budget that losing probes may spend; a decision is "
        "probed only while its probes fit in what is left of that share, later ones keep (1: no cap).",
    )
    charge_probes: bool = Field(
        True,
        description="Losing probes count against the episode's sample budget (a "
        "contestant in a benchmark: true). False labels every one of env.max_actions "
        "decisions (teacher trajectories, python -m sttrl.teacher): the blocks still spend "
        "exactly the budget, the probes are extra compute and are reported.",
    )


class BenchConfig(Strict):
    """Settings of the controller benchmark's search peers (``python -m bench``)."""

    tpe_lr_max: float | None = Field(
        None,
        gt=0.0,
        description="Upper end of the TPE/search lr range (below "
        "values known to collapse the model); null = what an episode can reach.",
    )
    schedule_file: Path | None = Field(
        None,
        description="The schedule controller's tuned file (python -m "
        "bench.tune_schedule): its peak lr and shape win over the values below.",
    )
    schedule_peak_lr: float | None = Field(
        None, gt=0.0, description="Untuned schedule: peak lr (null: the instance's starting lr)."
    )
    schedule_shape: Literal["linear", "cosine"] = Field("cosine", description="Untuned schedule: decay shape.")
    schedule_warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Untuned schedule: warm-up share.")
    schedule_final_fraction: float = Field(0.0, ge=0.0, le=1.0, description="Untuned schedule: final lr / peak.")
    contextual_file: Path | None = Field(
        None,
        description="The contextual controller's tuned file (python -m bench.tune_contextual): the map from what "
        "an episode observes at its start to the schedule's peak lr, shape and warm-up. Null: the schedule's values.",
    )
    lookahead_file: Path | None = Field(
        None,
        description="The lookahead controller's tuned file (python -m bench.tune_lookahead): its lookahead.* "
        "settings win over the config's in the benchmark.",
    )
    hybrid_model: str = Field(
        "local:smollm2-135m",
        min_length=3,
        description="hybrid: the chat model inside successive halving (provider:model; local:NAME runs offline, "
        "a hosted provider needs its API key in the environment).",
    )
    hybrid_lr_factor: float = Field(
        2.0, gt=1.0, le=10.0, description="hybrid: a member's lr moves by this factor when the LLM says lower/higher."
    )
    sha_eta: int = Field(2, ge=2, le=8, description="sha: keep the best 1/eta of the trials at each rung.")
    oracle_lrs: list[float] | None = Field(
        None, min_length=1, description="oracle: the static lr grid (null: the instance's start lr x 1/3, 1, 3)."
    )
    oracle_batch_sizes: list[int] | None = Field(
        None, min_length=1, description="oracle: the static batch grid (null: the instance's start batch)."
    )
    pbt_population: int = Field(
        4, ge=2, le=256, description="pbt: population size (the issue asks >= 4; 2 only for tests)."
    )
    pbt_blocks: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="pbt: blocks (reports) per member; null = "
        "max(2, env.max_actions // 2). Each block trains budget / (population x blocks).",
    )
    pbt_max_concurrent: int | None = Field(
        None,
        ge=1,
        description="pbt: members training at once (null: as the Ray cluster's CPUs allow, run.threads each).",
    )
    replicates: int = Field(
        1,
        ge=1,
        le=1000,
        description="Runs per controller x instance, each on the data-order seed every controller "
        "shares (bench/replicates.py); pairs are formed per (instance, replicate).",
    )
