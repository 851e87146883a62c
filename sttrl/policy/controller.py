"""The ``learned`` controller: a model directory written by ``python -m sttrl.learn`` decides each step through
the local LLM's path: the same prompt turns (:func:`sttrl.control.prompting.decision_turns`), the same chat template and
JSON-schema-constrained decoding (:mod:`sttrl.llm.constrained`), so every answer is a valid ``Decision``.
Greedy unless ``policy.temperature`` is asked for with ``sample=True``. The trajectory's ``source`` is ``learned``.

:func:`sample_decision` is also how the outcome stage samples its k decisions per state.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sttrl.control.classical import RulePolicy
from sttrl.control.spec import ControllerSpec, register
from sttrl.env.actions import Action
from sttrl.env.decision import Decided
from sttrl.errors import ConfigError, SttrlError

SOURCE = "learned"
META_FILE = "sttrl_policy.json"


def decision_schema(allowed: Sequence[str]) -> dict[str, Any]:
    """``Decision``'s JSON schema with the action enum narrowed to ``allowed`` (the enabled actions)."""
    from sttrl.env.decision import Decision

    schema = copy.deepcopy(Decision.model_json_schema())
    schema["$defs"]["Action"]["enum"] = [a for a in schema["$defs"]["Action"]["enum"] if a in allowed]
    return schema


def sample_decision(
    loaded: Any,
    prompt_ids: list[int],
    allowed: Sequence[str],
    *,
    constrained: bool = True,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    max_chars: int = 80,
    seed: int | None = None,
) -> tuple[Any, Any]:
    """One answer to ``prompt_ids``: ``(Generated, Decision or None)``; None when the text is not a valid
    Decision (possible only with ``constrained=False`` or a length cut)."""
    from sttrl.llm.constrained import generate, max_json_chars
    from sttrl.policy.core import parse_decision

    schema = decision_schema(allowed)
    out = generate(
        loaded,
        prompt_ids,
        schema=schema if constrained else None,
        max_string_chars=max_chars,
        max_new_tokens=max_json_chars(schema, max_chars),
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
    )
    return out, parse_decision(out.text, allowed)


@dataclass
class LearnedController:
    """Decides with a trained model directory (see the module docstring)."""

    cfg: Any
    loaded: Any
    sample: bool = False
    seed: int = 0
    name: str = SOURCE
    trace: list[tuple[list[int], list[int], bool]] | None = None  # (prompt ids, answer ids, valid) per decision

    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided:
        from sttrl.control.prompting import decision_turns
        from sttrl.llm.constrained import chat_prompt_ids

        p = self.cfg.policy
        ids = chat_prompt_ids(self.loaded, decision_turns(observation, history, self.cfg))
        temp = p.temperature if self.sample else 0.0
        out, decision = sample_decision(
            self.loaded,
            ids,
            self.cfg.env.actions,
            temperature=temp,
            top_p=p.top_p,
            top_k=p.top_k,
            max_chars=p.max_rationale_chars,
            seed=self.seed * 100_003 + len(history) if temp > 0 else None,
        )
        if self.trace is not None:
            self.trace.append((ids, out.ids or [self.loaded.tokenizer.eos_token_id], decision is not None))
        if decision is None:  # a length cut: the rule policy decides, and the trajectory says so
            rule = RulePolicy(tuple(self.cfg.env.actions)).decide(observation, history)
            return Decided(
                rule.action,
                f"rule policy: the learned model's answer was unusable: {rule.rationale}",
                "fallback-rule",
                1,
                [f"invalid answer {out.text[:80]!r}"],
            )
        return Decided(Action(decision.action.value), decision.rationale.strip(), SOURCE, 1)


def load_learned(model: str) -> Any:
    """The model directory (or any local model name) loaded once per process; one-line errors."""
    from sttrl.llm.local import load_model, resolve_model

    return load_model(resolve_model(model))


def _learned(cfg: Any, seed: int = 0, model: str | None = None, **_: Any) -> LearnedController:
    if not model:
        raise ConfigError("the learned controller needs --model DIR (a directory written by python -m sttrl.learn)")
    try:
        loaded = load_learned(model)
    except SttrlError as exc:
        raise ConfigError(str(exc)) from None
    if stage_of(model) == "grpo":  # a tool-calling policy: it decides through its tools (sttrl.policy.tools)
        from sttrl.policy.tools import ToolController  # the registry stays light: sessions and data load for grpo only

        return ToolController(cfg, loaded)
    return LearnedController(cfg, loaded, seed=seed)


def stage_of(model: str) -> str | None:
    """The stage recorded in a model directory written by ``python -m sttrl.learn`` (None for any other model)."""
    meta = Path(model) / META_FILE
    return json.loads(meta.read_text()).get("stage") if meta.is_file() else None


register(
    ControllerSpec(
        SOURCE,
        "episode",
        _learned,
        "a model trained by python -m sttrl.learn (--model DIR), JSON-constrained decoding",
        packages=("lmformatenforcer",),
        extra="local-llm",
        color="#9467bd",
    )
)
