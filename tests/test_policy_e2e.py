"""End to end on the debug preset: teacher data from a real lookahead run -> step-wise stage -> outcome stage
(RLOO) -> the learned controller decides a debug episode; DPO and the graph's --agent learned wiring."""

from __future__ import annotations

import json
import math

import pytest

from sttrl.config import load_config
from sttrl.errors import ConfigError
from sttrl.policy.controller import META_FILE, LearnedController
from sttrl.policy.learn import main as learn_main
from sttrl.rundir import TRAJECTORY

COMMON = [
    "env.instances.lr=[1e-4, 1e-2]",
    "env.budget_unit=samples",
    "env.samples_per_action=8",
    "env.max_actions=3",
    "lookahead.candidates=[keep,lr_up]",
    "lookahead.probe_samples=4",
    "train.batch_size=2",
]  # probes of two optimizer steps: the lr shows in their loss


@pytest.fixture(scope="module")
def teacher(data_cache, tmp_path_factory):
    from sttrl.control.teacher import main as teacher_main

    tmp = tmp_path_factory.mktemp("policy-e2e")
    out = tmp / "teacher.jsonl"
    sets = [x for s in COMMON + [f"data.cache_dir={data_cache}", f"run.out_dir={tmp / 'runs'}"] for x in ("--set", s)]
    assert teacher_main(["--preset", "debug", *sets, "--instances", "2", "--out", str(out)]) == 0
    return out, sets, tmp


def test_teacher_sft_rloo_then_the_learned_controller_decides_an_episode(teacher, tiny_lm, capsys):
    path, sets, tmp = teacher
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows and rows[-1]["history"] and len(rows[-1]["history"]) == rows[-1]["step"] - 1
    base = ["--preset", "debug", "--policy-preset", "debug", *sets, "--data", str(path)]
    assert learn_main([*base, "--stage", "sft", "--model", f"local:{tiny_lm}", "--out", str(tmp / "sft")]) == 0
    # the held-out check, printed before any episode: teacher states of an instance it did not train on
    printed = capsys.readouterr().out
    assert "held-out teacher states (start model)" in printed and "held-out teacher states (after sft)" in printed
    assert "train instances " in printed and "vs majority class" in printed and "decision latency" in printed
    held = json.loads((tmp / "sft" / META_FILE).read_text())["heldout"]
    assert held["after"]["states"] >= 1 and 0.0 <= held["after"]["accuracy"] <= 1.0
    assert sum(held["after"]["predicted"].values()) == held["after"]["states"]
    assert held["after"]["majority"]["action"] is not None
    assert (
        learn_main(
            [
                *base,
                "--stage",
                "rloo",
                "--set",
                "policy.reference=ema",
                "--model",
                str(tmp / "sft"),
                "--out",
                str(tmp / "rloo"),
            ]
        )
        == 0
    )
    meta = json.loads((tmp / "rloo" / META_FILE).read_text())
    assert meta["stage"] == "rloo" and len(meta["log"]) == 3 and meta["config"]["policy"]["reference"] == "ema"
    assert all({"reward", "kl", "kl_coef", "entropy"} <= set(s) for s in meta["log"])
    assert learn_main([*base, "--stage", "rloo", "--model", str(tmp / "sft"), "--out", str(tmp / "rloo")]) == 2
    assert "already exists" in capsys.readouterr().err

    # the graph's episode, decided by --agent learned
    from graph.run import main as run_main

    out = tmp / "runs"
    assert (
        run_main(
            [
                "--preset",
                "debug",
                *sets,
                "--agent",
                "learned",
                "--model",
                str(tmp / "rloo"),
                "--max-actions",
                "2",
                "--thread-id",
                "learned-1",
                "--quiet",
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in (out / "learned-1" / TRAJECTORY).read_text().splitlines()]
    assert records and all(r["source"] == "learned" for r in records), [r["source"] for r in records]
    assert all(r["rationale"].startswith(f"p({r['action']})=") for r in records)  # chosen by scoring
    assert all(r["action"] in load_config("debug").env.actions for r in records)

    # ... and in the benchmark, which needs its directory
    from bench import main as bench_main

    bench_out = tmp / "bench"
    assert (
        bench_main(
            ["--preset", "debug", *sets, "--controllers", "learned", "--seeds", "1", "--quiet", "--out", str(bench_out)]
        )
        == 2
    )
    assert "--learned-model DIR" in capsys.readouterr().out
    assert (
        bench_main(
            [
                "--preset",
                "debug",
                *sets,
                "--controllers",
                "learned",
                "--learned-model",
                str(tmp / "rloo"),
                "--seeds",
                "1",
                "--set",
                "env.max_actions=2",
                "--quiet",
                "--out",
                str(bench_out),
            ]
        )
        == 0
    )
    doc = json.loads((bench_out / "bench.json").read_text())
    assert doc["learned_model"] == str(tmp / "rloo") and doc["runs"][0]["status"] == "finished"


def test_dpo_stage_and_the_graphs_learned_agent(teacher, tiny_lm, capsys):
    path, sets, tmp = teacher
    base = ["--preset", "debug", "--policy-preset", "debug", *sets, "--data", str(path), "--model", str(tiny_lm)]
    assert learn_main([*base, "--stage", "dpo", "--out", str(tmp / "dpo")]) == 0
    meta = json.loads((tmp / "dpo" / META_FILE).read_text())
    assert meta["stage"] == "dpo" and all("margin" in s for s in meta["log"])
    # TRL's DPOTrainer on the controller's tokens: the first step starts at the reference, so the loss is log 2
    first = meta["log"][0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4) and first["margin"] == pytest.approx(0.0, abs=1e-4)
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies"} <= set(first)

    from graph.agents import AgentConfigError, make_agent

    cfg = load_config("debug")
    assert isinstance(make_agent("learned", cfg, model=str(tmp / "dpo")), LearnedController)
    with pytest.raises(AgentConfigError, match="needs --model DIR"):
        make_agent("learned", cfg)
    with pytest.raises(ConfigError, match="resolves to nothing"):
        make_agent("learned", cfg, model=str(tmp / "nothing-here"))


def test_episodes_stage_learns_from_whole_episode_returns(teacher, tiny_lm):
    _, sets, tmp = teacher
    argv = [
        "--preset",
        "debug",
        "--policy-preset",
        "debug",
        *sets,
        "--stage",
        "episodes",
        "--set",
        "policy.batch_size=1",
        "--set",
        "policy.steps=1",
        "--set",
        "policy.max_episode_length=2",
        "--model",
        str(tiny_lm),
        "--out",
        str(tmp / "episodes"),
    ]
    assert learn_main(argv) == 0
    meta = json.loads((tmp / "episodes" / META_FILE).read_text())
    (step,) = meta["log"]
    assert {"return", "kl", "kl_coef", "entropy"} <= set(step)
    trajectories = sorted((tmp / "runs" / "policy-episodes").glob("*/step1-b0-k*/trajectory.jsonl"))
    assert len(trajectories) == 2  # k=2 episodes from the same start
    records = [[json.loads(line) for line in path.read_text().splitlines()] for path in trajectories]
    assert all(1 <= len(recs) <= 2 and all(r["source"] == "learned" for r in recs) for recs in records)
    assert step["decisions"] == sum(len(recs) for recs in records)  # every decision of every episode is trained
    returns = [sum(r["reward"] for r in recs) for recs in records]
    assert step["return"] == pytest.approx(sum(returns) / 2, abs=1e-5)
