"""The LangGraph server with sttrl's custom routes (``langgraph dev`` on a free loopback port, ``langgraph.json``'s
``http.app``): the collect API (valid, invalid, duplicate, conflicting, unauthenticated, oversized; issue 24 item 2:
append-only metadata, judge results only from a judge run, exact run ids, finite numbers, steps within the budget)
and the server's own assistants/threads/runs API as the job API (start, poll, cancel, resume, read the trajectory),
all behind the one server key (STTRL_API_KEY)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from servers import langgraph_dev  # tests/ is on sys.path

from sttrl.rundir import TRAJECTORY

KEY = "test-collect-key-123"


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_cache):
    tmp = tmp_path_factory.mktemp("collect")
    store = tmp / "store"
    extra = {"STTRL_API_KEY": KEY, "STTRL_COLLECT_SINK": store.as_uri(), "STTRL_COLLECT_MAX_BYTES": "65536"}
    with langgraph_dev(tmp, extra, cache=data_cache) as url:
        yield {"url": url, "store": store, "tmp": tmp}


def _step(run_id: str, step: int, **kw) -> dict:
    hp = {"lr": 1e-3, "batch_size": 4, "grad_accum": 1, "freeze_layers": 0}
    rec = {
        "schema": "sttrl.step/1",
        "run_id": run_id,
        "step": step,
        "action": "lr_up",
        "source": "outside",
        "hp_before": hp,
        "hp_after": {**hp, "lr": 1.5e-3},
        "status": "ok",
        "reward": 0.1,
        "observation": {"wer": 0.9, "cer": 0.5},
        "eval": {"wer": 0.9, "cer": 0.5},
        "time": 1.0,
    }
    rec.update(kw)
    return rec


def test_collect_api(server):
    h = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server["url"], timeout=30) as c:
        # unauthenticated / wrong key
        assert c.post("/rl/collect", json=_step("ext-1", 1)).status_code == 401
        assert c.post("/rl/collect", json=_step("ext-1", 1), headers={"X-API-Key": "nope"}).status_code == 401
        assert c.get("/rl/episodes").status_code == 401
        # a valid step, then the same step again (idempotent), then a different record for it (conflict)
        r = c.post("/rl/collect", json=_step("ext-1", 1), headers=h)
        assert r.status_code == 201 and r.json()["stored"] == [1], r.text
        r = c.post("/rl/collect", json=_step("ext-1", 1, time=2.0), headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["unchanged"] == [1]
        r = c.post("/rl/collect", json=_step("ext-1", 1, reward=9.0), headers=h)
        assert r.status_code == 409 and r.json()["conflicts"] == [1]
        # an episode with metadata: steps 1 (already there) and 2
        ep = {
            "run_id": "ext-1",
            "steps": [_step("ext-1", 1), _step("ext-1", 2, action="batch_up")],
            "metadata": {"preset": "cpu", "controller": "my-tuner", "seed": 7, "judge": {"scored": True, "wer": 0.5}},
        }
        r = c.post("/rl/collect", json=ep, headers=h)
        assert r.status_code == 201 and r.json() == {"run_id": "ext-1", "stored": [2], "unchanged": [1]}
        # invalid: field errors named
        bad = _step("ext-2", 0)
        del bad["reward"]
        r = c.post("/rl/collect", json=bad, headers=h)
        assert r.status_code == 422
        locs = {e["loc"] for e in r.json()["errors"]}
        assert {"step", "reward"} <= locs, r.json()
        r = c.post("/rl/collect", json={"run_id": "ext-3", "steps": [_step("other", 1)]}, headers=h)
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "steps.0.run_id"
        r = c.post("/rl/collect", json=_step("../escape", 1), headers=h)
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "run_id"
        assert c.post("/rl/collect", content=b"{not json", headers=h).status_code == 400
        # oversized (the test server allows 64 KiB)
        big = _step("ext-4", 1, rationale="x" * 70_000)
        r = c.post("/rl/collect", json=big, headers=h)
        assert r.status_code == 413 and "STTRL_COLLECT_MAX_BYTES" in r.json()["detail"]
        # listing and reading back
        eps = c.get("/rl/episodes", headers=h).json()["episodes"]
        one = next(e for e in eps if e["run_id"] == "ext-1")
        assert one["steps"] == 2 and one["metadata"]["controller"] == "my-tuner"
        assert one["judge"] is None and one["claimed_judge"]["wer"] == 0.5  # no judge ran: the client's claim
        got = c.get("/rl/episodes/ext-1", headers=h).json()
        assert [s["step"] for s in got["records"]] == [1, 2] and got["records"][1]["action"] == "batch_up"
        assert c.get("/rl/episodes/nothing", headers=h).status_code == 404
    assert sorted(p.name for p in (server["store"] / "ext-1" / "steps").iterdir()) == ["000001.json", "000002.json"]


def test_the_store_is_append_only_and_hard_to_fool(server):
    """Issue 24 item 2: each case was accepted before (metadata replaced with a forged judge, a run id with a trailing
    newline, a NaN reward stored as non-standard JSON, step 10**12 breaking last_step)."""
    h = {"X-API-Key": KEY}
    with httpx.Client(base_url=server["url"], timeout=30) as c:
        ep = {"run_id": "meta-1", "steps": [_step("meta-1", 1)], "metadata": {"controller": "mine", "seed": 1}}
        assert c.post("/rl/collect", json=ep, headers=h).status_code == 201
        forged = {**ep, "metadata": {"controller": "mine", "seed": 1, "judge": {"scored": True, "score": 99}}}
        r = c.post("/rl/collect", json=forged, headers=h)  # a new key is appended; the judge stays a claim
        assert r.status_code == 201 and r.json()["unchanged"] == [1], r.text
        got = c.get("/rl/episodes/meta-1", headers=h).json()
        assert got["judge"] is None and got["claimed_judge"] == {"scored": True, "score": 99}
        changed = {**ep, "metadata": {"controller": "someone-else"}}
        r = c.post("/rl/collect", json=changed, headers=h)
        assert r.status_code == 409 and "controller" in r.json()["detail"], r.text
        assert c.get("/rl/episodes/meta-1", headers=h).json()["metadata"]["controller"] == "mine"
        assert c.post("/rl/collect", json=_step("nl-run\n", 1), headers=h).status_code == 422
        for bad in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
            body = json.dumps(_step("nan-run", 1, reward=0.5)).replace("0.5", "@").encode().replace(b"@", bad)
            r = c.post("/rl/collect", content=body, headers={**h, "Content-Type": "application/json"})
            assert r.status_code == 422 and "finite" in r.text, (bad, r.text)
        r = c.post("/rl/collect", json=_step("big-run", 10**12), headers=h)
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "steps.0.step", r.text
        # a stated budget binds: metadata.max_actions, or a record's step + steps_left
        r = c.post("/rl/collect", json={**_episode("budget-1", 4), "metadata": {"max_actions": 3}}, headers=h)
        assert r.status_code == 422 and "budget of 3" in r.json()["detail"], r.text
        left = _step("budget-2", 2, observation={"wer": 0.9, "cer": 0.5, "steps_left": 1})
        assert c.post("/rl/collect", json=left, headers=h).status_code == 201
        r = c.post("/rl/collect", json=_step("budget-2", 5), headers=h)
        assert r.status_code == 422 and "budget of 3" in r.json()["detail"], r.text
        assert c.post("/rl/collect", json=_step("budget-2", 3), headers=h).status_code == 201
    for path in server["store"].rglob("*.json"):
        assert not {"NaN", "Infinity"} & set(_constants(path.read_text())), path
    assert not (server["store"] / "big-run").exists() and not (server["store"] / "nan-run").exists()


def _constants(text: str) -> list[str]:
    """The non-standard constants (NaN, Infinity) a JSON text holds."""
    found: list[str] = []
    json.loads(text, parse_constant=lambda c: found.append(c) or 0.0)
    return found


def _episode(run_id: str, n: int) -> dict:
    return {"run_id": run_id, "steps": [_step(run_id, i) for i in range(1, n + 1)]}


def test_jobs_start_poll_cancel_resume_read(server, data_cache):
    """The server's assistants/threads/runs API is the job API; the run's sink is the collect store, so the
    episode is also readable through GET /rl/episodes/{run_id}."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server["url"], api_key=KEY)
    thread = client.threads.create()
    tid = thread["thread_id"]
    out = server["tmp"] / "runs"
    inp = {
        "preset": "debug",
        "agent": "rule",
        "overrides": [
            f"data.cache_dir={data_cache}",
            f"run.out_dir={out}",
            "env.max_actions=4",
            f"run.sink={server['store'].as_uri()}",
        ],
    }
    run = client.runs.create(tid, "sttrl", input=inp)
    traj = out / tid / TRAJECTORY
    end = time.monotonic() + 300
    while not (traj.is_file() and traj.read_text().strip()):  # poll until the first step is recorded
        status = client.runs.get(tid, run["run_id"])["status"]
        assert status in ("pending", "running"), status
        assert time.monotonic() < end, "no step recorded in time"
        time.sleep(0.3)
    client.runs.cancel(tid, run["run_id"], wait=True)
    assert client.runs.get(tid, run["run_id"])["status"] == "interrupted"
    assert client.threads.get_state(tid)["next"]  # unfinished: resumable
    resumed = client.runs.create(tid, "sttrl", input=None)
    client.runs.join(tid, resumed["run_id"])
    assert client.runs.get(tid, resumed["run_id"])["status"] == "success"
    values = client.threads.get_state(tid)["values"]
    steps = [json.loads(line)["step"] for line in traj.read_text().splitlines()]
    assert steps == list(range(1, values["step"] + 1)) and values["judge"]["scored"]
    assert [r["step"] for r in values["records"]] == steps
    got = httpx.get(f"{server['url']}/rl/episodes/{values['run_id']}", headers={"X-API-Key": KEY}, timeout=30).json()
    assert [r["step"] for r in got["records"]] == steps and got["judge"]["scored"]
    assert got["metadata"]["preset"] == "debug" and got["judge"]["source"] == "judge run"  # judge.json from the sink


def test_cancel_stops_the_training_block_within_steps(server, data_cache):
    """Issue 10 item 14: ``runs.cancel`` stops the block that is training inside the server (it kept running
    before), and the thread resumes from the block's last intra-block checkpoint to a judged end."""
    from langgraph_sdk import get_sync_client

    from sttrl.rundir import block_name
    from sttrl.train.checkpoint import read_checkpoint_record

    client = get_sync_client(url=server["url"], api_key=KEY)
    tid = client.threads.create()["thread_id"]
    out = server["tmp"] / "cancel-runs"
    steps = 400
    inp = {
        "preset": "debug",
        "agent": "static",
        "overrides": [
            f"data.cache_dir={data_cache}",
            f"run.out_dir={out}",
            "env.max_actions=1",
            f"env.steps_per_action={steps}",
            "env.checkpoint_every=5",
        ],
    }
    run = client.runs.create(tid, "sttrl", input=inp, stream_mode=["custom"])
    seen = 0
    for part in client.runs.join_stream(tid, run["run_id"], stream_mode="custom"):
        data = part.data if isinstance(part.data, dict) else {}
        if data.get("type") == "train_step":
            seen = data["step_in_block"]
            if seen >= 12:
                break
    assert seen >= 12, "no training steps streamed"
    client.runs.cancel(tid, run["run_id"], wait=True)
    assert client.runs.get(tid, run["run_id"])["status"] == "interrupted"
    partial = out / tid / "checkpoints" / "partial"

    def trained() -> int:
        return len(read_checkpoint_record(partial)["meta"]["losses"])

    first = trained()
    time.sleep(3.0)  # a block still training would write a checkpoint every 5 steps meanwhile
    assert trained() == first < steps
    assert not (out / tid / "checkpoints" / block_name(1)).exists()
    resumed = client.runs.create(tid, "sttrl", input=None)
    client.runs.join(tid, resumed["run_id"])
    assert client.runs.get(tid, resumed["run_id"])["status"] == "success"
    values = client.threads.get_state(tid)["values"]
    assert values["judge"]["scored"] and values["records"][0]["train"]["steps"] == steps
