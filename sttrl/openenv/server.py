"""The FastAPI app: openenv-core's ``create_app`` over :class:`~sttrl.openenv.environment.SttrlEnvironment`, with
sttrl's typed errors mapped to clear 4xx answers on the HTTP routes.

OpenEnv's HTTP ``/reset`` and ``/step`` are stateless (each request gets a fresh environment, closed after it): an
episode lives in a WebSocket session (``/ws``, what :class:`~sttrl.openenv.client.SttrlEnvClient` and every OpenEnv
``EnvClient`` use), at most ``max_sessions`` at once. So an HTTP ``/step`` finds no episode: 409 with the reason; a
step after the end or a taken episode id is 409 too, an action the config does not enable 400, a malformed action
422 (openenv's validation). Over the WebSocket the same messages come back as openenv error frames.
"""

from __future__ import annotations

import functools

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from openenv.core.env_server.http_server import create_app

from sttrl.errors import SessionError, SttrlError
from sttrl.openenv.environment import ServerSettings, SttrlEnvironment
from sttrl.openenv.models import SttrlAction, SttrlObservation

HTTP_HINT = (
    "OpenEnv's HTTP /step is stateless (each request gets a new environment): run an episode over the WebSocket "
    "session (/ws), e.g. with sttrl.openenv.client.SttrlEnvClient"
)


def build_app(settings: ServerSettings, max_sessions: int = 2) -> FastAPI:
    """The server's app: one episode per WebSocket session, at most ``max_sessions`` at once."""
    factory = functools.partial(SttrlEnvironment, settings)
    app = create_app(factory, SttrlAction, SttrlObservation, env_name="sttrl", max_concurrent_envs=max_sessions)

    async def session_error(request: Request, exc: Exception) -> JSONResponse:
        detail = str(exc)
        if request.url.path == "/step" and "no episode" in detail:
            detail = f"{detail}. {HTTP_HINT}"
        return JSONResponse(status_code=409, content={"detail": detail})

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    app.add_exception_handler(SessionError, session_error)
    app.add_exception_handler(SttrlError, bad_request)
    app.add_exception_handler(ValueError, bad_request)  # e.g. an action the config does not enable
    return app
