"""LangGraph Studio's server: ``langgraph dev`` on a free loopback port imports ``graph/graph.py:graph``
from langgraph.json; a debug episode runs to completion through langgraph-sdk, and the custom progress
events from the graph's stream writer arrive in the stream."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:  # 2024, langgraph dev's default, is taken on these machines
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("GROQ_API_KEY", "LANGSMITH_API_KEY")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["LANGSMITH_TRACING"] = "false"
    cli = Path(sys.executable).parent / "langgraph"
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [str(cli), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port),
         "--config", str(REPO / "langgraph.json")],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/ok", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"langgraph dev did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group we started
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def test_studio_server_runs_a_debug_episode_and_streams_progress(server, data_cache, tmp_path):
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    assistants = client.assistants.search()
    assert [a["graph_id"] for a in assistants] == ["sttrl"]
    thread = client.threads.create()
    out = tmp_path / "runs"
    inp = {"preset": "debug", "agent": "rule",
           "overrides": [f"data.cache_dir={data_cache}", f"run.out_dir={out}", "env.max_actions=2"]}
    custom, updates, errors = [], [], []
    t0 = time.perf_counter()
    for part in client.runs.stream(thread["thread_id"], "sttrl", input=inp, stream_mode=["updates", "custom"]):
        if part.event == "custom":
            custom.append(part.data)
        elif part.event == "updates":
            updates.extend(part.data)
        elif part.event == "error":
            errors.append(part.data)
    seconds = time.perf_counter() - t0
    assert not errors, errors
    kinds = [e["type"] for e in custom]
    assert kinds[0] == "setup" and kinds[-1] == "judge"
    steps = [e for e in custom if e["type"] == "train_step"]
    assert steps and all(e["loss"] > 0 and e["samples_per_s"] > 0 and e["block"] >= 1 for e in steps)
    assert "decision" in kinds and "eval" in kinds
    assert updates[0] == "setup" and updates[-1] == "judge" and "train" in updates

    state = client.threads.get_state(thread["thread_id"])
    values = state["values"]
    assert state["next"] == [] and values["judge"]["scored"]
    run_dir = Path(values["run_dir"])
    assert run_dir == out / thread["thread_id"]
    assert json.loads((run_dir / "judge.json").read_text())["wer"] == values["judge"]["wer"]
    assert len((run_dir / "trajectory.jsonl").read_text().splitlines()) == values["step"]
    print(f"\nStudio server episode: {seconds:.1f} s, {len(custom)} custom events, thread {thread['thread_id']}")


def test_server_clients_see_sttrl_error_messages(server, data_cache, tmp_path):
    """Invalid input through langgraph-sdk: the client gets sttrl's one-line message, not "An internal error occurred"."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    base = [f"data.cache_dir={data_cache}", f"run.out_dir={tmp_path / 'runs'}"]
    cases = {
        "preset": ({"preset": "nope", "overrides": base}, "nope"),
        "lr": ({"preset": "debug", "overrides": [*base, "train.lr=-1"]}, "train.lr"),
        "agent": ({"preset": "debug", "agent": "nope", "overrides": base}, "unknown controller 'nope'"),
        "config file": ({"preset": "debug", "config_file": str(tmp_path / "missing.yaml"), "overrides": base},
                        "missing.yaml"),
    }
    for name, (inp, expected) in cases.items():
        thread = client.threads.create()
        errors = [part.data for part in client.runs.stream(thread["thread_id"], "sttrl", input=inp,
                                                           stream_mode=["updates"]) if part.event == "error"]
        assert len(errors) == 1, (name, errors)
        err = errors[0]
        assert "internal error" not in err["message"].lower(), (name, err)
        assert expected in err["message"], (name, err)
