"""Issue 11, first part: a budget counted in training samples, and a reward kind that step 1 does not dominate;
the reward-kind registry (a kind added in one place is validated by config and used by the reward)."""

from __future__ import annotations

import itertools
import math

import pytest

from sttrl.config import RewardConfig, load_config
from sttrl.env.reward import REWARD_KINDS, RewardKind, register, reward
from sttrl.errors import ConfigError
from sttrl.judge.integrity import check_trajectory
from sttrl.rundir import RUN_RECORD


def test_seed_reward_kind_is_the_seed_formula():
    cfg = RewardConfig()
    assert cfg.kind == "seed"
    assert reward(3.44, 0.50, "ok", cfg) == pytest.approx(3.44 - 0.50 - 0.05)
    assert reward(0.50, 0.50, "oom", cfg) == pytest.approx(-0.05 - 1.0)
    assert reward(0.50, 0.50, "diverged", cfg) == pytest.approx(-0.05 - 2.5)


def test_log_ratio_on_a_known_sequence():
    cfg = RewardConfig(kind="log_ratio", step_penalty=0.0)
    wers = [3.44, 0.50, 0.335, 0.2228, 0.2211, 0.1263]  # a cpu-preset episode: the start loops (WER > 1)
    rewards = [reward(a, b, "ok", cfg) for a, b in itertools.pairwise(wers)]
    assert rewards[0] == pytest.approx(math.log(1.0 / 0.50))  # clipped at 1: 0.693, not log(3.44/0.5) = 1.93
    assert rewards[1] == pytest.approx(math.log(0.50 / 0.335))
    assert rewards[4] == pytest.approx(math.log(0.2211 / 0.1263))
    assert max(rewards) / sum(rewards) < 0.5  # step 1 does not dominate the return (seed kind: 2.94 / 3.31)
    assert sum(rewards) == pytest.approx(math.log(1.0 / 0.1263))  # telescopes: the return is the log of the gain
    assert reward(0.2, 0.0, "ok", cfg) == pytest.approx(math.log(0.2 / 1e-3))  # floored: finite at WER 0
    assert reward(0.2, 0.2, "nan", RewardConfig(kind="log_ratio", nan_penalty=0.7)) == pytest.approx(-0.05 - 0.7)
    with pytest.raises(ConfigError, match="env.reward.kind"):
        load_config("debug", overrides=["env.reward.kind=linear"])


def test_a_reward_kind_added_to_the_registry_is_validated_and_used():
    with pytest.raises(ConfigError, match="env.reward.kind: unknown reward kind; valid: log_ratio, seed"):
        load_config("debug", overrides=["env.reward.kind=fake_double"])
    with pytest.raises(ValueError, match="already registered"):
        register(RewardKind("seed", "again", lambda p, c, cfg: 0.0))
    register(RewardKind("fake_double", "a test double: twice the seed's gain", lambda p, c, cfg: 2 * (p - c)))
    try:
        cfg = load_config("debug", overrides=["env.reward.kind=fake_double", "env.reward.step_penalty=0.1"])
        r = cfg.env.reward
        assert reward(0.9, 0.6, "ok", r) == pytest.approx(2 * 0.3 - 0.1)
        assert reward(0.6, 0.6, "nan", r) == pytest.approx(-0.1 - r.nan_penalty)
        records = [{"step": 1, "action": "keep", "status": "ok", "reward": 2 * 0.3 - 0.1, "eval": {"wer": 0.6}}]
        assert check_trajectory(records, 0.9, r)[0]  # the judge recomputes rewards with the same kind
    finally:
        REWARD_KINDS.pop("fake_double")


def test_samples_budget_needs_a_size_and_equalizes_samples(make_config, tmp_path):
    with pytest.raises(ConfigError, match="env.samples_per_action is required"):
        load_config("debug", overrides=["env.budget_unit=samples"])
    from sttrl.env.gym import SttEnv

    env = SttEnv(
        make_config(
            "env.budget_unit=samples",
            "env.samples_per_action=16",
            "env.max_actions=3",
            "train.batch_size=4",
            "train.batch_max=16",
        )
    )
    env.reset(seed=0)
    for a in ("keep", "batch_up", "batch_up"):  # batch 4 -> 8 -> 16
        env.step(a)
    recs = env.trajectory.records()
    assert [r["hp_after"]["batch_size"] for r in recs] == [4, 8, 16]
    assert [r["train"]["steps"] for r in recs] == [4, 2, 1]  # fewer steps at a bigger batch
    assert [r["train"]["samples"] for r in recs] == [16, 16, 16]  # the same compute per decision
    assert [r["spent"] for r in recs] == [
        {"samples": 16 * k, "steps": s, "evaluations": 1 + k} for k, s in ((1, 4), (2, 6), (3, 7))
    ]


def test_instances_are_deterministic_disjoint_and_validated():
    from sttrl.env.instances import apply, draw

    cfg = load_config(
        "debug",
        overrides=[
            "env.instances.lr=[1e-4, 1e-2]",
            "env.instances.batch_sizes=[2, 4, 8]",
            "env.instances.memory_budget_gb=[0.01, 5.0]",
            "env.instances.freeze_layers=[0, 1]",
        ],
    )
    spec = cfg.env.instances
    assert [draw(spec, s) for s in spec.train_seeds] == [draw(spec, s) for s in spec.train_seeds]
    assert not set(spec.train_seeds) & set(spec.test_seeds)
    assert {draw(spec, s)["split"] for s in spec.train_seeds} == {"train"}
    assert {draw(spec, s)["split"] for s in spec.test_seeds} == {"test"}
    lrs = [draw(spec, s)["lr"] for s in spec.train_seeds + spec.test_seeds]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs) and len(set(lrs)) == len(lrs)
    applied = apply(cfg, spec.test_seeds[0])
    inst = applied.env.instance
    assert applied.train.lr == inst["lr"] and applied.train.batch_size == inst["batch_size"]
    assert applied.train.memory_budget_gb == inst["memory_budget_gb"] and inst["split"] == "test"
    assert apply(load_config("debug"), 3) == load_config("debug")  # no instances: today's behaviour
    for bad, field in (
        (["env.instances.lr=[1e-2, 1e-4]"], "increasing"),
        (["env.instances.lr=[1e-9, 1e-3]"], "train.lr_min"),
        (["env.instances.batch_sizes=[2, 64]"], "train.batch_max"),
        (["env.instances.train_seeds=[1, 2]", "env.instances.test_seeds=[2, 3]"], "overlap"),
    ):
        with pytest.raises(ConfigError, match=field):
            load_config("debug", overrides=bad)


def test_check_env_passes_with_instances_and_the_instance_is_recorded(make_config):
    from gymnasium.utils.env_checker import check_env

    from sttrl.env.gym import SttEnv

    cfg = make_config(
        "env.steps_per_action=1",
        "env.max_actions=2",
        "env.instances.lr=[1e-4, 1e-2]",
        "env.instances.batch_sizes=[2, 4]",
        "env.instances.memory_budget_gb=[5.0]",
    )
    env = SttEnv(cfg)
    check_env(env, skip_render_check=True)
    _, info = env.reset(seed=1000)
    assert info["instance"]["seed"] == 1000 and info["instance"]["split"] == "test"
    assert info["observation"]["lr"] == pytest.approx(info["instance"]["lr"])
    assert info["observation"]["memory_budget_gb"] == 5.0
    env.step("keep")
    import json

    rec = env.trajectory.records()[0]
    assert rec["instance"] == info["instance"]
    assert json.loads((env.run_dir / RUN_RECORD).read_text())["config"]["env"]["instance"] == info["instance"]
