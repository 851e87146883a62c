"""Issue 11, first part: a budget counted in training samples, and a reward kind that step 1 does not dominate."""

from __future__ import annotations

import math

import pytest

from sttrl.config import RewardConfig, load_config
from sttrl.errors import ConfigError
from sttrl.reward import reward


def test_seed_reward_kind_is_the_seed_formula():
    cfg = RewardConfig()
    assert cfg.kind == "seed"
    assert reward(3.44, 0.50, "ok", cfg) == pytest.approx(3.44 - 0.50 - 0.05)
    assert reward(0.50, 0.50, "oom", cfg) == pytest.approx(-0.05 - 1.0)
    assert reward(0.50, 0.50, "diverged", cfg) == pytest.approx(-0.05 - 2.5)


def test_log_ratio_on_a_known_sequence():
    cfg = RewardConfig(kind="log_ratio", step_penalty=0.0)
    wers = [3.44, 0.50, 0.335, 0.2228, 0.2211, 0.1263]  # a cpu-preset episode: the start loops (WER > 1)
    rewards = [reward(a, b, "ok", cfg) for a, b in zip(wers, wers[1:])]
    assert rewards[0] == pytest.approx(math.log(1.0 / 0.50))  # clipped at 1: 0.693, not log(3.44/0.5) = 1.93
    assert rewards[1] == pytest.approx(math.log(0.50 / 0.335))
    assert rewards[4] == pytest.approx(math.log(0.2211 / 0.1263))
    assert max(rewards) / sum(rewards) < 0.5  # step 1 does not dominate the return (seed kind: 2.94 / 3.31)
    assert sum(rewards) == pytest.approx(math.log(1.0 / 0.1263))  # telescopes: the return is the log of the gain
    assert reward(0.2, 0.0, "ok", cfg) == pytest.approx(math.log(0.2 / 1e-3))  # floored: finite at WER 0
    assert reward(0.2, 0.2, "nan", RewardConfig(kind="log_ratio", nan_penalty=0.7)) == pytest.approx(-0.05 - 0.7)
    with pytest.raises(ConfigError, match="env.reward.kind"):
        load_config("debug", overrides=["env.reward.kind=linear"])


def test_samples_budget_needs_a_size_and_equalizes_samples(make_config, tmp_path):
    with pytest.raises(ConfigError, match="env.samples_per_action is required"):
        load_config("debug", overrides=["env.budget_unit=samples"])
    from sttrl.env import SttEnv

    env = SttEnv(make_config("env.budget_unit=samples", "env.samples_per_action=16", "env.max_actions=3",
                             "train.batch_size=4", "train.batch_max=16"))
    env.reset(seed=0)
    for a in ("keep", "batch_up", "batch_up"):  # batch 4 -> 8 -> 16
        env.step(a)
    recs = env.trajectory.records()
    assert [r["hp_after"]["batch_size"] for r in recs] == [4, 8, 16]
    assert [r["train"]["steps"] for r in recs] == [4, 2, 1]  # fewer steps at a bigger batch
    assert [r["train"]["samples"] for r in recs] == [16, 16, 16]  # the same compute per decision
    assert [r["spent"] for r in recs] == [{"samples": 16 * k, "steps": s, "evaluations": 1 + k}
                                         for k, s in ((1, 4), (2, 6), (3, 7))]
