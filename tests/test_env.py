"""SttEnv: the Gymnasium contract, an episode with the rule policy, the trajectory, the judge."""

from __future__ import annotations

import json

import pytest
from gymnasium.utils.env_checker import check_env

from sttrl.control.classical import RulePolicy
from sttrl.env.actions import Action
from sttrl.env.gym import SttEnv
from sttrl.judge.scoring import judge
from sttrl.rundir import JUDGE_REPORT


def test_check_env_passes_on_debug(make_config):
    env = SttEnv(make_config("env.steps_per_action=1", "env.max_actions=2"))
    check_env(env, skip_render_check=True)


def test_episode_with_rule_policy_and_judge(make_config):
    env = SttEnv(make_config("env.max_actions=3"))
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["observation"]["wer"] > 0 and info["observation"]["train_loss"] > 0
    policy, history, done, rewards = RulePolicy(tuple(env.actions)), [], False, []
    while not done:
        d = policy.decide(info["observation"], history)
        obs, r, term, trunc, info = env.step(d)
        history = env.trajectory.records()
        rewards.append(r)
        done = term or trunc
    records = env.trajectory.records()
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    assert all(r["source"] == "rule" and r["rationale"] for r in records)  # a Decided carries who decided
    assert records[-1]["observation"]["wer"] == pytest.approx(info["observation"]["wer"])
    # reward = WER gain - step penalty for ok blocks
    prev = None
    for rec in records:
        if rec["action"] != "stop" and rec["status"] == "ok" and prev is not None:
            assert rec["reward"] == pytest.approx(prev - rec["observation"]["wer"] - 0.05)
        prev = rec["observation"]["wer"]
    report = judge(env.run_dir, progress=False)
    assert report["scored"] and 0 <= report["score"] <= 100 and report["wer"] >= 0
    assert report["checks"]["hash_matches_record"]["passed"]
    assert report["checks"]["hidden_split_untouched"]["passed"]
    assert report["checks"]["splits_disjoint"]["passed"]
    assert report["checks"]["weights_changed"]["passed"]
    assert json.loads((env.run_dir / JUDGE_REPORT).read_text())["wer"] == report["wer"]


def test_stop_ends_episode_and_clamp_is_visible(make_config):
    env = SttEnv(make_config("env.max_actions=4", "train.freeze_layers=0"))
    env.reset(seed=1)
    _, r, term, trunc, info = env.step(Action.FREEZE_LESS)  # already at 0 frozen layers
    assert info["clamped"] and not term and not trunc
    _, r, term, trunc, info = env.step("stop")
    assert term and not trunc and r == 0.0 and "final" in info
    with pytest.raises(RuntimeError, match="ended"):
        env.step("keep")


def test_hidden_split_is_closed_to_the_episode(make_config):
    from sttrl.errors import HiddenSplitAccessError

    env = SttEnv(make_config("env.max_actions=1"))
    env.reset(seed=0)
    with pytest.raises(HiddenSplitAccessError):
        env.runtime.data.split("test")  # type: ignore[arg-type]
    assert "test" not in env.runtime.data.opened_splits


def test_judge_refuses_a_tampered_checkpoint(make_config):
    env = SttEnv(make_config("env.max_actions=1"))
    env.reset(seed=0)
    env.step("keep")
    weights = env.run_dir / "final" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    report = judge(env.run_dir, progress=False)
    assert not report["scored"] and report["score"] == 0.0
    assert not report["checks"]["hash_matches_record"]["passed"]
    from sttrl.judge.scoring import main

    assert main([str(env.run_dir), "--quiet"]) == 1


def test_different_action_sequences_end_apart(make_config):
    """Same actions, same seed -> identical losses; lower lr -> the recorded lr is lower and the losses differ."""
    runs = {}
    for key, actions in (("keep", ["keep", "keep"]), ("again", ["keep", "keep"]), ("lr_down", ["lr_down", "lr_down"])):
        env = SttEnv(make_config("env.max_actions=2"))
        env.reset(seed=0)
        losses = []
        for a in actions:
            _, _, _, _, info = env.step(a)
            losses += info["losses"]
        runs[key] = (losses, env.trajectory.records())
    start_lr = runs["keep"][1][0]["hp_before"]["lr"]
    assert runs["keep"][0] == runs["again"][0]  # deterministic: bit-equal losses
    assert [r["hp_after"]["lr"] for r in runs["lr_down"][1]] == pytest.approx([start_lr / 1.5, start_lr / 1.5**2])
    assert runs["lr_down"][1][-1]["train"]["losses"] == runs["lr_down"][0][-2:]
    # the first optimizer step of both runs starts from the same weights and batch: the loss is equal;
    # every later step differs because the lower learning rate moved the weights less
    assert runs["lr_down"][0][0] == runs["keep"][0][0]
    assert all(a != b for a, b in zip(runs["lr_down"][0][1:], runs["keep"][0][1:], strict=True))


def test_gymnasium_make_builds_the_registered_env_and_check_env_passes(make_config, data_cache, tmp_path):
    import gymnasium

    import sttrl

    overrides = [f"data.cache_dir={data_cache}", f"run.out_dir={tmp_path / 'runs'}", "env.steps_per_action=1"]
    env = gymnasium.make(sttrl.GYM_ID, preset="debug", overrides=[*overrides, "env.max_actions=2"])
    assert isinstance(env.unwrapped, SttEnv) and env.unwrapped.cfg.env.max_actions == 2
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    _, reward, term, trunc, info = env.step(env.unwrapped.actions.index("keep"))
    assert not term and info["action"] == "keep" and isinstance(reward, float)
    env.close()


def test_importing_sttrl_registers_the_env_without_torch(tmp_path):
    import subprocess
    import sys

    code = "import sys, gymnasium, sttrl; print(sttrl.GYM_ID in gymnasium.registry, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
