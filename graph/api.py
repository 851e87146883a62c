"""The collect API: custom routes on the LangGraph server (``langgraph.json``: ``http.app``).

- ``POST /rl/collect``: a step record (sttrl.step/1) or an episode ``{"run_id", "steps": [...], "metadata": {...}}``
  from another program; validated against the trajectory schema (422 with the field errors).
- ``GET /rl/episodes``: the stored runs with their metadata; ``GET /rl/episodes/{run_id}``: one run's steps.

The store is append-only. A step, once stored, never changes: the same record again is 200 ``unchanged``, a different
one 409. Metadata follows the same rule: new keys are added, a stored key with another value is 409. A ``run_id`` is
1-128 of letters, digits, ``.``, ``_``, ``-`` (the whole string: no trailing newline). Numbers must be finite (NaN and
Infinity are 422). A step lies within the episode's budget: at most ``env.max_actions``' upper bound (10,000), and at
most the episode's own budget when it states one (``metadata.max_actions``, or a record's ``step + steps_left``).

A judge result shown by ``GET`` comes from a judge run only (``judge.json``, uploaded by the episode's sink); the
``judge`` a client posts in its metadata is shown as ``claimed_judge``, the client's claim.

Records are stored through a sink (sttrl.outward.sinks' layout): ``STTRL_COLLECT_SINK`` (any fsspec URL; default
``file://<cwd>/runs/collected``). Every route needs the server's API key (``STTRL_API_KEY``, see ``graph/auth.py``),
sent as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; without a key set the routes answer 503. Bodies above
``STTRL_COLLECT_MAX_BYTES`` (1 MiB) get 413.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from graph.auth import KEY_VARIABLE, key_matches, server_key
from sttrl.outward.sinks import Sink, step_key
from sttrl.outward.trajectory import StepRecord

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # always fullmatch: re's $ also matches before a "\n"
DEFAULT_MAX_BYTES = 1 << 20
MAX_STEP = 10_000  # env.max_actions' upper bound: no episode has more decisions
JUDGE_FIELDS = ("scored", "wer", "cer", "score")
_STORE_LOCK = threading.Lock()  # one writer at a time: check-then-write stays append-only within this server


class EpisodeIn(BaseModel):
    """An episode posted at once: its steps and the run's metadata (preset, controller, seed, instance, judge…)."""

    model_config = ConfigDict(extra="forbid")
    run_id: str
    steps: list[StepRecord] = Field(min_length=1, max_length=MAX_STEP)
    metadata: dict[str, Any] = Field(default_factory=dict)


# langgraph-api loads this file under another module name: resolve the annotations here
EpisodeIn.model_rebuild(_types_namespace={"StepRecord": StepRecord, "Any": Any})


class Refused(Exception):
    """A request the store refuses: its status, detail and field errors."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors


def _error(status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status)


def _field(loc: str, msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": "value_error"}


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _sink() -> Sink:
    url = os.environ.get("STTRL_COLLECT_SINK") or (Path.cwd() / "runs" / "collected").resolve().as_uri()
    return Sink(url)


def _auth(request: Request) -> JSONResponse | None:
    key = server_key()
    if not key:
        return _error(503, f"the collect API is disabled: set {KEY_VARIABLE} in the server's environment")
    if not key_matches({k.lower(): v for k, v in request.headers.items()}, key):
        return _error(401, f"missing or wrong API key: send Authorization: Bearer <{KEY_VARIABLE}>")
    return None


async def _body(request: Request) -> bytes:
    limit = int(os.environ.get("STTRL_COLLECT_MAX_BYTES") or DEFAULT_MAX_BYTES)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"body of {declared} bytes exceeds the limit of {limit} bytes (STTRL_COLLECT_MAX_BYTES)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"body exceeds the limit of {limit} bytes (STTRL_COLLECT_MAX_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is not finite")
    return value


def _non_finite(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows (numbers must be finite)")


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request; NaN, Infinity and overflowing numbers are refused (422)."""
    try:
        body = json.loads(raw, parse_constant=_non_finite, parse_float=_finite)
    except ValueError as exc:
        status = 422 if "finite" in str(exc) else 400
        raise Refused(status, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Refused(422, "body must be a JSON object: a step record or {run_id, steps, metadata}")
    return body


def _budget(records: list[dict[str, Any]], meta: dict[str, Any]) -> int | None:
    """The episode's stated budget (decisions): ``metadata.max_actions`` or a record's ``step + steps_left``; every
    statement must agree."""
    stated: list[tuple[str, Any]] = [("metadata.max_actions", meta["max_actions"])] if "max_actions" in meta else []
    for i, r in enumerate(records):
        left = (r.get("observation") or {}).get("steps_left")
        if isinstance(left, int) and not isinstance(left, bool):
            stated.append((f"steps.{i}.observation.steps_left", r["step"] + left))
    values = {v for _, v in stated}
    if any(not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_STEP for v in values):
        raise Refused(422, "invalid budget", [_field(loc, f"budget 1..{MAX_STEP} expected") for loc, _ in stated])
    if len(values) > 1:
        raise Refused(422, "the records state different budgets", [_field(loc, f"gives {v}") for loc, v in stated])
    return values.pop() if values else None


def validate(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """``(run_id, step records, metadata)`` of a posted step or episode, or :class:`Refused` with the field errors."""
    try:
        if "steps" in body:
            ep = EpisodeIn.model_validate(body)
            run_id, records, meta = ep.run_id, ep.steps, ep.metadata
        else:
            rec = StepRecord.model_validate(body)
            run_id, records, meta = rec.run_id, [rec], {}
    except ValidationError as exc:
        raise Refused(422, "invalid record: see errors", _field_errors(exc)) from None
    if not RUN_ID.fullmatch(run_id):
        raise Refused(422, "invalid run_id", [_field("run_id", "letters, digits, '.', '_', '-' (1-128)")])
    bad = [i for i, r in enumerate(records) if r.run_id != run_id]
    if bad:
        raise Refused(
            422,
            "every step's run_id must equal the episode's run_id",
            [_field(f"steps.{i}.run_id", f"expected {run_id!r}") for i in bad],
        )
    steps = [r.model_dump(mode="json", by_alias=True) for r in records]
    if len({s["step"] for s in steps}) != len(steps):
        raise Refused(422, "steps repeat a step number", [_field("steps", "duplicate step")])
    over = [i for i, s in enumerate(steps) if s["step"] > MAX_STEP]
    if over:
        raise Refused(422, "step beyond any budget", [_field(f"steps.{i}.step", f"at most {MAX_STEP}") for i in over])
    return run_id, steps, meta


def _comparable(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != "time"}


def _stored_meta(sink: Sink, run_id: str) -> dict[str, Any]:
    key = f"{run_id}/meta.json"
    return json.loads(sink.get(key)) if sink.exists(key) else {}


def _merge_meta(old: dict[str, Any], new: dict[str, Any], run_id: str) -> dict[str, Any]:
    changed = sorted(k for k in new if k in old and old[k] != new[k])
    if changed:
        raise Refused(409, f"run {run_id} already holds other metadata for {changed}; metadata is append-only")
    return {**old, **new}


def _store(sink: Sink, run_id: str, steps: list[dict[str, Any]], meta: dict[str, Any]) -> tuple[int, dict]:
    """Write new steps and metadata keys; the same again is 'unchanged', a change to a stored one a conflict (409)."""
    old_meta = _stored_meta(sink, run_id)
    merged = _merge_meta(old_meta, meta, run_id)
    stored_steps = _stored_steps(sink, run_id)
    budget = _budget([*steps, *stored_steps.values()], merged)
    if budget is not None and (over := [s["step"] for s in steps if s["step"] > budget]):
        raise Refused(422, f"steps {over} lie beyond the episode's budget of {budget} decisions")
    unchanged, conflicts = [], []
    for rec in steps:
        if (old := stored_steps.get(rec["step"])) is not None:
            (unchanged if _comparable(old) == _comparable(rec) else conflicts).append(rec["step"])
    if conflicts:
        return 409, {
            "detail": f"run {run_id} already holds different records for steps {conflicts}; "
            "trajectories are append-only",
            "conflicts": conflicts,
        }
    stored = [rec["step"] for rec in steps if rec["step"] not in unchanged]
    for rec in steps:
        if rec["step"] in stored:
            sink.put_json(step_key(run_id, rec["step"]), rec)
    if merged != old_meta:
        sink.put_json(f"{run_id}/meta.json", merged)
    return (201 if stored or merged != old_meta else 200), {"run_id": run_id, "stored": stored, "unchanged": unchanged}


def _stored_steps(sink: Sink, run_id: str) -> dict[int, dict[str, Any]]:
    keys = [k for k in sink.list(f"{run_id}/steps") if k.endswith(".json")]
    return {int(Path(k).stem): json.loads(sink.get(k)) for k in keys if Path(k).stem.isdigit()}


def _store_locked(sink: Sink, run_id: str, steps: list[dict[str, Any]], meta: dict[str, Any]) -> tuple[int, dict]:
    with _STORE_LOCK:
        try:
            return _store(sink, run_id, steps, meta)
        except Refused as exc:
            body: dict[str, Any] = {"detail": exc.detail, **({"errors": exc.errors} if exc.errors else {})}
            return exc.status, body


async def collect(request: Request) -> JSONResponse:
    if (denied := _auth(request)) is not None:
        return denied
    try:
        run_id, steps, meta = validate(parse_body(await _body(request)))
    except Refused as exc:
        return _error(exc.status, exc.detail, exc.errors)
    status, out = await run_in_threadpool(_store_locked, _sink(), run_id, steps, meta)
    return JSONResponse(out, status_code=status)


def _episode(sink: Sink, run_id: str, with_steps: bool) -> dict[str, Any] | None:
    steps = sorted(int(Path(k).stem) for k in sink.list(f"{run_id}/steps") if Path(k).stem.isdigit())
    if not steps:
        return None
    have = set(sink.list(run_id))
    meta = _stored_meta(sink, run_id)
    judged = json.loads(sink.get(f"{run_id}/judge.json")) if f"{run_id}/judge.json" in have else None
    if f"{run_id}/run.json" in have:
        cfg = json.loads(sink.get(f"{run_id}/run.json")).get("config") or {}
        meta = {"preset": cfg.get("preset"), "seed": (cfg.get("run") or {}).get("seed"), **meta}
    out: dict[str, Any] = {
        "run_id": run_id,
        "steps": len(steps),
        "last_step": steps[-1],
        "metadata": meta,
        "judge": {**{k: judged.get(k) for k in JUDGE_FIELDS}, "source": "judge run"} if judged else None,
        "claimed_judge": meta.get("judge"),  # what the client posted: its claim, not a judge run
    }
    if with_steps:
        out["records"] = [json.loads(sink.get(step_key(run_id, s))) for s in steps]
    return out


async def episodes(request: Request) -> JSONResponse:
    if (denied := _auth(request)) is not None:
        return denied

    def _list() -> list[dict[str, Any]]:
        sink = _sink()
        return [e for r in sink.list() if RUN_ID.fullmatch(r) and (e := _episode(sink, r, False))]

    return JSONResponse({"episodes": await run_in_threadpool(_list)})


async def episode(request: Request) -> JSONResponse:
    if (denied := _auth(request)) is not None:
        return denied
    run_id = request.path_params["run_id"]
    if not RUN_ID.fullmatch(run_id):
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
