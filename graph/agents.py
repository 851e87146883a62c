"""Who decides each step: a classical sttrl policy, or an LLM through structured output.

An agent is ``decide(observation, history) -> Decided``: the action, a rationale, and the source
that produced it, which the trajectory records:

- ``rule`` / ``random`` / ``static``: sttrl's classical policies.
- ``llm``: the model's structured answer (``with_structured_output(Decision)``).
- ``llm-parser``: the structured answer was unusable, a tolerant parser read the raw text.
- ``fallback-rule``: the LLM failed (after retries on 429s, timeouts, ``tool_use_failed``) and
  nothing usable could be parsed, so the rule-based policy decided.

An LLM agent never raises for a bad answer: an episode never crashes because of its controller.
Prompts are files in ``prompts/`` (``system.md``, ``step.md``, ``actions.yaml``). The agent sees the
observation and recent history, never the hidden split.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from graph.answers import (
    Decision,
    _raw_text,
    _short,
    failed_generation,
    is_transient,
    parse_decision_text,
)
from sttrl.config import Config, secret
from sttrl.control import prompting
from sttrl.control import registry as controllers
from sttrl.control.prompting import PROMPT_DIR, render_history, render_observation  # noqa: F401 - re-exported
from sttrl.control.spec import ControllerSpec, register
from sttrl.env.decision import Controller, Decided
from sttrl.errors import AgentConfigError, ConfigError

DEFAULT_MODEL = "groq:llama-3.3-70b-versatile"

# provider prefix -> (python package, pip name, API key variable or None)
PROVIDERS: dict[str, tuple[str, str, str | None]] = {
    "groq": ("langchain_groq", "langchain-groq", "GROQ_API_KEY"),
    "openai": ("langchain_openai", "langchain-openai", "OPENAI_API_KEY"),
    "anthropic": ("langchain_anthropic", "langchain-anthropic", "ANTHROPIC_API_KEY"),
    "mistralai": ("langchain_mistralai", "langchain-mistralai", "MISTRAL_API_KEY"),
    "google_genai": ("langchain_google_genai", "langchain-google-genai", "GOOGLE_API_KEY"),
    "ollama": ("langchain_ollama", "langchain-ollama", None),
    "local": ("lmformatenforcer", "lm-format-enforcer", None),  # graph/local_llm.py: offline, no key
}


Agent = Controller  # an agent is an episode controller (sttrl.control.registry)


# ----- prompts (rendered by sttrl.control.prompting; the learned controller renders the same turns) -------------
def load_prompt(name: str) -> str:
    """The text of ``prompts/<name>`` (``.md`` is added when the name has no suffix)."""
    try:
        return prompting.load_prompt(name)
    except ConfigError as exc:
        raise AgentConfigError(str(exc)) from None


def load_menu() -> dict[str, str]:
    """``prompts/actions.yaml``, checked against the action registry (a missing or extra action is named)."""
    try:
        return prompting.load_menu()
    except ConfigError as exc:
        raise AgentConfigError(str(exc)) from None


def build_messages(
    observation: dict[str, Any], history: Sequence[dict[str, Any]], cfg: Config, window: int = 8
) -> list:
    """System and per-step messages from the prompt files (:func:`sttrl.control.prompting.prompt_turns`)."""
    try:
        system, human = prompting.prompt_turns(observation, history, cfg, window)
    except ConfigError as exc:
        raise AgentConfigError(str(exc)) from None
    return [SystemMessage(system["content"]), HumanMessage(human["content"])]


# ----- agents ----------------------------------------------------------------------------------
class LLMAgent:
    """A chat model with ``with_structured_output(Decision)``, retries, a parser, then the rule policy."""

    name = "llm"

    def __init__(
        self,
        model: Any,
        cfg: Config,
        *,
        max_attempts: int | None = None,
        backoff_s: float | None = None,
        history_window: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Attempts, back-off and history window default to ``cfg.agent``; keywords override them."""
        a = cfg.agent
        self.model = model
        self.cfg = cfg
        self.allowed = tuple(cfg.env.actions)
        self.max_attempts = a.max_attempts if max_attempts is None else max_attempts
        self.backoff_s = a.backoff_s if backoff_s is None else backoff_s
        self.history_window = a.history_window if history_window is None else history_window
        self.sleep = sleep
        self.structured = model.with_structured_output(Decision, include_raw=True)
        self.fallback = controllers.make_controller("rule", cfg, seed=cfg.run.seed)

    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided:
        messages = build_messages(observation, history, self.cfg, self.history_window)
        errors: list[str] = []
        attempt = 0
        while attempt < self.max_attempts:
            attempt += 1
            raw_text, transient = "", False
            try:
                out = self.structured.invoke(messages)
            except Exception as exc:  # noqa: BLE001 - a controller failure must never end the episode
                errors.append(_short(exc))
                transient = is_transient(exc)
                raw_text = failed_generation(exc)
                if not transient and not raw_text:
                    break  # a permanent error (auth, bad request): retrying will not help
            else:
                parsed, raw = out.get("parsed"), out.get("raw")
                if isinstance(parsed, Decision):
                    if parsed.action.value in self.allowed:
                        return Decided(parsed.action, parsed.rationale.strip(), "llm", attempt, errors)
                    errors.append(f"action {parsed.action.value!r} is not enabled")
                elif out.get("parsing_error") is not None:
                    errors.append(f"parsing error: {str(out['parsing_error']).splitlines()[0][:200]}")
                raw_text = _raw_text(raw)
                if not raw_text.strip():
                    errors.append("empty answer")
            if raw_text.strip():
                found = parse_decision_text(raw_text, self.allowed)
                if found is not None:
                    why = found.rationale or "(parsed from the raw answer)"
                    return Decided(found.action, why, "llm-parser", attempt, errors)
                errors.append("raw answer unreadable")
            if transient and attempt < self.max_attempts and self.backoff_s > 0:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
        rule = self.fallback.decide(observation, history)
        reason = errors[-1] if errors else "no answer"
        return Decided(
            rule.action,
            f"rule policy after the LLM failed ({reason}): {rule.rationale}",
            "fallback-rule",
            attempt,
            errors,
        )


def provider_of(model: str) -> str:
    if ":" not in model:
        raise AgentConfigError(f"--model {model!r} must look like provider:model, e.g. {DEFAULT_MODEL}")
    return model.split(":", 1)[0].strip().lower()


def api_key_name(model: str) -> str | None:
    """The environment variable holding ``model``'s API key (None for keyless providers)."""
    return PROVIDERS.get(provider_of(model), (None, None, None))[2]


def resolve_api_key(model: str) -> str | None:
    """Read ``model``'s API key from the environment or ``.env``. Entry points call this once."""
    name = api_key_name(model)
    return secret(name) if name else None


def build_chat_model(model: str = DEFAULT_MODEL, api_key: str | None = None, cfg: Config | None = None) -> Any:
    """``init_chat_model(model)`` after checking the provider's package and API key (clear errors).
    ``api_key`` is resolved by the entry point; ``cfg.agent`` sets temperature and timeout."""
    provider = provider_of(model)
    package, pip_name, key_name = PROVIDERS.get(provider, (None, None, None))
    if package and importlib.util.find_spec(package) is None:
        raise AgentConfigError(f"model {model!r} needs the {pip_name} package: pip install {pip_name}")
    settings = cfg.agent if cfg is not None else Config().agent
    kwargs: dict[str, Any] = {"temperature": settings.temperature}
    if key_name:
        if not api_key:
            raise AgentConfigError(
                f"model {model!r} needs {key_name}: set it in the environment or in .env "
                f"(or choose --agent rule for an offline run)"
            )
        kwargs["api_key"] = api_key
    if provider == "local":  # a model on this machine (graph/local_llm.py), loaded now
        # torch and transformers: loaded only for a local model, not when Studio imports the graph
        from graph.local_llm import build_local_chat_model

        return build_local_chat_model(model.split(":", 1)[1])
    if provider in ("groq", "openai", "anthropic"):
        kwargs["timeout"] = settings.timeout_s
    # langchain (extra graph) and the provider's package: loaded only when a hosted model is built
    from langchain.chat_models import init_chat_model

    try:
        return init_chat_model(model, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a controller failure must never end the episode
        raise AgentConfigError(f"cannot build chat model {model!r}: {_short(exc)}") from None


def _llm(
    cfg: Config, seed: int = 0, model: str | None = None, api_key: str | None = None, chat_model: Any = None, **_: Any
) -> LLMAgent:
    chat = chat_model if chat_model is not None else build_chat_model(model or DEFAULT_MODEL, api_key, cfg)
    return LLMAgent(chat, cfg)


register(
    ControllerSpec(
        "llm",
        "episode",
        _llm,
        "an LLM through structured output (--model provider:model)",
        needs_key="by provider",
        packages=("langchain",),
        extra="graph",
        color="#d62728",
        offline=False,
    )
)


def agent_names() -> list[str]:
    """Every registered episode controller (the --agent choices)."""
    return controllers.names("episode")


def make_agent(
    name: str, cfg: Config, model: str | None = None, chat_model: Any = None, api_key: str | None = None
) -> Agent:
    """The episode controller called ``name``; ``chat_model`` replaces the one built from ``model`` (tests).
    ``api_key`` is the LLM's key as resolved by the entry point (:func:`resolve_api_key`)."""
    try:
        return controllers.make_controller(
            name, cfg, seed=cfg.run.seed, model=model, chat_model=chat_model, api_key=api_key
        )
    except ConfigError as exc:
        raise AgentConfigError(str(exc)) from None
