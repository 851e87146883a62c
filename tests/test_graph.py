"""The episode graph in-process: structure, routers, a real debug episode with a checkpointer, an LLM
agent made of fakes that misbehave in every way, a stop decision, and a missing API key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from test_agents import FakeToolCallingModel, call, rate_limited, timed_out

from graph import nodes
from graph.agents import AgentConfigError, Decided, LLMAgent
from graph.graph import build_graph, graph, recursion_limit
from graph.state import EpisodeContext
from sttrl.env.actions import Action
from sttrl.rundir import CONFIG_FILE, JUDGE_REPORT, PLOT, TRAJECTORY


def test_module_graph_has_the_episode_shape():
    g = graph.get_graph()
    assert set(g.nodes) == {
        "__start__",
        "configure",
        "setup",
        "observe",
        "decide",
        "train",
        "evaluate",
        "reward",
        "judge",
        "__end__",
    }
    edges = {(e.source, e.target, e.conditional) for e in g.edges}
    assert ("setup", "observe", True) in edges and ("setup", "__end__", True) in edges
    assert ("reward", "observe", False) in edges
    assert ("__start__", "configure", False) in edges and ("configure", "setup", False) in edges
    assert {
        ("observe", "decide", True),
        ("observe", "judge", True),
        ("decide", "train", True),
        ("decide", "judge", True),
        ("judge", "__end__", False),
    } <= edges
    assert graph.checkpointer is None and graph.name == "sttrl-episode"
    mermaid = g.draw_mermaid()
    assert "decide -.-> judge;" in mermaid and "train --> evaluate;" in mermaid


def test_routers_return_literals_and_raise_on_the_unexpected():
    assert nodes.route_after_observe({"step": 1, "max_actions": 3}) == "decide"
    assert nodes.route_after_observe({"step": 3, "max_actions": 3}) == "judge"
    assert nodes.route_after_decide({"decision": {"action": "stop"}}) == "judge"
    assert nodes.route_after_decide({"decision": {"action": "lr_up"}}) == "train"
    with pytest.raises(ValueError):
        nodes.route_after_decide({"decision": {"action": "explode"}})
    with pytest.raises(ValueError):
        nodes.route_after_decide({})
    with pytest.raises(ValueError):
        nodes.route_after_observe({"step": None, "max_actions": 3})


class ToolRuns(BaseCallbackHandler):
    def __init__(self) -> None:
        self.names: list[str] = []

    def on_tool_start(self, serialized, input_str, **kwargs):
        self.names.append(serialized["name"])


def run_episode(tmp_path: Path, inp: dict[str, Any], agent: Any = None, thread: str = "t1", callbacks=()):
    """Run ``inp`` to the end on a SQLite checkpointer; returns (final state values, custom events)."""
    events: list[dict] = []
    with SqliteSaver.from_conn_string(str(tmp_path / "checkpoints.sqlite")) as saver:
        g = build_graph().compile(checkpointer=saver)
        cfg = {
            "configurable": {"thread_id": thread},
            "recursion_limit": recursion_limit(10),
            "callbacks": list(callbacks),
        }
        for mode, chunk in g.stream(
            inp, cfg, stream_mode=["updates", "custom"], context=EpisodeContext(agent=agent), durability="sync"
        ):
            if mode == "custom":
                events.append(chunk)
        snap = g.get_state(cfg)
        assert snap.next == ()
        return snap.values, events


def test_debug_episode_with_the_rule_agent(make_config, tmp_path):
    cfg = make_config("env.steps_per_action=2", "env.max_actions=3")
    runs = ToolRuns()
    values, events = run_episode(tmp_path, {"config": cfg.to_dict(), "agent": "rule"}, callbacks=[runs])
    run_dir = Path(values["run_dir"])
    assert run_dir == cfg.run.out_dir / "t1" and values["run_id"] == "t1"
    records = [json.loads(line) for line in (run_dir / TRAJECTORY).read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, values["step"] + 1)) == [r["step"] for r in values["records"]]
    assert all(r["source"] == "rule" and r["rationale"] for r in records)
    assert values["end_reason"] in ("stop", "budget")
    # the judge ran on the saved model and agrees with judge.json
    report = json.loads((run_dir / JUDGE_REPORT).read_text())
    assert values["judge"]["scored"] and values["judge"]["wer"] == report["wer"] and report["passed_all_checks"]
    assert (run_dir / PLOT).stat().st_size > 10_000 and (run_dir / CONFIG_FILE).is_file()
    # checkpoints in the state are exactly those env.keep_checkpoints kept on disk, with their hashes
    from sttrl.io import sha256_file

    trained = [r for r in records if r["action"] != "stop"]
    on_disk = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("block-*"))
    assert [c["block"] for c in values["checkpoints"]] == on_disk == list(range(len(trained) + 1))[-2:]
    for c in values["checkpoints"]:
        assert sha256_file(Path(c["path"]) / "model.safetensors") == c["sha256"]
    assert values["final"]["sha256"] == sha256_file(run_dir / "final" / "model.safetensors")
    # progress arrived through the stream writer
    kinds = [e["type"] for e in events]
    assert kinds[0] == "setup" and kinds[-1] == "judge"
    steps = [e for e in events if e["type"] == "train_step"]
    assert len(steps) == 2 * len(trained) and all(e["loss"] > 0 and e["samples_per_s"] > 0 for e in steps)
    assert sum(k == "decision" for k in kinds) == len(records) and sum(k == "eval" for k in kinds) == len(trained)
    # training and evaluation went through the tools (visible in traces)
    assert runs.names.count("train_block") == len(trained) and runs.names.count("evaluate") == len(trained) + 1
    # state is plain data
    json.dumps(values)


class StopAt:
    """A test agent: keep until ``step``, then stop."""

    name = "stopper"

    def __init__(self, step: int) -> None:
        self.step = step

    def decide(self, observation, history):
        if len(history) + 1 >= self.step:
            return Decided(Action.STOP, "enough", "stopper")
        return Decided(Action.KEEP, "go on", "stopper")


def test_llm_agent_of_fakes_never_crashes_the_episode(make_config, tmp_path):
    cfg = make_config("env.steps_per_action=1", "env.max_actions=3")
    fake = FakeToolCallingModel(
        responses=[
            rate_limited(),
            timed_out(),
            call("lr_down", "cool down"),  # step 1: 429, timeout, then a good answer
            AIMessage(content='{"action": "batch_up",, "rationale": oops}'),  # step 2: malformed JSON -> parser
            call("explode"),
            AIMessage(content=""),
            AIMessage(content="no idea"),  # step 3: invalid, empty, unreadable
        ]
    )
    agent = LLMAgent(fake, cfg, backoff_s=0.0)
    values, events = run_episode(tmp_path, {"config": cfg.to_dict(), "agent": "llm"}, agent=agent)
    recs = values["records"]
    assert [r["source"] for r in recs] == ["llm", "llm-parser", "fallback-rule"]
    assert recs[0]["action"] == "lr_down" and recs[0]["rationale"] == "cool down"
    assert (
        recs[1]["action"] == "batch_up" and recs[1]["hp_after"]["batch_size"] == 2 * recs[1]["hp_before"]["batch_size"]
    )
    assert recs[0]["hp_after"]["lr"] == pytest.approx(cfg.train.lr / cfg.train.lr_factor)
    assert values["judge"]["scored"] and fake.calls == 7


def test_stop_ends_in_the_judge_with_a_stop_record(make_config, tmp_path):
    cfg = make_config("env.steps_per_action=1", "env.max_actions=3")
    values, _ = run_episode(tmp_path, {"config": cfg.to_dict()}, agent=StopAt(2))
    recs = values["records"]
    assert [(r["step"], r["action"], r["reward"]) for r in recs][1] == (2, "stop", 0.0)
    assert len(recs) == 2 and values["end_reason"] == "stop" and recs[1]["train"] is None
    assert recs[1]["observation"]["steps_left"] == 1 and values["final"]["block"] == 1
    lines = (Path(values["run_dir"]) / TRAJECTORY).read_text().splitlines()
    assert len(lines) == 2


def test_missing_api_key_fails_before_training(make_config, tmp_path, monkeypatch):
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = make_config()
    with SqliteSaver.from_conn_string(str(tmp_path / "cp.sqlite")) as saver:
        g = build_graph().compile(checkpointer=saver)
        with pytest.raises(AgentConfigError, match="GROQ_API_KEY"):
            g.invoke({"config": cfg.to_dict(), "agent": "llm"}, {"configurable": {"thread_id": "k"}}, durability="sync")
    assert not (cfg.run.out_dir / "k").exists()


def test_importing_the_studio_graph_is_cheap_and_side_effect_free(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, graph.graph as g; assert g.graph.checkpointer is None; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"] and list(tmp_path.iterdir()) == []


def test_input_sent_again_on_a_thread_with_progress_resumes_it(make_config, tmp_path):
    """Issue item 14: Studio's form sends the input again on a cancelled thread; it resumes, never sticks, and a
    different config in the new input does not replace the thread's own."""
    cfg = make_config("env.steps_per_action=1", "env.max_actions=3")
    inp = {"config": cfg.to_dict(), "agent": "static"}
    other = make_config("env.steps_per_action=1", "env.max_actions=3", "train.lr=5e-4")
    run = {"configurable": {"thread_id": "again"}, "recursion_limit": 50}
    with SqliteSaver.from_conn_string(str(tmp_path / "cp.sqlite")) as saver:
        g = build_graph().compile(checkpointer=saver, interrupt_after=["reward"])
        g.invoke(inp, run, durability="sync")  # stops after step 1, like a cancelled run
        assert g.get_state(run).values["step"] == 1
        g2 = build_graph().compile(checkpointer=saver)
        values = g2.invoke({**inp, "config": other.to_dict()}, run, durability="sync")  # the form, sent again
        assert values["judge"]["scored"] and [r["step"] for r in values["records"]] == [1, 2, 3]
        assert (
            g2.get_state(run).values["config"]["train"]["lr"] == cfg.train.lr
        )  # the thread kept the config it started with
        assert {r["hp_after"]["lr"] for r in values["records"]} == {cfg.train.lr}
        g2.invoke(inp, run, durability="sync")  # a finished thread: nothing runs again
        again = g2.get_state(run).values
        assert again["records"] == values["records"] and again["judge"] == values["judge"] and not again.get("train")
