"""The extra facts of the step prompt, checked against hand computations on made-up records."""

from __future__ import annotations

import pytest

from graph.agents import build_messages
from graph.prompt_facts import facts, slope, trend_word
from sttrl.config import load_config


def record(step, losses, *, clamped=False, action="keep", samples=8, grad_norms=None, prev=1.2, n=6):
    train = {"losses": losses, "samples": samples}
    if grad_norms is not None:
        train["grad_norms"] = grad_norms
    return {
        "step": step,
        "action": action,
        "clamped": clamped,
        "hp_before": {"lr": 1e-3, "batch_size": 4, "freeze_layers": 0},
        "observation": {"previous_wer": prev},
        "train": train,
        "eval": {"n": n},
    }


def test_slope_and_trend_by_hand():
    assert slope([3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # x 0..3, y 1 3 2 4: dx -1.5 -.5 .5 1.5, dy -1.5 .5 -.5 1.5; sum dx*dy = 4, sum dx^2 = 5: slope 0.8
    assert slope([1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)
    assert slope([5.0]) == 0.0
    assert trend_word([3.0, 2.0, 1.0]) == "falling" and trend_word([1.0, 1.0, 1.0]) == "flat"
    assert trend_word([1.0, 3.0, 2.0, 4.0]) == "rising"


def test_facts_lines():
    cfg = load_config("debug", overrides=["train.memory_budget_gb=2.0"])
    obs = {"step": 2, "steps_left": 1, "global_step": 4, "batch_size": 4, "grad_accum": 2, "memory_gb": 1.25}
    rows = [record(1, [4.0, 3.0], prev=1.5), record(2, [3.0, 2.5], clamped=True, action="lr_up", grad_norms=[2.0, 1.5])]
    lines = facts(obs, rows, cfg)
    text = "\n".join(lines)
    assert all(line.startswith("- ") for line in lines)
    assert "start of the episode: validation WER 1.5, lr 0.001, batch 4, frozen layers 0" in text
    assert "(2 steps): first 3, last 2.5, min 2.5, max 3; least-squares slope -0.5 per step (falling)" in text
    assert "gradient norm within the last block: first 2, last 1.5, max 2" in text
    assert "peak training memory 1.25 GB of a 2 GB budget (0.75 GB headroom" in text
    # 2 steps per action x batch 4 x accumulation 2 = 16 samples per block; 8 + 8 seen
    assert "training samples seen: 16 in 4 optimizer steps; the next block trains 16 samples" in text
    assert "validation set: 6 utterances" in text
    assert "changed nothing: 2 (lr_up)" in text
    assert "budget: 1 decisions left, each buys 2 optimizer steps" in text


def test_first_step_has_no_history_facts_and_prompt_includes_them():
    cfg = load_config("debug")
    obs = {"step": 0, "steps_left": 3, "global_step": 0, "batch_size": 4, "grad_accum": 1, "memory_gb": None}
    text = "\n".join(facts(obs, [], cfg))
    assert "start of the episode" not in text and "gradient norm" not in text and "memory" not in text
    assert "training samples seen: 0 in 0 optimizer steps; the next block trains 8 samples" in text
    human = build_messages(obs, [], cfg)[1].content
    assert "training samples seen: 0" in human


def test_samples_budget_is_stated_as_samples():
    # budget in samples: 20 samples per decision at batch 4 x accumulation 2 = ceil(20 / 8) = 3 steps = 24 samples
    cfg = load_config("debug", overrides=["env.budget_unit=samples", "env.samples_per_action=20"])
    obs = {"step": 1, "steps_left": 2, "global_step": 3, "batch_size": 4, "grad_accum": 2, "memory_gb": None}
    text = "\n".join(facts(obs, [record(1, [4.0, 3.0], samples=24)], cfg))
    assert "training samples seen: 24 in 3 optimizer steps; every block trains 24 samples, in 3 optimizer steps" in text
    assert "budget: 2 decisions left, each trains 20 samples; the budget counts training samples" in text
    assert "optimizer steps; the episode's cost is counted in decisions" not in text
    assert "a larger batch buys more samples" not in text
