"""A module-level ``app`` for ASGI servers and ``openenv.yaml`` (``uvicorn sttrl.openenv.asgi:app``), configured
from the environment: ``STTRL_PRESET`` (default ``cpu``), ``STTRL_SET`` (overrides separated by ``;``),
``STTRL_MAX_SESSIONS`` (default 2), ``STTRL_RUNS`` and ``STTRL_JUDGE`` (``0`` turns the judge off). An entry
point, like the command line: it reads the environment (and HF_TOKEN) once, at import."""

from __future__ import annotations

import os
from pathlib import Path

from sttrl.config import load_config, secret
from sttrl.openenv.environment import ServerSettings
from sttrl.openenv.server import build_app
from sttrl.train.memory import limit_arenas

limit_arenas()  # before any thread allocates: see sttrl.train.memory

_cfg = load_config(
    os.environ.get("STTRL_PRESET", "cpu"), overrides=[s for s in os.environ.get("STTRL_SET", "").split(";") if s]
)
_root = Path(os.environ.get("STTRL_RUNS") or Path(_cfg.run.out_dir) / "openenv").resolve()
_settings = ServerSettings(_cfg, _root, judge=os.environ.get("STTRL_JUDGE", "1") != "0", hf_token=secret("HF_TOKEN"))
app = build_app(_settings, int(os.environ.get("STTRL_MAX_SESSIONS", "2")))
