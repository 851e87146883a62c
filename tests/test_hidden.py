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


def test_the_private_generator_logs_too_and_a_listing_of_hashes_fails_nothing(make_config):
    """Issue 24 item 3: ``synthetic._hidden_plan`` yields hidden text, so it logs every call; the manifest's listing of
    ids and hashes (every episode builds one) is logged as ``hashes`` and fails no run."""
    cfg = make_config("env.max_actions=1")
    env = SttEnv(cfg, progress=False)
    env.reset(seed=0)
    before = len(accesses())
    synthetic.hidden_listing(cfg.data, data_fingerprint(cfg.data))
    assert accesses()[-1]["yields"] == "hashes" and len(accesses()) == before + 1
    synthetic._hidden_plan(cfg.data, data_fingerprint(cfg.data), "text")  # what in-process code could call
    assert accesses()[-1]["yields"] == "text" and not accesses()[-1]["judge"]
    env.step("keep")
    run_dir = env.run_dir
    env.close()
    check = judge(run_dir, progress=False)["checks"]["hidden_split_untouched"]
    assert not check["passed"] and "hidden sentences generated" in check["reason"]


def test_judge_access_is_bound_to_a_finished_signed_run_and_its_data(make_config):
    """Issue 24 item 3: a live run cannot label its own hidden-split access as the judge's, nor can a forged record;
    a finished run's record marks as the judge's only an access to that run's data."""
    import json

    from sttrl.data.hidden import judge_access
    from sttrl.errors import HiddenSplitAccessError
    from sttrl.rundir import RUN_RECORD

    cfg = make_config("env.max_actions=1")
    env = SttEnv(cfg, progress=False)
    env.reset(seed=0)
    live = json.loads((env.run_dir / RUN_RECORD).read_text())
    fingerprint = data_fingerprint(cfg.data)
    with pytest.raises(HiddenSplitAccessError, match="no saved final model"), judge_access(live, fingerprint):
        pass
    forged = {**live, "final": {"sha256": "0" * 64, "block": 1}}  # the signature no longer matches
    with pytest.raises(HiddenSplitAccessError, match="changed after it was signed"), judge_access(forged, fingerprint):
        pass
    env.step("keep")
    run_dir = env.run_dir
    env.close()
    done = json.loads((run_dir / RUN_RECORD).read_text())
    with judge_access(done, fingerprint):
        load_hidden_split(cfg.data, progress=False)
    assert accesses()[-1]["judge"] and accesses()[-1]["judge_run"] == done["run_id"]
    other = DataConfig(**{**cfg.data.model_dump(), "seed": cfg.data.seed + 1})
    with judge_access(done, fingerprint):
        synthetic.plan_hidden(other, data_fingerprint(other))  # another data set: not this judge's access
    assert not accesses()[-1]["judge"]
