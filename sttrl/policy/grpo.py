"""``policy.stage=grpo``: GRPO through TRL's ``GRPOTrainer`` on live episodes, with an ``environment_factory``.

Each rollout is one episode (:class:`~sttrl.policy.tools.Rollout`); every enabled action is a tool whose docstring
is the action's meaning, so the model steers by calling tools, and each call trains, evaluates and rewards a real
block through the one episode loop. A rollout's reward is its episode's return (``get_reward``; minus
``policy.invalid_json_penalty`` when the model stopped calling tools before the episode ended). The dataset holds one
row per group: ``batch_size`` rows per step, each repeated ``k_samples`` times by TRL, so a group's rollouts share
the instance, the seed and therefore the starting state (and, with ``cache.enabled``, every block they share is
trained once: :mod:`sttrl.env.blockcache`).

TRL does here what ``sttrl.learn``'s own stages do by hand: sampling (its generation loop, multi-turn with tool
calls), the group-relative advantages, the clipped policy loss with the KL term (``policy.kl_coef`` as ``beta``; the
reference frozen, or synced every ``ref_period`` steps, or mixed in at ``ema_rate`` every step), the optimizer and
its logging. ``policy.adaptive_kl`` has no counterpart there (``beta`` is fixed).

The tokenizer needs a chat template TRL can parse tool calls from (``trl/chat_templates``); a ChatML model whose own
template is not one of them (SmolLM2's) gets Qwen2.5's ChatML template with tools. Rollout run directories go under
``run.out_dir/policy-grpo/<id>/rollouts`` (checkpoints removed after each episode) and ``rollouts.jsonl`` there holds
each rollout's instance, actions and reward.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template, supports_tool_calling

from sttrl.config import Config
from sttrl.control.prompting import prompt_turns
from sttrl.env.session import EpisodeSession
from sttrl.errors import ConfigError
from sttrl.llm.local import serializable
from sttrl.policy.episodes import episode_config
from sttrl.policy.stages import Learner
from sttrl.policy.tools import Outcome, Rollout, rollout_class
from sttrl.policy.trl_common import train, training_arguments
from sttrl.rundir import new_run_id
from sttrl.train.exclusive import exclusive

ROLLOUTS = "rollouts.jsonl"


def prepare_tool_template(tok: Any) -> str:
    """Give ``tok`` a chat template TRL parses tool calls from: its own when TRL knows it (``"own"``), else Qwen2.5's
    ChatML template for a tokenizer with ChatML tokens (``"qwen2_5"``); a ConfigError otherwise."""
    tok.padding_side = "left"
    if getattr(tok, "chat_template", None) and supports_tool_calling(tok):
        try:
            add_response_schema(copy.copy(tok))
            return "own"
        except ValueError:
            pass
    specials = set(tok.get_vocab())
    if {"<|im_start|>", "<|im_end|>"} <= specials:
        tok.chat_template = qwen2_5_chat_template
        return "qwen2_5"
    raise ConfigError(
        "the model's chat template cannot call tools and the tokenizer has no ChatML tokens (<|im_start|>, "
        "<|im_end|>): grpo needs a chat model TRL knows (trl/chat_templates: Qwen, Llama 3.1/3.2, Gemma, …)"
    )


def system_turn(cfg: Config, root: Path) -> dict[str, str]:
    """The system turn every rollout starts with (the action menu names the model's encoder layers, so one episode
    start measures them)."""
    probe = EpisodeSession(cfg, root / "probe", source="grpo")
    try:
        obs = probe.reset(seed=cfg.run.seed)
    finally:
        probe.close(drop_checkpoints=True)
    return prompt_turns(obs, [], cfg, answer="tools")[0]


class _LoggedRollout(Rollout):
    """A rollout that appends its step, run id, instance, actions and reward to ``rollouts.jsonl`` once scored."""

    log_path: Path | None = None
    step = 0

    def _finish(self) -> Outcome:
        out = super()._finish()
        if self.log_path is not None:
            row = {"step": type(self).step, "run_id": out.run_id, "instance": out.instance, "reward": out.reward}
            row["actions"] = [r["action"] for r in out.records]
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        return out


def _grpo_args(cfg: Config, out: Path, device: str) -> Any:
    p = cfg.policy
    sync = p.kl_coef > 0 and p.reference != "frozen"
    return GRPOConfig(
        num_generations=p.k_samples,
        gradient_accumulation_steps=1,
        beta=p.kl_coef,
        sync_ref_model=sync,
        ref_model_mixup_alpha=p.ema_rate if p.reference == "ema" else 1.0,
        ref_model_sync_steps=1 if p.reference == "ema" else p.ref_period,
        entropy_coef=p.entropy_coef,
        scale_rewards="group" if p.normalize_advantages else "none",
        temperature=p.temperature if p.temperature > 0 else 1.0,
        top_p=p.top_p,
        top_k=p.top_k or 0,
        max_completion_length=p.max_completion_tokens,
        max_tool_calling_iterations=cfg.env.max_actions,
        shuffle_dataset=False,  # rows in order: instances cycle as in the episodes stage
        **training_arguments(cfg, out, device, p.k_samples * p.batch_size),
    )


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def train_grpo(
    lr: Learner, ds: Any = None, on_step: Callable[[dict[str, float]], None] | None = None
) -> list[dict[str, float]]:
    """GRPO on live episodes (see the module docstring); ``ds`` is not used."""
    cfg = episode_config(lr.cfg)
    p = cfg.policy
    prepare_tool_template(lr.tok)
    root = (Path(cfg.run.out_dir) / "policy-grpo" / new_run_id()).resolve()
    spec = cfg.env.instances
    instances: list[int | None] = list(spec.train_seeds) if spec is not None else [None]
    system = system_turn(cfg, root)
    rows = [
        {"prompt": [system, {"role": "user", "content": ""}], "instance": instances[i % len(instances)]}
        for i in range(p.steps * p.batch_size)
    ]
    for row in rows:
        row["seed"] = cfg.run.seed
    if p.kl_coef > 0:  # TRL builds the reference from the model's path: a snapshot of the starting policy
        serializable(lr.model).save_pretrained(root / "reference")
        lr.model.config._name_or_path = str(root / "reference")
    cls = type("SttrlEpisode", (_LoggedRollout, rollout_class(cfg.env.actions)), {"log_path": root / ROLLOUTS})

    class StepOfRollouts(TrainerCallback):  # rollouts.jsonl names the optimizer step a rollout is scored for
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            cls.step = state.global_step + 1

    device = str(next(lr.model.parameters()).device.type)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*environment_factory.*experimental", category=UserWarning)
        trainer = GRPOTrainer(
            model=lr.model,
            processing_class=lr.tok,
            args=_grpo_args(cfg, root / "trainer", device),
            train_dataset=Dataset.from_list(rows),
            environment_factory=lambda: cls(cfg, root / "rollouts", p.invalid_json_penalty),
            callbacks=[StepOfRollouts()],
        )
    log = train(trainer, lr, on_step)
    if trainer.chat_template:  # TRL trained with its prefix-preserving variant: the policy decides with it
        lr.tok.chat_template = trainer.chat_template
    return log
