"""``python -m sttrl.openenv serve``: serve sttrl episodes to OpenEnv clients (loopback by default).

    python -m sttrl.openenv serve --preset debug --port 8000 --max-sessions 2

Each WebSocket session is one episode (its thread id = its run directory under ``--runs``, default
``<run.out_dir>/openenv``); at the end the judge scores the final model unless ``--no-judge``. The HF token (hub data
only) is read from the environment or ``.env`` here and passed down, never stored. Bad input is one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sttrl.config import add_config_arguments, load_config, secret
from sttrl.errors import SttrlError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sttrl.openenv", description="Serve sttrl as an OpenEnv environment.")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (uvicorn)")
    add_config_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-sessions", type=int, default=2, help="concurrent episodes (WebSocket sessions)")
    serve.add_argument("--runs", type=Path, metavar="DIR", help="run directories (default: <run.out_dir>/openenv)")
    serve.add_argument("--no-judge", action="store_true", help="do not score a finished episode on the hidden split")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sttrl.train.memory import limit_arenas  # torch: only once the command line is known to be valid

    limit_arenas()  # before any thread allocates: see sttrl.train.memory
    try:
        if args.max_sessions < 1:
            raise SttrlError(f"--max-sessions must be at least 1 (got {args.max_sessions})")
        cfg = load_config(args.preset, args.config, args.overrides)
        from sttrl.openenv.environment import ServerSettings  # the openenv extra: a clear line when it is missing
        from sttrl.openenv.server import build_app
    except ModuleNotFoundError as exc:
        print(f"error: {exc.name} is missing: pip install 'sttrl[openenv]'", file=sys.stderr)
        return 2
    except SttrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn  # the ASGI server (the openenv extra), once the command line and config are valid

    root = (args.runs or Path(cfg.run.out_dir) / "openenv").resolve()
    settings = ServerSettings(cfg, root, judge=not args.no_judge, hf_token=secret("HF_TOKEN"))
    app = build_app(settings, args.max_sessions)
    print(f"sttrl OpenEnv server on http://{args.host}:{args.port} (preset {cfg.preset}, runs in {root})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
