"""Issue 11: the hidden domain split into dev (every tuning decision) and test (reported results only)."""

from __future__ import annotations

import json

import pytest

from sttrl.data import build_speech_data, load_hidden_split
from sttrl.data.hidden import judge_access


def test_dev_and_test_are_disjoint_from_each_other_and_from_training(make_config):
    cfg = make_config("data.max_hidden_utterances=16", "data.hidden_sentences=24")
    data = build_speech_data(cfg.data, progress=False)
    with judge_access("test-hidden-splits"):
        dev = load_hidden_split(cfg.data, progress=False, split="dev")
        test = load_hidden_split(cfg.data, progress=False, split="test")
        every = load_hidden_split(cfg.data, progress=False, split="all")
    assert dev and test and len(dev) + len(test) == len(every)
    ids = {name: {u.uid for u in part} for name, part in (("dev", dev), ("test", test))}
    texts = {name: {u.text.lower() for u in part} for name, part in (("dev", dev), ("test", test))}
    assert not ids["dev"] & ids["test"] and not texts["dev"] & texts["test"]
    train = {u.uid for u in data.split("train")} | {u.uid for u in data.split("validation")}
    train_texts = {u.text.lower() for n in ("train", "validation") for u in data.split(n)}
    assert not (ids["dev"] | ids["test"]) & train and not (texts["dev"] | texts["test"]) & train_texts
    manifest = json.loads(data.manifest_path.read_text())
    parts = {u["id"]: u["part"] for u in manifest["splits"]["hidden"]["utterances"]}
    assert {uid for uid, p in parts.items() if p == "dev"} >= ids["dev"]
    assert {uid for uid, p in parts.items() if p == "test"} >= ids["test"]
    with pytest.raises(Exception, match="not one of dev, test, all"):
        with judge_access("test-hidden-splits"):
            load_hidden_split(cfg.data, progress=False, split="train")


def test_judge_scores_dev_and_test_separately(make_config):
    from sttrl.env import SttEnv
    from sttrl.judge import judge, main

    env = SttEnv(make_config("env.max_actions=1", "data.max_hidden_utterances=16", "data.hidden_sentences=24"))
    env.reset(seed=0)
    env.step("keep")
    env.close()
    test = judge(env.run_dir, progress=False)
    dev = judge(env.run_dir, progress=False, split="dev")
    assert test["split"] == "test" and dev["split"] == "dev" and test["scored"] and dev["scored"]
    with judge_access("test-hidden-splits"):
        every = load_hidden_split(env.cfg.data, progress=False, split="all")
    assert test["n_utterances"] + dev["n_utterances"] == len(every) and test["wer"] is not None
    assert json.loads((env.run_dir / "judge.json").read_text())["split"] == "test"
    assert json.loads((env.run_dir / "judge-dev.json").read_text())["split"] == "dev"
    assert main([str(env.run_dir), "--split", "dev", "--quiet"]) == 0
