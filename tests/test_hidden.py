"""The hidden split: its synthetic sentences need the judge key, every access is logged outside the run
directory, and an access from the episode's process fails the judge (issue 10, item 12)."""

from __future__ import annotations

import pytest

from sttrl.config import DataConfig
from sttrl.data import generate_sentences, load_hidden_split, synthetic
from sttrl.data.dataset import data_fingerprint
from sttrl.data.hidden import accesses
from sttrl.env.gym import SttEnv
from sttrl.errors import DataError
from sttrl.judge.scoring import judge


def test_public_generator_with_public_arguments_does_not_give_the_hidden_sentences(monkeypatch):
    cfg = DataConfig(sentences_per_domain=40)
    hidden = {p.text for p in synthetic.plan_hidden(cfg, data_fingerprint(cfg))}
    public = set(generate_sentences(cfg.hidden_domain, 40, cfg.seed))  # what the hidden split was before
    assert len(hidden) == 40 and len(hidden & public) <= 2  # a small grammar: a chance repeat is possible (0 here)
    monkeypatch.setenv("STTRL_JUDGE_KEY", "a-different-judge-key-0123456789")
    other = {p.text for p in synthetic.plan_hidden(cfg, data_fingerprint(cfg))}
    assert len(other & hidden) <= 2  # another key, other hidden sentences (share the key to compare machines)


def test_data_fingerprint_depends_on_the_key_but_never_holds_it(monkeypatch):
    cfg = DataConfig()
    monkeypatch.setenv("STTRL_JUDGE_KEY", "key-number-one-0123456789")
    first = data_fingerprint(cfg)
    monkeypatch.setenv("STTRL_JUDGE_KEY", "key-number-two-0123456789")
    assert data_fingerprint(cfg) != first and "key-number" not in first


def test_training_domain_error_does_not_list_the_hidden_domain():
    with pytest.raises(DataError) as info:
        synthetic.check_domains(DataConfig(train_domains=["sports"]))
    assert "data.train_domains" in str(info.value) and "government" not in str(info.value)
    assert "health" in str(info.value)


def test_hidden_split_loaded_mid_episode_fails_the_judge(make_config):
    cfg = make_config("env.max_actions=2")
    env = SttEnv(cfg, progress=False)
    env.reset(seed=0)
    env.step("keep")
    before = len(accesses())
    leaked = load_hidden_split(cfg.data, progress=False)  # what an agent's code could call mid-episode
    assert leaked and len(accesses()) == before + 1 and not accesses()[-1]["judge"]
    env.step("keep")
    run_dir = env.run_dir
    env.close()
    report = judge(run_dir, progress=False)
    check = report["checks"]["hidden_split_untouched"]
    assert not check["passed"] and "outside the judge" in check["reason"] and not report["scored"]
    assert accesses()[-1]["judge"]  # the judge's own load is logged as the judge's


def test_hidden_sentences_generated_mid_episode_fail_the_judge(make_config):
    cfg = make_config("env.max_actions=1")
    env = SttEnv(cfg, progress=False)
    env.reset(seed=0)
    synthetic.plan_hidden(cfg.data, data_fingerprint(cfg.data))
    env.step("keep")
    run_dir = env.run_dir
    env.close()
    assert not judge(run_dir, progress=False)["checks"]["hidden_split_untouched"]["passed"]
