"""The OpenEnv server (python -m sttrl.openenv serve) on a free loopback port, driven by OpenEnv's own client: a debug
episode to its judge, two sessions at once (same seed and actions: the same numbers), the session limit, and the
clear 4xx answers for a stateless HTTP step, a malformed action and a step after the end."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from sttrl.openenv.client import SttrlEnvClient
from sttrl.openenv.models import SttrlAction
from tests.servers import REPO, background_server, free_port

ACTIONS = ["lr_up", "keep"]  # env.max_actions=2: the budget ends the episode


@pytest.fixture(scope="module")
def server(data_cache, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openenv")
    port = free_port()
    sets = [f"data.cache_dir={data_cache}", f"run.out_dir={tmp / 'runs'}", "env.max_actions=2"]
    sets += ["env.actions=[keep,lr_up,lr_down,stop]"]
    cmd = [sys.executable, "-m", "sttrl.openenv", "serve", "--preset", "debug", "--port", str(port)]
    cmd += ["--max-sessions", "2", "--runs", str(tmp / "runs")] + [x for s in sets for x in ("--set", s)]
    url = f"http://127.0.0.1:{port}"
    with background_server(cmd, url + "/health", tmp / "server.log", name="sttrl openenv", cwd=REPO, timeout=120):
        yield url, tmp / "runs"


def _episode(env, episode_id: str) -> tuple[list, object]:
    results = [env.reset(seed=0, episode_id=episode_id)]
    for a in ACTIONS:
        results.append(env.step(SttrlAction(action=a, rationale=f"test {a}", source="test")))
    return results, env.state()


def test_a_debug_episode_runs_to_its_judge_through_openenvs_client(server):
    url, runs = server
    from openenv.cli._validation import validate_running_environment

    report = validate_running_environment(url, timeout_s=30)
    assert report["passed"], [c for c in report["criteria"] if not c["passed"]]
    with SttrlEnvClient(base_url=url).sync() as env:
        results, state = _episode(env, "thread-a")
    first, last = results[0], results[-1]
    assert not first.done and first.observation.step == 0 and first.observation.actions[:2] == ["keep", "lr_up"]
    assert all(isinstance(r.reward, float) for r in results[1:]) and last.done
    assert last.observation.end_reason == "budget" and last.observation.step == 2
    judge = last.observation.judge
    assert judge["scored"] and judge["split"] == "test" and 0.0 <= judge["score"] <= 100.0
    assert state.episode_id == "thread-a" and state.step_count == 2 and state.done
    assert state.checkpoint["block"] == 2 and Path(state.checkpoint["path"]).is_dir()
    run_dir = Path(state.run_dir)
    assert run_dir == runs / "thread-a" and json.loads((run_dir / "judge.json").read_text())["wer"] == judge["wer"]
    records = [json.loads(x) for x in (run_dir / "trajectory.jsonl").read_text().splitlines()]
    assert [r["action"] for r in records] == ACTIONS and {r["source"] for r in records} == {"test"}
    assert [r["reward"] for r in records] == pytest.approx([r.reward for r in results[1:]])
    # a fork: a new episode (thread) from this one's last checkpoint starts where it ended
    with SttrlEnvClient(base_url=url).sync() as env:
        fork = env.reset(seed=0, episode_id="thread-a-fork", start_from=state.checkpoint["path"])
        assert fork.observation.global_step == last.observation.global_step
        assert fork.observation.wer == pytest.approx(last.observation.wer)
        with pytest.raises(RuntimeError, match="not a training checkpoint"):
            env.reset(seed=0, start_from="/etc")


def test_two_sessions_at_once_and_the_session_limit(server):
    url, _ = server
    clients = [SttrlEnvClient(base_url=url).sync().connect() for _ in range(2)]  # a session opens on connect
    # a third session (--max-sessions 2): the server answers its connection with openenv's capacity error and closes
    with connect(url.replace("http://", "ws://") + "/ws", open_timeout=30) as third:
        frame = json.loads(third.recv(timeout=60))
    assert frame["type"] == "error" and frame["data"]["code"] == "CAPACITY_REACHED"
    out: dict[str, tuple] = {}
    threads = [threading.Thread(target=lambda i=i: out.update({i: _episode(clients[i], f"pair-{i}")})) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for c in clients:
        c.close()
    (a, state_a), (b, state_b) = out[0], out[1]
    assert state_a.run_dir != state_b.run_dir and state_a.done and state_b.done
    # the same seed and actions in two concurrent sessions: the same numbers
    assert [r.observation.wer for r in a] == [r.observation.wer for r in b]
    assert [r.reward for r in a] == [r.reward for r in b]
    assert a[-1].observation.judge["wer"] == b[-1].observation.judge["wer"]


def test_bad_actions_and_dead_sessions_get_clear_errors(server):
    url, _ = server
    stateless = httpx.post(f"{url}/step", json={"action": {"action": "keep"}}, timeout=60)
    assert stateless.status_code == 409 and "no episode" in stateless.json()["detail"]
    assert "WebSocket" in stateless.json()["detail"]
    malformed = httpx.post(f"{url}/step", json={"action": {"action": "fly"}}, timeout=60)
    assert malformed.status_code == 422
    with SttrlEnvClient(base_url=url).sync() as env:
        with pytest.raises(RuntimeError, match="reset first"):
            env.step(SttrlAction(action="keep"))
        with pytest.raises(RuntimeError, match="taken or not a name"):
            env.reset(seed=0, episode_id="../escape")
        env.reset(seed=0, episode_id="dead-1")
        with pytest.raises(RuntimeError, match="not enabled"):
            env.step(SttrlAction(action="batch_up"))
        assert env.step(SttrlAction(action="stop")).observation.end_reason == "stop"
        with pytest.raises(RuntimeError, match="episode ended"):
            env.step(SttrlAction(action="keep"))
