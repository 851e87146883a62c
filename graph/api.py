"""The collect API: custom routes on the LangGraph server (``langgraph.json`` → ``"http": {"app": "./graph/api.py:app"}``).

- ``POST /rl/collect``: a step record (sttrl.step/1) or an episode ``{"run_id", "steps": [...], "metadata": {...}}``
  from another program; validated against the trajectory schema (422 with the field errors), idempotent by run id and
  step (the same record again: 200 unchanged; a different record for a stored step: 409).
- ``GET /rl/episodes``: the stored runs with their metadata; ``GET /rl/episodes/{run_id}``: one run's steps.

Records are stored through a sink (sttrl.outward.sinks' layout): ``STTRL_COLLECT_SINK`` (any fsspec URL; default
``file://<cwd>/runs/collected``). Every route needs ``STTRL_COLLECT_API_KEY`` from the environment, sent as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Bodies above ``STTRL_COLLECT_MAX_BYTES`` (1 MiB) get 413.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sttrl.outward.sinks import Sink, step_key
from sttrl.outward.trajectory import StepRecord

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_MAX_BYTES = 1 << 20


class EpisodeIn(BaseModel):
    """An episode posted at once: its steps and the run's metadata (preset, controller, seed, instance, judge…)."""

    model_config = ConfigDict(extra="forbid")
    run_id: str
    steps: list[StepRecord] = Field(min_length=1, max_length=10_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


# langgraph-api loads this file under another module name: resolve the annotations here
EpisodeIn.model_rebuild(_types_namespace={"StepRecord": StepRecord, "Any": Any})


def _error(status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status)


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _sink() -> Sink:
    url = os.environ.get("STTRL_COLLECT_SINK") or (Path.cwd() / "runs" / "collected").resolve().as_uri()
    return Sink(url)


def _auth(request: Request) -> JSONResponse | None:
    want = os.environ.get("STTRL_COLLECT_API_KEY")
    if not want:
        return _error(503, "the collect API is disabled: set STTRL_COLLECT_API_KEY in the server's environment")
    got = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        got = auth[7:].strip()
    if not got or not hmac.compare_digest(got.encode(), want.encode()):
        return _error(401, "missing or wrong API key: send Authorization: Bearer <STTRL_COLLECT_API_KEY>")
    return None


async def _body(request: Request) -> bytes | JSONResponse:
    limit = int(os.environ.get("STTRL_COLLECT_MAX_BYTES") or DEFAULT_MAX_BYTES)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return _error(413, f"body of {declared} bytes exceeds the limit of {limit} bytes (STTRL_COLLECT_MAX_BYTES)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return _error(413, f"body exceeds the limit of {limit} bytes (STTRL_COLLECT_MAX_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


def _comparable(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != "time"}


def _store(sink: Sink, run_id: str, steps: list[dict[str, Any]], meta: dict[str, Any] | None) -> tuple[int, dict]:
    """Write new steps; the same record again is 'unchanged', a different one for a stored step a conflict."""
    stored, unchanged, conflicts = [], [], []
    for rec in steps:
        key = step_key(run_id, rec["step"])
        if sink.exists(key):
            old = json.loads(sink.get(key))
            (unchanged if _comparable(old) == _comparable(rec) else conflicts).append(rec["step"])
    if conflicts:
        return 409, {
            "detail": f"run {run_id} already holds different records for steps {conflicts}; "
            "trajectories are append-only",
            "conflicts": conflicts,
        }
    for rec in steps:
        if rec["step"] not in unchanged:
            sink.put_json(step_key(run_id, rec["step"]), rec)
            stored.append(rec["step"])
    if meta:
        sink.put_json(f"{run_id}/meta.json", meta)
    return (201 if stored else 200), {"run_id": run_id, "stored": stored, "unchanged": unchanged}


async def collect(request: Request) -> JSONResponse:
    if (denied := _auth(request)) is not None:
        return denied
    raw = await _body(request)
    if isinstance(raw, JSONResponse):
        return raw
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return _error(400, f"body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _error(422, "body must be a JSON object: a step record or {run_id, steps, metadata}")
    try:
        if "steps" in body:
            ep = EpisodeIn.model_validate(body)
            run_id, records, meta = ep.run_id, ep.steps, ep.metadata or None
        else:
            rec = StepRecord.model_validate(body)
            run_id, records, meta = rec.run_id, [rec], None
    except ValidationError as exc:
        return _error(422, "invalid record: see errors", _field_errors(exc))
    if not RUN_ID.match(run_id):
        return _error(
            422,
            "invalid run_id",
            [{"loc": "run_id", "msg": "letters, digits, '.', '_', '-' (max 128)", "type": "value_error"}],
        )
    bad = [i for i, r in enumerate(records) if r.run_id != run_id]
    if bad:
        return _error(
            422,
            "every step's run_id must equal the episode's run_id",
            [{"loc": f"steps.{i}.run_id", "msg": f"expected {run_id!r}", "type": "value_error"} for i in bad],
        )
    steps = [r.model_dump(mode="json", by_alias=True) for r in records]
    if len({s["step"] for s in steps}) != len(steps):
        return _error(
            422, "steps repeat a step number", [{"loc": "steps", "msg": "duplicate step", "type": "value_error"}]
        )
    status, out = await run_in_threadpool(_store, _sink(), run_id, steps, meta)
    return JSONResponse(out, status_code=status)


def _episode(sink: Sink, run_id: str, with_steps: bool) -> dict[str, Any] | None:
    keys = sorted(k for k in sink.list(f"{run_id}/steps") if k.endswith(".json"))
    if not keys:
        return None
    have = set(sink.list(run_id))
    meta = json.loads(sink.get(f"{run_id}/meta.json")) if f"{run_id}/meta.json" in have else {}
    judge = json.loads(sink.get(f"{run_id}/judge.json")) if f"{run_id}/judge.json" in have else meta.get("judge")
    if f"{run_id}/run.json" in have:
        cfg = json.loads(sink.get(f"{run_id}/run.json")).get("config") or {}
        meta = {"preset": cfg.get("preset"), "seed": (cfg.get("run") or {}).get("seed"), **meta}
    out: dict[str, Any] = {
        "run_id": run_id,
        "steps": len(keys),
        "last_step": int(keys[-1].rsplit("/", 1)[1][:6]),
        "metadata": meta,
        "judge": {k: (judge or {}).get(k) for k in ("scored", "wer", "cer", "score")} if judge else None,
    }
    if with_steps:
        out["records"] = [json.loads(sink.get(k)) for k in keys]
    return out


async def episodes(request: Request) -> JSONResponse:
    if (denied := _auth(request)) is not None:
        return denied

    def _list() -> list[dict[str, Any]]:
        sink = _sink()
        return [e for r in sink.list() if RUN_ID.match(r) and (e := _episode(sink, r, False))]

    return JSONResponse({"episodes": await run_in_threadpool(_list)})


async def episode(request: Request) -> JSONResponse:
    if (denied := _auth(request)) is not None:
        return denied
    run_id = request.path_params["run_id"]
    if not RUN_ID.match(run_id):
        return _error(422, "invalid run_id")
    out = await run_in_threadpool(_episode, _sink(), run_id, True)
    if out is None:
        return _error(404, f"no episode {run_id}")
    return JSONResponse(out)


app = Starlette(
    routes=[
        Route("/rl/collect", collect, methods=["POST"]),
        Route("/rl/episodes", episodes, methods=["GET"]),
        Route("/rl/episodes/{run_id}", episode, methods=["GET"]),
    ]
)
