"""The ``learned`` controller: a model directory written by ``python -m sttrl.learn`` decides each step by scoring.

It renders the LLM controller's prompt turns (:func:`sttrl.control.prompting.decision_turns`) through the model's chat
template, scores every enabled action's ``Decision`` JSON (the log-likelihood of its action tokens,
:mod:`sttrl.policy.scoring`) and takes the best; with ``sample=True`` (the episodes stage) it samples from the softmax
over the scores at ``policy.temperature``. Every answer is a valid ``Decision``; the rationale states the chosen
action's probability and the state's numbers, and the trajectory's ``source`` is ``learned``. ``trace`` keeps what
the episodes stage trains on: per decision, the prompt, the rationale and the action taken.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sttrl.control.spec import ControllerSpec, register
from sttrl.env.actions import Action
from sttrl.env.decision import Decided
from sttrl.errors import ConfigError, SttrlError
from sttrl.llm.local import load_model, resolve_model
from sttrl.train.exclusive import exclusive

SOURCE = "learned"
META_FILE = "sttrl_policy.json"


@dataclass
class LearnedController:
    """Decides with a trained model directory (see the module docstring)."""

    cfg: Any
    loaded: Any
    sample: bool = False
    seed: int = 0
    name: str = SOURCE
    trace: list[tuple[list[int], str, int]] | None = None  # (prompt ids, rationale, action index) per decision

    @exclusive  # the machine's compute lock (sttrl.train.exclusive)
    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided:
        from sttrl.control.prompting import decision_turns  # torch and the model: only when it decides
        from sttrl.llm.constrained import chat_prompt_ids
        from sttrl.policy.data import state_rationale
        from sttrl.policy.scoring import choose, describe

        p = self.cfg.policy
        ids = chat_prompt_ids(self.loaded, decision_turns(observation, history, self.cfg))
        rationale = state_rationale(observation, p.max_rationale_chars)
        temperature = p.temperature if self.sample else 0.0
        choice = choose(
            self.loaded, ids, self.cfg.env.actions, rationale, temperature, self.seed * 100_003 + len(history)
        )
        if self.trace is not None:
            self.trace.append((ids, rationale, choice.index))
        return Decided(Action(choice.action), describe(choice, rationale), SOURCE, 1)


def load_learned(model: str) -> Any:
    """The model directory (or any local model name) loaded once per process; one-line errors."""
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
        "a model trained by python -m sttrl.learn (--model DIR): scores every enabled action, takes the best",
        color="#9467bd",
    )
)
