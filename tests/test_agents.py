"""Decisions: structured output through langchain-core fake chat models, retries, the tolerant parser,
the rule fallback, prompts, and clear errors for a missing API key. No network, no training."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from graph.agents import (
    AgentConfigError,
    Decision,
    LLMAgent,
    build_chat_model,
    build_messages,
    failed_generation,
    is_transient,
    make_agent,
    parse_decision_text,
    resolve_api_key,
)
from sttrl.config import load_config
from sttrl.env.actions import Action

ALL = ("keep", "lr_up", "lr_down", "batch_up", "batch_down", "freeze_more", "freeze_less", "stop")


class FakeToolCallingModel(FakeMessagesListChatModel):
    """A fake chat model that supports ``with_structured_output`` (``bind_tools`` returns itself) and
    plays its ``responses`` in order: messages are returned, exceptions are raised. Counts calls."""

    responses: list[Any]
    calls: int = 0

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        item = self.responses[min(self.calls, len(self.responses) - 1)]
        self.calls += 1
        if isinstance(item, BaseException):
            raise item
        return ChatResult(generations=[ChatGeneration(message=item)])


def call(action, rationale="because the numbers say so"):
    return AIMessage(
        content="", tool_calls=[{"name": "Decision", "args": {"action": action, "rationale": rationale}, "id": "c0"}]
    )


def obs(**kw):
    base = dict(
        step=1,
        steps_left=2,
        global_step=2,
        lr=1e-3,
        batch_size=4,
        grad_accum=1,
        freeze_layers=0,
        max_freeze_layers=2,
        train_loss=3.2,
        wer=1.0,
        cer=0.9,
        best_wer=1.0,
        previous_wer=1.05,
        memory_gb=1.1,
        memory_device="cpu",
        status="ok",
    )
    base.update(kw)
    return base


HISTORY = [{"step": 1, "action": "keep", "status": "ok", "reward": 0.0, "observation": obs()}]
_REQ = httpx.Request("POST", "https://api.groq.com/openai/v1/chat/completions")


def rate_limited():
    import groq

    return groq.RateLimitError(
        "Error code: 429 - rate limit reached", response=httpx.Response(429, request=_REQ), body=None
    )


def timed_out():
    import groq

    return groq.APITimeoutError(request=_REQ)


def tool_use_failed(text):
    import groq

    body = {
        "error": {
            "message": "Failed to call a function. Please adjust your prompt.",
            "type": "invalid_request_error",
            "code": "tool_use_failed",
            "failed_generation": text,
        }
    }
    return groq.BadRequestError(
        "Error code: 400 - tool_use_failed", response=httpx.Response(400, request=_REQ), body=body
    )


@pytest.fixture(scope="module")
def cfg():
    return load_config("debug")


def agent(cfg, *responses, **kw):
    model = FakeToolCallingModel(responses=list(responses))
    return LLMAgent(model, cfg, backoff_s=0.0, **kw), model


def test_decision_schema_is_flat_and_uses_the_action_enum():
    from langchain_core.utils.function_calling import convert_to_openai_tool

    params = convert_to_openai_tool(Decision)["function"]["parameters"]
    assert "$defs" not in params and "$ref" not in str(params)
    assert params["properties"]["action"]["enum"] == [a.value for a in Action]
    assert set(params["required"]) == {"action", "rationale"}


def test_structured_answer_decides(cfg):
    a, model = agent(cfg, call("lr_down", "WER rose"))
    d = a.decide(obs(), HISTORY)
    assert (d.action, d.source, d.rationale, d.attempts, model.calls) == (Action.LR_DOWN, "llm", "WER rose", 1, 1)


@pytest.mark.parametrize(
    "response, expected",
    [
        (call("LR-DOWN"), Action.LR_DOWN),  # enum violation, parser normalizes the tool-call argument
        (AIMessage(content='```json\n{"action": "batch_up", "rationale": "more data per step"}\n```'), Action.BATCH_UP),
        (AIMessage(content='Sure! {"action": "keep", "rationale": "still improving",}'), Action.KEEP),  # malformed JSON
        (AIMessage(content="Action: freeze_more\nBecause the encoder is stable."), Action.FREEZE_MORE),
        (AIMessage(content="I would stop here; nothing improves."), Action.STOP),
    ],
)
def test_unusable_structured_answers_go_through_the_parser(cfg, response, expected):
    d = agent(cfg, response)[0].decide(obs(), HISTORY)
    assert d.action is expected and d.source == "llm-parser" and d.rationale


@pytest.mark.parametrize(
    "responses",
    [
        [AIMessage(content="")] * 3,  # empty answers
        [call("explode")] * 3,  # invalid action
        [AIMessage(content="lr_up or lr_down, hard to say")] * 3,  # ambiguous text
        [AIMessage(content="{not json at all")] * 3,  # malformed JSON with no action
    ],
)
def test_unreadable_answers_fall_back_to_the_rule_policy(cfg, responses):
    a, model = agent(cfg, *responses)
    d = a.decide(obs(), HISTORY)
    assert d.source == "fallback-rule" and d.action.value in cfg.env.actions
    assert "rule policy after the LLM failed" in d.rationale and d.errors
    assert model.calls == 3


def test_disabled_action_is_not_accepted(cfg):
    small = load_config("debug", overrides=["env.actions=[keep, lr_down, stop]"])
    a, _ = agent(small, call("lr_up"), call("lr_up"), call("lr_down", "ok then"))
    d = a.decide(obs(), HISTORY)
    assert d.action is Action.LR_DOWN and d.source == "llm" and d.attempts == 3
    assert any("not enabled" in e for e in d.errors)


def test_transient_errors_are_retried_with_backoff(cfg):
    sleeps: list[float] = []
    model = FakeToolCallingModel(responses=[rate_limited(), timed_out(), call("keep", "fine")])
    a = LLMAgent(model, cfg, backoff_s=0.5, sleep=sleeps.append)
    d = a.decide(obs(), HISTORY)
    assert (d.action, d.source, d.attempts) == (Action.KEEP, "llm", 3)
    assert sleeps == [0.5, 1.0] and len(d.errors) == 2 and "RateLimitError" in d.errors[0]


def test_retries_exhausted_fall_back_to_rule(cfg):
    a, model = agent(cfg, rate_limited(), rate_limited(), timed_out(), call("keep"))
    d = a.decide(obs(status="nan"), HISTORY)
    assert d.source == "fallback-rule" and d.action is Action.LR_DOWN and model.calls == 3


def test_tool_use_failed_generation_is_parsed(cfg):
    gen = '<function=Decision>{"action": "lr_up", "rationale": "loss falls slowly"}</function>'
    a, model = agent(cfg, tool_use_failed(gen))
    d = a.decide(obs(), HISTORY)
    assert (d.action, d.source, d.rationale, model.calls) == (Action.LR_UP, "llm-parser", "loss falls slowly", 1)
    assert failed_generation(tool_use_failed("x")) == "x"


def test_permanent_errors_are_not_retried(cfg):
    a, model = agent(cfg, ValueError("invalid api key"), call("keep"))
    d = a.decide(obs(), HISTORY)
    assert d.source == "fallback-rule" and model.calls == 1


def test_is_transient():
    assert is_transient(rate_limited()) and is_transient(timed_out()) and is_transient(tool_use_failed("x"))
    assert is_transient(TimeoutError()) and is_transient(ConnectionError())
    assert not is_transient(ValueError("bad")) and not is_transient(KeyError("x"))


def test_parser_edge_cases():
    assert parse_decision_text("", ALL) is None
    assert parse_decision_text("   ", ALL) is None
    assert parse_decision_text('{"action": "nope"}', ALL) is None
    assert (
        parse_decision_text('{"name": "Decision", "arguments": "{\\"action\\": \\"keep\\"}"}', ALL).action
        is Action.KEEP
    )
    assert parse_decision_text("ACTION = Batch Down", ALL).action is Action.BATCH_DOWN
    assert parse_decision_text("keep", ("lr_up", "stop")) is None


def test_prompt_shows_observation_and_history_not_the_hidden_split(cfg):
    msgs = build_messages(obs(wer=0.8765), HISTORY, cfg)
    text = "\n".join(m.content for m in msgs)
    assert "0.8765" in text and "step | action" in text and "Step 2 of 3" in text
    assert "lr_up: multiply the learning rate by 1.5" in text
    hidden = cfg.data.hidden_domain
    assert hidden not in text and "test" not in text.lower().split() and "hidden" not in text.lower()
    assert "{" not in msgs[1].content  # every placeholder filled


def test_policy_agents_and_unknown_names(cfg):
    d = make_agent("rule", cfg).decide(obs(), [])
    assert d.source == "rule" and d.action is Action.KEEP
    assert make_agent("random", cfg).decide(obs(), []).source == "random"
    with pytest.raises(
        AgentConfigError,
        match="unknown controller .genius.; valid: contextual, learned, llm, random, rule, schedule, static",
    ):
        make_agent("genius", cfg)


def test_missing_api_key_is_a_clear_error(cfg, monkeypatch, tmp_path):
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    model = "groq:llama-3.3-70b-versatile"
    with pytest.raises(AgentConfigError, match="needs GROQ_API_KEY"):
        make_agent("llm", cfg, model, api_key=resolve_api_key(model))
    with pytest.raises(AgentConfigError, match="provider:model"):
        build_chat_model("llama-3.3-70b-versatile")
    with pytest.raises(AgentConfigError, match="pip install langchain-openai"):
        build_chat_model("openai:gpt-4o-mini")


def test_groq_model_builds_offline_with_a_key(cfg, monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", "gsk_fake_key_for_tests")
    model = "groq:llama-3.3-70b-versatile"
    a = make_agent("llm", cfg, model, api_key=resolve_api_key(model))  # the entry point resolves the key once
    assert isinstance(a, LLMAgent)
    assert "gsk_fake_key_for_tests" not in repr(a.model)
