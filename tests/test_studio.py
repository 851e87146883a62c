"""LangGraph Studio's server: ``langgraph dev`` on a free loopback port imports ``graph/graph.py:graph``
from langgraph.json; a debug episode runs to completion through langgraph-sdk, and the custom progress
events from the graph's stream writer arrive in the stream."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from servers import langgraph_dev  # tests/ is on sys.path

from sttrl.rundir import JUDGE_REPORT, TRAJECTORY


@pytest.fixture
def server(tmp_path, data_cache):
    with langgraph_dev(tmp_path, cache=data_cache) as url:
        yield url


def test_studio_server_runs_a_debug_episode_and_streams_progress(server, data_cache, tmp_path):
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    assistants = client.assistants.search()
    assert [a["graph_id"] for a in assistants] == ["sttrl"]
    thread = client.threads.create()
    out = tmp_path / "runs"
    inp = {
        "preset": "debug",
        "agent": "rule",
        "overrides": [f"data.cache_dir={data_cache}", f"run.out_dir={out}", "env.max_actions=2"],
    }
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
    assert updates[:2] == ["configure", "setup"] and updates[-1] == "judge" and "train" in updates

    state = client.threads.get_state(thread["thread_id"])
    values = state["values"]
    assert state["next"] == [] and values["judge"]["scored"]
    run_dir = Path(values["run_dir"])
    assert run_dir == out / thread["thread_id"]
    assert json.loads((run_dir / JUDGE_REPORT).read_text())["wer"] == values["judge"]["wer"]
    assert len((run_dir / TRAJECTORY).read_text().splitlines()) == values["step"]
    print(f"\nStudio server episode: {seconds:.1f} s, {len(custom)} custom events, thread {thread['thread_id']}")


def test_server_clients_see_sttrl_error_messages(server, data_cache, tmp_path):
    """Invalid input through langgraph-sdk: the client gets sttrl's one-line message, not "An internal error
    occurred"."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    base = [f"data.cache_dir={data_cache}", f"run.out_dir={tmp_path / 'runs'}"]
    cases = {
        "preset": ({"preset": "nope", "overrides": base}, "nope"),
        "lr": ({"preset": "debug", "overrides": [*base, "train.lr=-1"]}, "train.lr"),
        "agent": ({"preset": "debug", "agent": "nope", "overrides": base}, "unknown controller 'nope'"),
    }
    for name, (inp, expected) in cases.items():
        thread = client.threads.create()
        errors = [
            part.data
            for part in client.runs.stream(thread["thread_id"], "sttrl", input=inp, stream_mode=["updates"])
            if part.event == "error"
        ]
        assert len(errors) == 1, (name, errors)
        err = errors[0]
        assert "internal error" not in err["message"].lower(), (name, err)
        assert expected in err["message"], (name, err)
