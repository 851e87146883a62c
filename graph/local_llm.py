"""A local causal LM as a LangChain chat model, offline, with schema-constrained structured output.

``local:<name>`` in ``--model`` builds :class:`LocalChatModel` (see :mod:`sttrl.llm.local` for the
names: ``smollm2-135m``, a model directory, a ``.gguf`` file, a hub id). Options follow a ``?``:
``local:smollm2-135m?temperature=0.7&top_p=0.9&max_rationale_chars=160``. Greedy by default.

``with_structured_output(schema, include_raw=True)`` has the same contract as a hosted model's
(``raw``, ``parsed``, ``parsing_error``): the answer is decoded under lm-format-enforcer's JSON-schema
constraint, so ``parsed`` is always a valid instance; free-text fields are bounded in length.
The schema is also shown to the model as a short JSON skeleton (``prompts/local_json.md``), the
local counterpart of a hosted API rendering its tool definition into the prompt.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any
from urllib.parse import parse_qsl

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from sttrl.control.prompting import json_hint_turn, json_skeleton  # noqa: F401 - json_skeleton re-exported
from sttrl.errors import AgentConfigError, SttrlError
from sttrl.llm.constrained import chat_prompt_ids, generate
from sttrl.llm.local import LoadedModel, load_model, resolve_model

OPTIONS = ("temperature", "top_p", "top_k", "seed", "max_new_tokens", "max_rationale_chars")
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "user"}


class LocalChatModel(BaseChatModel):
    """A transformers causal LM on this machine, as a chat model (no network, no API key)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = Field(description="What sttrl.llm.local.resolve_model resolves: short name, path or hub id.")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0, description="Torch seed set before each sampled answer.")
    max_new_tokens: int = Field(256, ge=1, le=4096, description="Cap for unconstrained answers.")
    max_rationale_chars: int = Field(200, ge=1, le=2000, description="maxLength of free-text fields in JSON answers.")
    _loaded: LoadedModel | None = PrivateAttr(None)

    def load(self) -> LocalChatModel:
        """Resolve and load the weights now (cached per process); raises AgentConfigError on failure."""
        try:
            self._loaded = load_model(resolve_model(self.model_name))
        except SttrlError as exc:
            raise AgentConfigError(str(exc)) from None
        return self

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            self.load()
        assert self._loaded is not None
        return self._loaded

    @property
    def _llm_type(self) -> str:
        return "sttrl-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature, "top_p": self.top_p}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        schema: dict[str, Any] | None = kwargs.get("json_schema")
        turns = [{"role": _ROLES.get(m.type, "user"), "content": str(m.content)} for m in messages]
        if schema is not None:
            turns.append(json_hint_turn(schema))
        loaded = self.loaded
        out = generate(
            loaded,
            chat_prompt_ids(loaded, turns),
            schema=schema,
            max_string_chars=self.max_rationale_chars,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed if self.temperature > 0 else None,
        )
        text = out.text
        for s in stop or []:
            if s and s in text:
                text = text[: text.index(s)]
        meta = {
            "model_name": self.model_name,
            "new_tokens": out.new_tokens,
            "seconds": round(out.seconds, 3),
            "finish_reason": "stop" if out.finished else "length",
            "constrained": schema is not None,
        }
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text, response_metadata=meta))])

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable:
        """Answers decoded under ``schema``'s JSON constraint, parsed into ``schema`` (a pydantic class
        or a JSON-schema dict); ``include_raw`` gives ``{"raw", "parsed", "parsing_error"}``."""
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        json_schema = schema.model_json_schema() if is_model else dict(schema)  # type: ignore[union-attr]
        llm = self.bind(json_schema=json_schema)
        parser: Runnable = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()  # type: ignore[arg-type]
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        none = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks([none], exception_key="parsing_error")


def build_local_chat_model(spec: str) -> LocalChatModel:
    """``spec`` is what follows ``local:``: a model name, then optional ``?key=value&...`` options.
    Loads the model now, so a bad name or file fails before any training."""
    name, _, query = spec.partition("?")
    options: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
    allowed = OPTIONS
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise AgentConfigError(
            f"model option(s) {', '.join(unknown)} in 'local:{spec}' are unknown; valid: {', '.join(allowed)}"
        )
    try:
        model = LocalChatModel(model_name=name, **options)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise AgentConfigError(
            f"model option {'.'.join(map(str, err['loc']))} in 'local:{spec}': {err['msg']}"
        ) from None
    return model.load()
