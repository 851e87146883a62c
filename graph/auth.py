"""Who may use the LangGraph server (``langgraph.json``: ``"auth": {"path": "./graph/auth.py:auth"}``).

One key for the whole server, the LangGraph API (assistants, threads, runs: what Studio and langgraph-sdk call) and
the collect routes (``graph/api.py``) alike: ``STTRL_API_KEY`` in the server's environment (or its ``.env``; the
former name ``STTRL_COLLECT_API_KEY`` is read when it is unset), sent as ``Authorization: Bearer KEY`` or
``X-API-Key: KEY``.

- With a key set, every request without it gets 401.
- Without a key, the server answers loopback clients only (127.0.0.1 / ::1, a loopback ``Host`` header, no
  forwarding header such as ``X-Forwarded-For``, which a tunnel or proxy adds, and a browser ``Origin`` that is
  loopback or Studio's own, so another web page cannot drive the server through the developer's browser); anything
  else gets 403. That is ``langgraph dev``'s default of binding 127.0.0.1, kept when someone adds
  ``--host 0.0.0.0`` or ``--tunnel``.
- A new run's input is checked before the run exists (:mod:`graph.inputs`): a path outside the server's roots or a
  config file it does not serve is a 403 naming the field, never a file's content.

Studio's own sign-in (``x-auth-scheme: langsmith``) is turned off in ``langgraph.json`` (``disable_studio_auth``): on
``langgraph dev`` it would let any request that sends that header through.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from langgraph_sdk import Auth

from graph.inputs import ServerInputError, check_raw_input

KEY_VARIABLE = "STTRL_API_KEY"
LEGACY_KEY_VARIABLE = "STTRL_COLLECT_API_KEY"
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip", "cf-connecting-ip")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
STUDIO_ORIGIN = re.compile(r"https://([a-z0-9-]+\.)?smith\.langchain\.com")  # LangSmith Studio's web page

auth = Auth()


def server_key() -> str | None:
    """The server's API key (``STTRL_API_KEY``, else the former ``STTRL_COLLECT_API_KEY``), or None."""
    return os.environ.get(KEY_VARIABLE) or os.environ.get(LEGACY_KEY_VARIABLE) or None


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a request sends (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; header names lower-case)."""
    bearer = headers.get("authorization") or ""
    if bearer.lower().startswith("bearer "):
        return bearer[7:].strip()
    return (headers.get("x-api-key") or "").strip()


def key_matches(headers: Mapping[str, str], key: str) -> bool:
    got = presented_key(headers)
    return bool(got) and hmac.compare_digest(got.encode(), key.encode())


def _loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local(client_host: str | None, headers: Mapping[str, str]) -> bool:
    """A request from this machine itself: a loopback peer, a loopback ``Host`` header (no DNS rebinding), no
    forwarding header (a tunnel or reverse proxy connects from loopback on behalf of someone else), and no foreign
    browser ``Origin`` (a web page posting to 127.0.0.1 from the developer's browser)."""
    if not client_host or not _loopback_address(client_host):
        return False
    if any(h in headers for h in FORWARDING_HEADERS):
        return False
    if not _loopback_name(headers.get("host") or ""):
        return False
    origin = (headers.get("origin") or "").lower()
    return not origin or STUDIO_ORIGIN.fullmatch(origin) is not None or _loopback_name(_netloc(origin))


def _netloc(origin: str) -> str:
    return urllib.parse.urlsplit(origin).netloc


def _loopback_name(host: str) -> bool:
    """A ``Host`` value (name or address, with or without a port) that names this machine."""
    host = host.lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in LOOPBACK_HOSTS or _loopback_address(name)


def _text_headers(headers: Mapping[Any, Any]) -> dict[str, str]:
    def text(v: Any) -> str:
        return v.decode("latin-1") if isinstance(v, bytes) else str(v)

    return {text(k).lower(): text(v) for k, v in headers.items()}


@auth.authenticate
async def authenticate(headers: dict[bytes, bytes], scope: dict[str, Any]) -> Auth.types.MinimalUserDict:
    """The key when the server has one; otherwise loopback clients only."""
    h = _text_headers(headers or {})
    key = server_key()
    if key:
        if key_matches(h, key):
            return {"identity": "sttrl-api-key", "permissions": ["sttrl"]}
        raise Auth.exceptions.HTTPException(
            status_code=401, detail=f"missing or wrong API key: send Authorization: Bearer <{KEY_VARIABLE}>"
        )
    client = scope.get("client") or (None, None)
    if is_local(client[0], h):
        return {"identity": "sttrl-loopback", "permissions": ["sttrl"]}
    raise Auth.exceptions.HTTPException(
        status_code=403,
        detail=f"this server has no {KEY_VARIABLE}, so it serves loopback clients only: set {KEY_VARIABLE} "
        "in its environment to expose it",
    )


async def _check_input(inp: Any) -> None:
    try:  # in a worker thread: resolving paths and reading presets would block the server's event loop
        await asyncio.to_thread(check_raw_input, inp or {})
    except ServerInputError as exc:
        raise Auth.exceptions.HTTPException(status_code=403, detail=str(exc)) from None


@auth.on.threads.create_run
async def check_run_input(ctx: Auth.types.AuthContext, value: Auth.types.on.threads.create_run.value) -> None:
    """A new run's input names no path outside the server's roots (graph.inputs)."""
    await _check_input((value.get("kwargs") or {}).get("input"))


@auth.on.crons.create
async def check_cron_input(ctx: Auth.types.AuthContext, value: Auth.types.on.crons.create.value) -> None:
    """A scheduled run's input, the same way."""
    await _check_input((value.get("payload") or {}).get("input"))
