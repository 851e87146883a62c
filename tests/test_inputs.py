"""What a server input may name (graph.inputs, issue 24 item 1), without a server: the roots, symlinks that lead out of
them, local models, config files; the server tests (tests/test_server_auth.py) drive the same rules over HTTP."""

from __future__ import annotations

import pytest

from graph import inputs
from sttrl.config import load_config


@pytest.fixture
def roots(tmp_path, monkeypatch):
    root, cache, configs, outside = (tmp_path / n for n in ("root", "cache", "configs", "outside"))
    for d in (root, cache, configs, outside):
        d.mkdir()
    monkeypatch.setenv(inputs.ROOT_VARIABLE, str(root))
    monkeypatch.setenv(inputs.CACHE_VARIABLE, str(cache))
    monkeypatch.setenv(inputs.CONFIG_DIR_VARIABLE, str(configs))
    return {"root": root, "cache": cache, "configs": configs, "outside": outside}


def test_paths_inside_the_roots_pass_and_a_symlink_out_of_them_does_not(roots):
    inputs.check_path("run_dir", roots["root"] / "a" / "b")
    inputs.check_path("data.cache_dir", roots["cache"])
    (roots["root"] / "door").symlink_to(roots["outside"])
    for bad in (roots["outside"], roots["root"] / "door" / "x", roots["root"] / ".." / "outside"):
        with pytest.raises(inputs.ServerInputError, match="outside the server's run root"):
            inputs.check_path("run_dir", bad)


def test_a_server_input_starts_from_the_roots_and_every_path_field_is_checked(roots):
    cfg = inputs.resolve_input({"preset": "debug"})
    assert cfg.run.out_dir == roots["root"] and cfg.data.cache_dir == roots["cache"]
    with pytest.raises(inputs.ServerInputError, match="data.hub.local_dir"):
        inputs.resolve_input({"preset": "debug", "overrides": [f"data.hub.local_dir={roots['outside']}"]})
    with pytest.raises(inputs.ServerInputError, match="bench.schedule_file"):
        inputs.resolve_input({"preset": "debug", "overrides": [f"bench.schedule_file={roots['outside'] / 's.json'}"]})
    with pytest.raises(inputs.ServerInputError, match="data.cache_dir"):  # a resolved config's defaults are checked
        inputs.check_config(load_config("debug"))


def test_local_models_config_files_and_sinks(roots):
    inputs.check_agent_model("llm", "local:HuggingFaceTB/SmolLM2-135M-Instruct")  # a hub id, not a path
    inputs.check_agent_model("llm", "local:smollm2-135m?temperature=0.5")
    with pytest.raises(inputs.ServerInputError):
        inputs.check_agent_model("llm", f"local:{roots['outside'] / 'm.gguf'}")
    with pytest.raises(inputs.ServerInputError):
        inputs.check_agent_model("learned", str(roots["outside"]))
    assert inputs.config_file("a.yaml") == roots["configs"] / "a.yaml"
    with pytest.raises(inputs.ServerInputError, match="outside the server's config directory"):
        inputs.config_file("../outside/secret.yaml")
    with pytest.raises(inputs.ServerInputError, match="reads the server's environment"):
        inputs.check_raw_input({"preset": "debug", "overrides": ["run.sink=env:STTRL_API_KEY"]})
    inputs.check_raw_input({"preset": "debug", "overrides": [f"run.sink={(roots['root'] / 'sink').as_uri()}"]})
    inputs.check_raw_input({})  # a resume (no input): checked in the graph
    assert not inputs.on_server()  # outside a LangGraph server run


def test_without_a_config_directory_no_config_file_is_read(roots, monkeypatch):
    monkeypatch.delenv(inputs.CONFIG_DIR_VARIABLE)
    with pytest.raises(inputs.ServerInputError, match="not served here"):
        inputs.check_raw_input({"preset": "debug", "config_file": "a.yaml"})


def test_what_counts_as_a_request_from_this_machine():
    from graph.auth import is_local

    here = {"host": "127.0.0.1:8123"}
    assert is_local("127.0.0.1", here) and is_local("::1", {"host": "[::1]:8123"})
    assert not is_local("127.0.0.1", {})  # no Host header: refused
    assert is_local("127.0.0.1", {**here, "origin": "https://smith.langchain.com"})
    assert is_local("127.0.0.1", {**here, "origin": "https://eu.smith.langchain.com"})
    assert not is_local("10.0.0.2", here) and not is_local(None, here)
    assert not is_local("127.0.0.1", {**here, "x-forwarded-for": "203.0.113.7"})
    assert not is_local("127.0.0.1", {"host": "evil.test:8123"})
    assert not is_local("127.0.0.1", {**here, "origin": "https://smith.langchain.com.evil.test"})
