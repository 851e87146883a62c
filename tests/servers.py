"""Servers the tests start themselves on free loopback ports (``langgraph dev``, an MLflow tracking server):
started in their own process group, waited for on a health URL, stopped with the group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:  # 2024, langgraph dev's default, is taken on these machines
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def background_server(
    cmd: list[str],
    ready_url: str,
    log_path: Path,
    *,
    name: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 90,
) -> Iterator[None]:
    """Run ``cmd`` until the block ends; ready when ``ready_url`` answers 200 (else an error with the log)."""
    log = open(log_path, "w")  # noqa: SIM115 - the server writes to it until the block ends; closed below
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=dict(env) if env else None, start_new_session=True
    )
    try:
        end = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"{name} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group we started
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


SERVER_VARIABLES = ("STTRL_API_KEY", "STTRL_COLLECT_API_KEY", "STTRL_SERVER_CONFIG_DIR")


@contextmanager
def langgraph_dev(
    tmp: Path, extra_env: Mapping[str, str] | None = None, *, root: Path | None = None, cache: Path | None = None
) -> Iterator[str]:
    """``langgraph dev`` over this repository's langgraph.json; yields its URL. Its run root is ``root`` (default
    ``tmp``) and its data cache root ``cache`` (default ``root``): server inputs may name paths inside them only."""
    port = free_port()
    drop = ("GROQ_API_KEY", "LANGSMITH_API_KEY", *SERVER_VARIABLES)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        LANGSMITH_TRACING="false",
        STTRL_SERVER_ROOT=str(root or tmp),
        STTRL_SERVER_CACHE=str(cache or root or tmp),
        **(extra_env or {}),
    )
    cli = Path(sys.executable).parent / "langgraph"
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(cli),
        "dev",
        "--no-browser",
        "--no-reload",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(REPO / "langgraph.json"),
    ]
    with background_server(cmd, url + "/ok", tmp / "server.log", name="langgraph dev", cwd=REPO, env=env):
        yield url
