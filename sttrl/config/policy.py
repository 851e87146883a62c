"""The ``policy`` section of the config (learning a controller) and where its presets live
(``sttrl/presets/policy/<name>.yaml``); sweeps over it are :mod:`sttrl.policy.settings`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

POLICY_PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "policy"


class PolicyConfig(BaseModel):
    """How a controller is learned (``python -m sttrl.learn``) and how the learned one samples."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    stage: Literal["sft", "rloo", "dpo", "episodes", "grpo"] = Field(
        "sft",
        description="sft: the teacher's best decision per state, loss on the decision tokens only; rloo: policy "
        "gradient with a leave-one-out baseline over k sampled decisions per state, rewards from measured outcomes; "
        "dpo: pairs (better, worse action at the same state) from the teacher data; episodes: RLOO over k whole "
        "episodes per instance in the environment, rewards = their returns; grpo: TRL's GRPOTrainer on live "
        "episodes, one tool per action, rewards = the episodes' returns (sttrl.policy.grpo).",
    )
    lr: float = Field(1e-5, gt=0.0, le=1.0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    batch_size: int = Field(
        8,
        ge=1,
        le=4096,
        description="States (rloo: each with k samples), pairs (dpo) or "
        "instances (episodes: each with k episodes) per optimizer step.",
    )
    steps: int = Field(100, ge=1, le=1_000_000, description="Optimizer steps of the stage.")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Max global gradient norm; null = no clipping.")
    train_top_layers: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Train only the top N decoder layers and "
        "the final norm (embeddings and the layers below frozen: backward stops "
        "there, about half a step's cost on a long prompt); null = every weight.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # outcome stage (rloo)
    k_samples: int = Field(4, ge=2, le=256, description="Decisions sampled per state for the leave-one-out baseline.")
    normalize_advantages: bool = Field(True, description="Advantages divided by their batch std after centring.")
    kl_coef: float = Field(0.05, ge=0.0, le=100.0, description="Initial weight of KL(policy || reference).")
    adaptive_kl: bool = Field(True, description="Ziegler et al.'s controller moves kl_coef towards kl_target.")
    kl_target: float = Field(0.5, gt=0.0, description="Target KL per decision (nats, summed over its tokens).")
    kl_horizon: int = Field(100, ge=1, description="Adaptive KL horizon (in decisions).")
    entropy_coef: float = Field(0.0, ge=0.0, le=10.0, description="Weight of the entropy bonus (decision tokens).")
    reference: Literal["frozen", "periodic", "ema"] = Field(
        "frozen",
        description="frozen: the starting model; periodic: copied from the policy every ref_period steps; "
        "ema: ref <- (1 - ema_rate) ref + ema_rate policy after every step.",
    )
    ema_rate: float = Field(0.05, gt=0.0, le=1.0)
    ref_period: int = Field(10, ge=1, description="Steps between reference copies (reference=periodic).")
    failed_probe_penalty: float = Field(
        1.0,
        ge=0.0,
        description="A probe that failed (oom/nan/diverged) is worth the state's worst measured reward minus this.",
    )
    # what is trained and how decisions are chosen (sttrl.policy.scoring)
    train_on: Literal["action", "decision"] = Field(
        "action",
        description="sft/dpo loss tokens: action, the tokens of the action's value (the rationale only copies "
        "the prompt's numbers); decision, the whole JSON and its end of sequence.",
    )
    tie_tolerance: float = Field(
        0.0,
        ge=0.0,
        description="Teacher labels: every probed action whose measured value is within this of the state's best "
        "is a best action too (a tie; 0: equal values only). Sft weighs each tied action 1/ties; the held-out "
        "accuracy counts any of them as right.",
    )
    holdout_fraction: float = Field(
        0.25,
        ge=0.0,
        lt=1.0,
        description="Share of the teacher data's instances (of its states when there is one instance) held out of "
        "training: sttrl.learn prints the action accuracy on them against the majority class; 0: no check.",
    )
    # sampling: the outcome stages sample actions from the softmax over their scores; the controller takes the best
    temperature: float = Field(
        1.0, gt=0.0, le=5.0, description="Temperature of the softmax the outcome stages sample actions from."
    )
    max_rationale_chars: int = Field(80, ge=1, le=2000, description="Longest rationale (the state's numbers).")
    # grpo (TRL's generation loop samples tool calls as text)
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="grpo: nucleus sampling of the rollouts' completions.")
    top_k: int | None = Field(None, ge=1, description="grpo: top-k sampling of the rollouts' completions (null: off).")
    invalid_json_penalty: float = Field(
        1.0,
        ge=0.0,
        description="grpo: subtracted from a rollout's return when the model stopped calling tools (text that is no "
        "tool call) before its episode ended.",
    )
    # dpo
    dpo_beta: float = Field(0.1, gt=0.0, le=100.0, description="DPO temperature beta.")
    dpo_min_gap: float = Field(0.0, ge=0.0, description="Pairs need outcomes at least this far apart.")
    # data
    max_episode_length: int = Field(
        8,
        ge=1,
        le=10_000,
        description="Episode rows past this step are dropped; "
        "episodes of the episodes stage end after this many decisions.",
    )
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="Discount of episode returns-to-go (episode rows' outcome).")
    # grpo
    max_completion_tokens: int = Field(
        1024,
        ge=16,
        le=65_536,
        description="grpo: tokens of a rollout's whole completion (tool calls, tool answers and text); a tool answer "
        "that would pass it ends the rollout (TRL's max_completion_length).",
    )


def policy_presets() -> list[str]:
    return sorted(p.stem for p in POLICY_PRESET_DIR.glob("*.yaml"))
