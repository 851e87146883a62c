"""Reading an LLM controller's answer: the ``Decision`` schema, a tolerant parser for free text and tool-call
arguments, and the classification of provider errors (transient or not, Groq's ``failed_generation``)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from sttrl.env.actions import Action
from sttrl.env.decision import Decision


# ----- tolerant parsing ------------------------------------------------------------------------
def _normalize_action(value: Any, allowed: Sequence[str]) -> Action | None:
    if not isinstance(value, str):
        return None
    key = re.sub(r"[\s\-]+", "_", value.strip().strip("\"'`.,;:!").lower())
    return Action(key) if key in allowed else None


def _json_objects(text: str) -> list[dict]:
    decoder = json.JSONDecoder()
    out: list[dict] = []
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text[m.start() :])
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def parse_decision_text(text: str, allowed: Sequence[str]) -> Decision | None:
    """Read a decision from free text: a JSON object (also inside code fences or tool-call args),
    an ``action: name`` line, or a single unambiguous action name. None when nothing fits."""
    if not text or not text.strip():
        return None
    for obj in _json_objects(text):
        for candidate in (obj, obj.get("args"), obj.get("arguments"), obj.get("parameters")):
            if isinstance(candidate, str):
                try:
                    candidate = json.loads(candidate)
                except ValueError:
                    continue
            if isinstance(candidate, dict):
                act = _normalize_action(candidate.get("action"), allowed)
                if act is not None:
                    why = candidate.get("rationale") or candidate.get("reason") or candidate.get("reasoning") or ""
                    return Decision(action=act, rationale=str(why).strip()[:1000])
    m = re.search(r"action[\"'`*]*\s*[:=]\s*[\"'`*]*([A-Za-z][A-Za-z _\-]{1,20})", text, flags=re.IGNORECASE)
    if m:
        for length in range(len(m.group(1)), 0, -1):  # longest prefix that names an action
            act = _normalize_action(m.group(1)[:length], allowed)
            if act is not None:
                return Decision(action=act, rationale=text.strip()[:1000])
    found = set()
    for a in allowed:
        pattern = r"(?<![A-Za-z0-9_])" + a.replace("_", r"[\s_\-]") + r"(?![A-Za-z0-9_])"
        if re.search(pattern, text, flags=re.IGNORECASE):
            found.add(a)
    if len(found) == 1:
        return Decision(action=Action(found.pop()), rationale=text.strip()[:1000])
    return None


# ----- errors ----------------------------------------------------------------------------------
def _status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if code is None:
        code = getattr(getattr(exc, "response", None), "status_code", None)
    return code if isinstance(code, int) else None


def is_transient(exc: BaseException) -> bool:
    """429s, timeouts, connection drops, 5xx, and Groq's ``tool_use_failed`` are worth a retry."""
    name = type(exc).__name__.lower()
    msg = str(exc).lower()
    code = _status_code(exc)
    if code == 429 or "ratelimit" in name or "rate limit" in msg or "rate_limit" in msg:
        return True
    if isinstance(exc, (TimeoutError, ConnectionError)) or "timeout" in name or "timed out" in msg:
        return True
    if "tool_use_failed" in msg or "connection" in name:
        return True
    return code is not None and 500 <= code < 600


def failed_generation(exc: BaseException) -> str:
    """The model's raw text carried by a Groq ``tool_use_failed`` error, else ''."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("failed_generation"), str):
            return err["failed_generation"]
    m = re.search(r"failed_generation['\"]\s*:\s*['\"](.*?)['\"]\s*[,}]", str(exc), flags=re.DOTALL)
    return m.group(1) if m else ""


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}".strip()


def _raw_text(raw: Any) -> str:
    """Message content plus any tool-call arguments, as one string for the tolerant parser."""
    if raw is None:
        return ""
    parts: list[str] = []
    content = getattr(raw, "content", raw)
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
    for call in list(getattr(raw, "tool_calls", None) or []) + list(getattr(raw, "invalid_tool_calls", None) or []):
        args = call.get("args")
        parts.append(args if isinstance(args, str) else json.dumps(args))
    return "\n".join(p for p in parts if p)
