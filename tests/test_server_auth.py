"""Issue 24 item 1: the LangGraph server is safe to expose. ``langgraph dev`` on a free loopback port with sttrl's
custom auth (``graph/auth.py``): one key for the LangGraph API and the collect routes, loopback-only without a key,
and every path a server input names kept inside the server's roots, refused with a 403 (or, for state written
through ``update_state``, a run error) that never quotes a file."""

from __future__ import annotations

import httpx
import pytest
from servers import langgraph_dev  # tests/ is on sys.path

from sttrl.config import load_config

KEY = "test-server-key-456"
SECRET = "db_password: hunter2-do-not-echo"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, data_cache):
    """A server with STTRL_API_KEY, a config directory, and a secret YAML file outside every root."""
    tmp = tmp_path_factory.mktemp("keyed")
    configs = tmp / "configs"
    configs.mkdir()
    (configs / "broken.yaml").write_text(f"{SECRET}\ntrain:\n  lr: [0.1\n")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.yaml").write_text(f"{SECRET}\n")
    env = {
        "STTRL_API_KEY": KEY,
        "STTRL_SERVER_CONFIG_DIR": str(configs),
        "STTRL_COLLECT_SINK": (tmp / "store").as_uri(),
    }
    with langgraph_dev(tmp, env, root=tmp / "root", cache=data_cache) as url:
        yield {"url": url, "root": tmp / "root", "outside": outside, "cache": data_cache}


def _run(client: httpx.Client, inp: dict) -> httpx.Response:
    tid = client.post("/threads", json={}).json()["thread_id"]
    return client.post(f"/threads/{tid}/runs", json={"assistant_id": "sttrl", "input": inp})


def test_without_the_key_every_route_is_refused(keyed):
    with httpx.Client(base_url=keyed["url"], timeout=30) as c:
        assert c.get("/ok").status_code == 200  # health stays open
        assert c.post("/threads", json={}).status_code == 401
        assert c.post("/threads", json={}, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/runs/wait", json={"assistant_id": "sttrl", "input": {}}).status_code == 401
        assert c.post("/assistants/search", json={}).status_code == 401
        # Studio's sign-in scheme does not open the server (on langgraph dev it let any request through)
        assert c.post("/threads", json={}, headers={"x-auth-scheme": "langsmith"}).status_code == 401
        assert c.get("/rl/episodes").status_code == 401
        ok = {"Authorization": f"Bearer {KEY}"}
        assert c.post("/threads", json={}, headers=ok).status_code == 200
        assert c.post("/threads", json={}, headers={"X-API-Key": KEY}).status_code == 200
        assert c.get("/rl/episodes", headers=ok).status_code == 200  # one key for the collect routes too


def test_inputs_naming_paths_outside_the_roots_are_403_and_quote_no_file(keyed):
    outside, secret = keyed["outside"], keyed["outside"] / "secret.yaml"
    base = [f"data.cache_dir={keyed['cache']}", f"run.out_dir={keyed['root']}"]
    cases = {
        "run_dir": {"preset": "debug", "overrides": base, "run_dir": str(outside / "run")},
        "out_dir": {"preset": "debug", "overrides": [*base, f"run.out_dir={outside}"]},
        "cache": {"preset": "debug", "overrides": [*base, f"data.cache_dir={outside}"]},
        "config file": {"preset": "debug", "overrides": base, "config_file": str(secret)},
        "config traversal": {"preset": "debug", "overrides": base, "config_file": "../../outside0/secret.yaml"},
        "learned model": {"preset": "debug", "overrides": base, "agent": "learned", "model": str(outside)},
        "file sink": {"preset": "debug", "overrides": [*base, f"run.sink={outside.as_uri()}"]},
        "env sink": {"preset": "debug", "overrides": [*base, "run.sink=env:STTRL_API_KEY"]},
        "resolved config": {
            "config": load_config("debug", overrides=[*base, f"run.out_dir={outside}"]).to_dict(),
        },
    }
    with httpx.Client(base_url=keyed["url"], timeout=30, headers={"X-API-Key": KEY}) as c:
        for name, inp in cases.items():
            r = _run(c, inp)
            assert r.status_code == 403, (name, r.status_code, r.text)
            assert "hunter2" not in r.text and "db_password" not in r.text, (name, r.text)
            assert "outside the server" in r.text or "config_file" in r.text or "run.sink" in r.text, (name, r.text)
    assert not (outside / "run").exists() and sorted(p.name for p in outside.iterdir()) == ["secret.yaml"]


def test_state_written_through_update_state_is_checked_in_the_graph(keyed):
    """``update_state`` passes no auth handler: the nodes check the state's paths themselves."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=keyed["url"], api_key=KEY)
    tid = client.threads.create(graph_id="sttrl")["thread_id"]
    cfg = load_config("debug", overrides=[f"data.cache_dir={keyed['cache']}", f"run.out_dir={keyed['root']}"])
    forged = {"thread_id": tid, "config": cfg.to_dict(), "agent": "rule", "run_dir": str(keyed["outside"] / "forged")}
    client.threads.update_state(tid, forged, as_node="configure")
    errors = [
        p.data for p in client.runs.stream(tid, "sttrl", input=None, stream_mode=["updates"]) if p.event == "error"
    ]
    assert len(errors) == 1 and "outside the server's run root" in errors[0]["message"], errors
    assert not (keyed["outside"] / "forged").exists()


def test_a_config_file_from_the_config_directory_fails_in_one_line_without_its_content(keyed):
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=keyed["url"], api_key=KEY)
    tid = client.threads.create()["thread_id"]
    inp = {"preset": "debug", "config_file": "broken.yaml", "overrides": [f"data.cache_dir={keyed['cache']}"]}
    errors = [
        p.data for p in client.runs.stream(tid, "sttrl", input=inp, stream_mode=["updates"]) if p.event == "error"
    ]
    assert len(errors) == 1, errors
    message = errors[0]["message"]
    assert "broken.yaml is not valid YAML: line 4" in message and "hunter2" not in message and "\n" not in message


def test_without_a_key_the_server_answers_loopback_only(tmp_path, data_cache):
    with langgraph_dev(tmp_path, cache=data_cache) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.post("/threads", json={}).status_code == 200  # loopback, as langgraph dev binds it
        foreign = (
            {"X-Forwarded-For": "203.0.113.7"},
            {"Forwarded": "for=203.0.113.7"},
            {"Host": "evil.test"},  # DNS rebinding
            {"Origin": "https://evil.test"},  # another web page, through the developer's browser
        )
        for header in foreign:
            r = c.post("/threads", json={}, headers=header)
            assert r.status_code == 403 and "STTRL_API_KEY" in r.text, (header, r.text)
        for origin in ("https://smith.langchain.com", "http://127.0.0.1:5173", "http://localhost:3000"):
            assert c.post("/threads", json={}, headers={"Origin": origin}).status_code == 200, origin
        assert c.get("/rl/episodes").status_code == 503  # the collect routes need the key set
