"""The LLM controllers' prompt, rendered without LangChain: the same turns reach a hosted model (as
LangChain messages, ``graph.agents.build_messages``), the local model and the learned controller
(``sttrl.policy``), so a policy is trained on exactly the text it later decides from.

Prompts are files in ``prompts/`` (``system.md``, ``step.md``, ``actions.yaml``, ``rewards.yaml``,
``budget.yaml``, ``answers.yaml``, ``facts.yaml``, ``local_json.md``; ``tools.yaml`` for GRPO's tool results). Only
validation-side facts are shown, never the hidden split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from sttrl.config import Config
from sttrl.control.prompt_facts import render_facts
from sttrl.control.prompts import PROMPT_DIR, load_prompt
from sttrl.env.actions import check_menu
from sttrl.env.decision import Decision
from sttrl.errors import ConfigError

OBSERVATION_LINES = (
    ("wer", "validation WER"),
    ("cer", "validation CER"),
    ("wer_step", "step after which the validation WER was last measured"),
    ("val_loss", "validation loss (teacher-forced, no decoding; measured after every block)"),
    ("previous_wer", "validation WER before the last block"),
    ("best_wer", "best validation WER so far"),
    ("train_loss", "mean training loss of the last block"),
    ("status", "status of the last block (ok | oom | nan | diverged)"),
    ("lr", "learning rate"),
    ("batch_size", "batch size"),
    ("grad_accum", "gradient accumulation"),
    ("freeze_layers", "frozen encoder layers"),
    ("max_freeze_layers", "encoder layers in the model"),
    ("memory_gb", "peak memory of the last block (GB)"),
    ("global_step", "optimizer steps so far"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def load_menu() -> dict[str, str]:
    """``prompts/actions.yaml``, checked against the action registry (a missing or extra action is named)."""
    menu = yaml.safe_load(load_prompt("actions.yaml"))
    if not isinstance(menu, dict):
        raise ConfigError(f"{PROMPT_DIR / 'actions.yaml'} must map each action name to its prompt line")
    check_menu(menu, str(PROMPT_DIR / "actions.yaml"))
    return {str(k): str(v) for k, v in menu.items()}


def render_observation(observation: dict[str, Any]) -> str:
    return "\n".join(f"- {label}: {_fmt(observation.get(key))}" for key, label in OBSERVATION_LINES)


def render_history(history: Sequence[dict[str, Any]], window: int) -> str:
    rows = list(history)[-window:] if window else []
    if not rows:
        return "(no steps yet)"
    lines = ["step | action | lr | batch | frozen | loss | WER | status | reward"]
    for r in rows:
        o = r.get("observation", {})
        lines.append(
            " | ".join(
                _fmt(x)
                for x in (
                    r.get("step"),
                    r.get("action"),
                    o.get("lr"),
                    o.get("batch_size"),
                    o.get("freeze_layers"),
                    o.get("train_loss"),
                    o.get("wer"),
                    r.get("status"),
                    r.get("reward"),
                )
            )
        )
    return "\n".join(lines)


def prompt_turns(
    observation: dict[str, Any],
    history: Sequence[dict[str, Any]],
    cfg: Config,
    window: int = 8,
    answer: str = "decision",
) -> list[dict[str, str]]:
    """The system and step turns (``{"role", "content"}``) from the prompt files; ``answer`` picks how the system
    turn says to answer (``prompts/answers.yaml``: ``decision`` or ``tools``)."""

    t, e = cfg.train, cfg.env
    menu_src = load_menu()
    max_freeze = observation.get("max_freeze_layers", 0)
    menu = "\n".join(
        f"- {a}: " + str(menu_src[a]).format(lr_factor=t.lr_factor, batch_factor=t.batch_factor, max_freeze=max_freeze)
        for a in e.actions
    )
    rules = yaml.safe_load(load_prompt("rewards.yaml"))
    if e.reward.kind not in rules:
        raise ConfigError(f"{PROMPT_DIR / 'rewards.yaml'} has no line for env.reward.kind={e.reward.kind!r}")
    answers = yaml.safe_load(load_prompt("answers.yaml"))
    if answer not in answers:
        raise ConfigError(f"{PROMPT_DIR / 'answers.yaml'} has no answer rule {answer!r}")
    block_size = str(yaml.safe_load(load_prompt("budget.yaml"))[e.budget_unit]).format(
        steps_per_action=e.steps_per_action, samples_per_action=e.samples_per_action
    )
    system = load_prompt("system").format(
        block_size=block_size,
        reward_rule=str(rules[e.reward.kind]).format(wer_floor=e.reward.wer_floor, wer_clip=e.reward.wer_clip),
        step_penalty=e.reward.step_penalty,
        oom_penalty=e.reward.oom_penalty,
        nan_penalty=e.reward.nan_penalty,
        divergence_penalty=e.reward.divergence_penalty,
        action_menu=menu,
        lr_min=t.lr_min,
        lr_max=t.lr_max,
        batch_min=t.batch_min,
        batch_max=t.batch_max,
        answer_rule=answers[answer],
    )
    step = int(observation.get("step", 0)) + 1
    human = load_prompt("step").format(
        step=step,
        max_actions=e.max_actions,
        steps_left=e.max_actions - step + 1,
        observation=render_observation(observation),
        history=render_history(history, window),
        facts=render_facts(observation, history, cfg),
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": human}]


def json_skeleton(schema: dict[str, Any]) -> str:
    """A one-line example object for a flat schema: enums as ``a|b|c``, strings as ``...``."""
    defs = schema.get("$defs", {})
    parts = []
    for name, prop in schema.get("properties", {}).items():
        if "$ref" in prop:
            prop = defs.get(prop["$ref"].rsplit("/", 1)[-1], prop)
        if "enum" in prop:
            value = "|".join(str(v) for v in prop["enum"])
        elif prop.get("type") == "string":
            value = "..."
        else:
            value = f"<{prop.get('type', 'value')}>"
        parts.append(f"{json.dumps(name)}: {json.dumps(value, ensure_ascii=False)}")
    return "{" + ", ".join(parts) + "}"


def json_hint_turn(schema: dict[str, Any]) -> dict[str, str]:
    """The system turn a local model gets after the conversation: the schema as a JSON skeleton
    (``prompts/local_json.md``), the local counterpart of a hosted API's tool definition."""
    return {"role": "system", "content": load_prompt("local_json").format(skeleton=json_skeleton(schema)).strip()}


def decision_turns(
    observation: dict[str, Any], history: Sequence[dict[str, Any]], cfg: Config, window: int | None = None
) -> list[dict[str, str]]:
    """Exactly what the local LLM controller sends for ``Decision``: the prompt turns plus the JSON hint."""

    window = cfg.agent.history_window if window is None else window
    return [*prompt_turns(observation, history, cfg, window), json_hint_turn(Decision.model_json_schema())]


def tool_result(history: Sequence[dict[str, Any]], cfg: Config) -> str:
    """What a GRPO rollout's tool call answers after the last record of ``history`` (``prompts/tools.yaml``): the
    block's status and reward, then the next step's state, or the end of the episode with its return."""
    texts = yaml.safe_load(load_prompt("tools.yaml"))
    last, max_actions = history[-1], cfg.env.max_actions
    parts = []
    if last["action"] != "stop":
        parts.append(texts["block"].format(step=last["step"], status=last["status"], reward=_fmt(last["reward"])))
    if last["action"] == "stop" or last["step"] >= max_actions:
        reason = "stop" if last["action"] == "stop" else "budget"
        total = _fmt(float(sum(r["reward"] for r in history)))
        parts.append(texts["ended"].format(reason=reason, step=last["step"], total=total))
    else:
        obs, step = last["observation"], int(last["step"]) + 1
        parts.append(
            texts["next"].format(
                step=step,
                max_actions=max_actions,
                steps_left=max_actions - step + 1,
                observation=render_observation(obs),
                facts=render_facts(obs, history, cfg),
            )
        )
    return "\n".join(parts)
