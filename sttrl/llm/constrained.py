"""Decoding constrained to a JSON schema, over any transformers causal LM (lm-format-enforcer).

Every completion is a JSON object that matches the schema: at each step only the tokens that keep
the text a valid prefix of such an object are allowed (greedy by default, sampling when a
temperature is given). Tokens holding control characters (newline, tab) are never allowed: the
parser would let them into strings, which strict JSON forbids; a space separates tokens instead.
Tokens that decode to part of a UTF-8 character are never allowed either: they add no character, so
a string could grow in tokens without growing in length and never reach its bound (text is written
from whole-character tokens). String fields get a ``maxLength`` when the schema has none and
whitespace between tokens is limited, so the object always ends within ``max_new_tokens`` (each
token is at least one character). lm-format-enforcer's own transformers integration imports a module that
transformers 5 removed, so the small glue (token table, logits processor) lives here.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessorList

from sttrl import extras
from sttrl.llm.local import LoadedModel
from sttrl.train.exclusive import exclusive

MAX_WHITESPACE = 1  # consecutive whitespace characters allowed outside strings


def bound_strings(schema: dict[str, Any], max_chars: int) -> dict[str, Any]:
    """A copy of ``schema`` in which every string without ``enum``/``maxLength`` gets ``maxLength``."""
    out = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node and "pattern" not in node:
                node["maxLength"] = min(int(node.get("maxLength", max_chars)), max_chars)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(out)
    return out


def max_json_chars(schema: dict[str, Any], max_chars: int) -> int:
    """A safe token budget for one object of a flat schema whose strings are bounded by ``max_chars``."""
    props = schema.get("properties", {})
    per_field = 0
    for name in props:
        per_field += len(name) + 8 + 4 * MAX_WHITESPACE + max_chars
    return 16 + per_field


def _tokenizer_data(loaded: LoadedModel) -> Any:
    """lm-format-enforcer's per-tokenizer tables (every regular token's text), built once per model."""
    data = loaded.extras.get("lmfe_tokenizer_data")
    if data is not None:
        return data
    extras.require("lmformatenforcer", extra="local-llm", what="constrained decoding of a local model")
    from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData  # optional: the local-llm extra

    tok = loaded.tokenizer
    vocab_size = len(tok)
    token_0 = tok.encode("0", add_special_tokens=False)[-1]
    special = set(tok.all_special_ids)
    regular = []
    for idx in range(vocab_size):
        if idx in special:
            continue
        # decode after "0" and drop it, so a word-start token keeps its leading space
        after_0 = tok.decode([token_0, idx])[1:]
        alone = tok.decode([idx])
        if not after_0 or "\ufffd" in after_0 or any(ord(c) < 32 for c in after_0):
            continue  # see the module docstring: no control characters, no partial UTF-8 bytes
        regular.append((idx, after_0, len(after_0) > len(alone)))

    def decode(ids: list[int]) -> str:
        return tok.decode(ids).rstrip("\ufffd")

    data = TokenEnforcerTokenizerData(regular, decode, tok.eos_token_id, True, vocab_size)
    loaded.extras["lmfe_tokenizer_data"] = data
    return data


class JsonSchemaLogitsProcessor:
    """A transformers logits processor: every token that would break the schema gets -inf."""

    def __init__(self, enforcer: Any, prompt_len: int) -> None:
        self.enforcer = enforcer
        self.prompt_len = prompt_len
        self._shifts = torch.arange(32, dtype=torch.int32)

    def allowed_mask(self, generated: list[int], vocab: int) -> torch.Tensor:
        bits = self.enforcer.get_allowed_tokens(generated).allowed_tokens  # int32 bitmask
        mask = ((bits.unsqueeze(-1) >> self._shifts) & 1).bool().flatten()
        if mask.numel() < vocab:
            mask = torch.cat([mask, torch.zeros(vocab - mask.numel(), dtype=torch.bool)])
        return mask[:vocab]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            mask = self.allowed_mask(input_ids[row, self.prompt_len :].tolist(), scores.shape[-1]).to(scores.device)
            out[row, mask] = scores[row, mask]
        return out


@dataclass
class Generated:
    """A completion: its text, how many tokens it took, and the wall time of generation (``ids``: its tokens)."""

    text: str
    new_tokens: int
    seconds: float
    finished: bool
    ids: list[int] = field(default_factory=list)


def _sampling(temperature: float, top_p: float, top_k: int | None) -> dict[str, Any]:
    if temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def generate(
    loaded: LoadedModel,
    prompt_ids: list[int],
    *,
    schema: dict[str, Any] | None = None,
    max_string_chars: int = 200,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
) -> Generated:
    """Continue ``prompt_ids``; with ``schema`` the text is one JSON object that matches it."""
    tok, model = loaded.tokenizer, loaded.model
    processors = []
    if schema is not None:
        extras.require("lmformatenforcer", extra="local-llm", what="constrained decoding of a local model")
        from lmformatenforcer import JsonSchemaParser  # optional: the local-llm extra
        from lmformatenforcer.tokenenforcer import TokenEnforcer

        bounded = bound_strings(schema, max_string_chars)
        enforcer = TokenEnforcer(_tokenizer_data(loaded), JsonSchemaParser(bounded))
        enforcer.root_parser.config.max_consecutive_whitespaces = MAX_WHITESPACE
        enforcer.root_parser.config.force_json_field_order = True
        processors.append(JsonSchemaLogitsProcessor(enforcer, len(prompt_ids)))
        max_new_tokens = max(max_new_tokens, max_json_chars(bounded, max_string_chars))
    if seed is not None:
        torch.manual_seed(seed)
    input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            logits_processor=LogitsProcessorList(processors),
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            **_sampling(temperature, top_p, top_k),
        )
    seconds = time.perf_counter() - start
    new = out[0, len(prompt_ids) :].tolist()
    finished = bool(new) and new[-1] == tok.eos_token_id
    return Generated(tok.decode(new, skip_special_tokens=True), len(new), seconds, finished, new)


def chat_prompt_ids(loaded: LoadedModel, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of ``messages`` (role/content dicts) ready for the assistant's answer: the
    tokenizer's chat template, or ``role: content`` lines when it has none."""
    tok = loaded.tokenizer
    if getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
    return tok.encode(text)
