"""A tool-calling policy over the episode: each enabled action is a tool (its docstring the action's meaning from
the registry), a rollout is one episode (:class:`~sttrl.env.session.EpisodeSession`) whose tool calls train blocks,
and the conversation is the one TRL's ``GRPOTrainer`` builds: the system and step turns of the LLM controllers'
prompt (:func:`sttrl.control.prompting.prompt_turns` with ``answer="tools"``), then per step the assistant's tool
call and the tool's answer (:func:`sttrl.control.prompting.tool_result`).

:func:`rollout_class` is what ``environment_factory`` builds (:mod:`sttrl.policy.grpo`); :class:`ToolController`
decides with a model directory trained that way (``python -m graph.run --agent learned --model DIR``): it renders
the same conversation and takes the tool call the policy finds most likely (log-probability of each action's whole
assistant turn, the template's own tokens), so every decision is a valid action.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sttrl.config import Config
from sttrl.control.prompting import prompt_turns, tool_result
from sttrl.env.actions import Action, spec_of
from sttrl.env.decision import Decided
from sttrl.env.session import EpisodeSession
from sttrl.errors import ModelError, SessionError

SOURCE = "learned"
ROLLOUT_SOURCE = "grpo"


def tool_call(action: str) -> dict[str, Any]:
    """The assistant turn that calls ``action``'s tool (no arguments)."""
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": action, "arguments": {}}}],
    }


@dataclass
class Outcome:
    """A finished rollout: its return as the reward, the trajectory's records, the run id and the instance."""

    reward: float
    done: bool
    records: list[dict[str, Any]]
    run_id: str | None
    instance: dict[str, Any] | None


class Rollout:
    """One GRPO rollout: an episode under ``root``; the subclass made by :func:`rollout_class` adds the tools. The
    episode's model is freed as soon as it ends (or when the rollout is scored), so a group holds only the episodes
    still running."""

    def __init__(self, cfg: Config, root: Path | None, invalid_penalty: float = 1.0) -> None:
        self._cfg, self._root, self._penalty = cfg, root, invalid_penalty
        self._session: EpisodeSession | None = None
        self.outcome: Outcome | None = None

    def reset(self, instance: int | None = None, seed: int | None = None, **_: Any) -> str:
        """Start the rollout's episode at ``instance`` (from the dataset row; every rollout of a group gets the same
        row, so the same instance, seed and starting state); the step turn's text."""
        if self._root is None:
            raise SessionError("this rollout has no run directory root")
        if self._session is not None:
            self._session.close(drop_checkpoints=True)
        self._session = EpisodeSession(self._cfg, self._root, source=ROLLOUT_SOURCE)
        self.outcome = None
        obs = self._session.reset(seed=seed, instance=instance)
        return prompt_turns(obs, [], self._cfg, answer="tools")[1]["content"]

    def _act(self, action: str) -> str:
        s = self._session
        if self.outcome is not None:
            raise SessionError("the episode has ended: do not call another tool")
        if s is None or not s.started:
            raise SessionError("no episode: the rollout was not reset")
        s.step(action, source=ROLLOUT_SOURCE)
        records = s.env.trajectory.records()
        if s.done:
            self._finish()
        return tool_result(records, self._cfg)

    def _finish(self) -> Outcome:
        """Score the episode (the invalid-answer penalty when it did not end) and free its model and checkpoints."""
        s = self._session
        if s is None or not s.started:
            self.outcome = Outcome(-self._penalty, False, [], None, None)
            return self.outcome
        records, instance = s.env.trajectory.records(), s.env.runtime.cfg.env.instance
        reward = s.total_reward - (0.0 if s.done else self._penalty)
        self.outcome = Outcome(reward, s.done, records, s.run_id, instance)
        s.close(drop_checkpoints=True)
        return self.outcome

    def get_reward(self) -> float:
        """The episode's return (sum of its step rewards), minus the invalid-answer penalty when the policy stopped
        calling tools before the episode ended."""
        return (self.outcome or self._finish()).reward


def _tool(action: str) -> Callable[[Rollout], str]:
    def tool(self) -> str:  # type: ignore[no-untyped-def]  # no hint on self: transformers turns hints into the schema
        return self._act(action)

    meaning = spec_of(action).meaning
    tool.__name__ = tool.__qualname__ = action
    tool.__doc__ = f"{meaning[0].upper()}{meaning[1:]}.\n\nReturns:\n    What the block did and the state after it.\n"
    return tool


def rollout_class(actions: Sequence[str]) -> type[Rollout]:
    """A :class:`Rollout` subclass with one tool method per action (TRL exposes every public method as a tool)."""
    return type("SttrlEpisode", (Rollout,), {a: _tool(a) for a in actions})


def tools_of(cfg: Config) -> list[Callable[..., str]]:
    """The tools as TRL renders them into the prompt: the bound methods of a rollout (no episode is started)."""
    rollout = rollout_class(cfg.env.actions)(cfg, None)
    return [getattr(rollout, a) for a in cfg.env.actions]


def conversation(start: dict[str, Any], history: Sequence[dict[str, Any]], cfg: Config) -> list[dict[str, Any]]:
    """The messages of a rollout after ``history``: system and step turns (from the starting observation ``start``),
    then per record the assistant's tool call and the tool's answer."""
    system, user = prompt_turns(start, [], cfg, answer="tools")
    messages: list[dict[str, Any]] = [system, user]
    for i, record in enumerate(history):
        messages.append(tool_call(record["action"]))
        messages.append({"role": "tool", "name": record["action"], "content": tool_result(history[: i + 1], cfg)})
    return messages


def start_observation(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The starting observation rebuilt from the first record (after a resume the controller has not seen it): its
    hyperparameters and starting WER; the starting loss and CER are not recorded and show as unknown."""
    first = history[0]
    obs = dict(first["observation"])
    obs.update(first["hp_before"])
    start_wer = obs["previous_wer"]
    obs.update(step=0, steps_left=obs["steps_left"] + 1, global_step=0, train_loss=None, wer=start_wer, cer=None)
    obs.update(best_wer=start_wer, status="ok")
    return obs


def _ids(tok: Any, messages: list[dict[str, Any]], tools: list[Any], generation_prompt: bool) -> list[int]:
    out = tok.apply_chat_template(messages, tools=tools, tokenize=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "input_ids") else out)


class ToolController:
    """Decides with a GRPO-trained model directory (see the module docstring)."""

    name = SOURCE

    def __init__(self, cfg: Config, loaded: Any) -> None:
        self.cfg, self.loaded = cfg, loaded
        self.tools = tools_of(cfg)
        self._start: dict[str, Any] | None = None

    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided:
        import torch  # the policy's forward pass; the module imports without torch

        from sttrl.policy import core  # torch, as above

        if not history:
            self._start = dict(observation)
        messages = conversation(self._start or start_observation(history), history, self.cfg)
        tok = self.loaded.tokenizer
        prompt = _ids(tok, messages, self.tools, True)
        options = []
        for action in self.cfg.env.actions:
            full = _ids(tok, [*messages, tool_call(action)], self.tools, False)
            if full[: len(prompt)] != prompt:
                raise ModelError("the chat template is not prefix-preserving: tool calls cannot be scored")
            turn = full[len(prompt) :]
            end = turn.index(tok.eos_token_id) + 1 if tok.eos_token_id in turn else len(turn)
            options.append(turn[:end])
        batch = core.make_batch([prompt] * len(options), options, tok.pad_token_id)
        with torch.no_grad():
            logp = core.decision_logprobs(core.forward_logits(self.loaded.model, batch), batch).tolist()
        ranked = sorted(zip(logp, self.cfg.env.actions, strict=True), reverse=True)
        (best_lp, best), (next_lp, runner_up) = ranked[0], ranked[1] if len(ranked) > 1 else ranked[0]
        why = f"tool call {best} (log-probability {best_lp:.3g}; next {runner_up} {next_lp:.3g})"
        return Decided(Action(best), why, SOURCE, 1)
