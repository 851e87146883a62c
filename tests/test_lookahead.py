"""The lookahead controller on the debug preset: every probe sample counts against the episode's budget,
the winner's probe is the start of its block (not trained again), and the log holds every probe."""

from __future__ import annotations

import json

import pytest

from sttrl.control.lookahead import LOG, candidates, run_lookahead
from sttrl.errors import ConfigError


def test_lookahead_budget_arithmetic(make_config, tmp_path):
    # 3 decisions x 16 samples = 48; a decision with 3 probes of 8 samples costs 16 + 2 x 8 = 32
    cfg = make_config(
        "env.budget_unit=samples",
        "env.samples_per_action=16",
        "env.max_actions=3",
        "lookahead.candidates=[keep,lr_up,batch_down]",
        "lookahead.probe_samples=8",
    )
    out = run_lookahead(cfg, tmp_path / "la")
    spent, rows = out["spent"], [json.loads(x) for x in (tmp_path / "la" / LOG).read_text().splitlines()]
    assert spent["budget"] == 48
    assert spent["total"] <= spent["budget"] and spent["total"] == spent["blocks"] + spent["probes"]
    probed = [r for r in rows if r["probes"]]
    assert len(probed) == 1 and len(probed[0]["probes"]) == 3  # 32 spent; 16 left pay for a plain block only
    assert out["decisions"] == 2 and rows[1]["probes"] == [] and rows[1]["chosen"] == "keep"
    p = probed[0]
    winner = next(x for x in p["probes"] if x["action"] == p["chosen"])
    assert p["chosen"] == min(p["probes"], key=lambda x: x["value"])["action"]
    assert spent["probes"] == sum(x["samples"] for x in p["probes"]) - winner["samples"]
    # the block continued from the winner's probe: its first losses are the probe's, its new samples the rest
    rec = out["records"][0]
    assert rec["train"]["losses"][: winner["steps"]] == winner["losses"]
    assert rec["train"]["samples"] + winner["samples"] == p["block_samples"]
    assert spent["blocks"] == sum(r["block_samples"] for r in rows)
    assert not (tmp_path / "la" / "probes" / "block-0001").exists()


def test_uncharged_probes_label_every_decision(make_config, tmp_path):
    # teacher mode: the blocks spend exactly the budget, every decision is probed, the probes are extra
    cfg = make_config(
        "env.budget_unit=samples",
        "env.samples_per_action=16",
        "env.max_actions=3",
        "lookahead.candidates=[keep,lr_up]",
        "lookahead.probe_samples=8",
        "lookahead.charge_probes=false",
    )
    out = run_lookahead(cfg, tmp_path / "la")
    rows = [json.loads(x) for x in (tmp_path / "la" / LOG).read_text().splitlines()]
    assert out["decisions"] == 3 and all(len(r["probes"]) == 2 for r in rows)
    assert out["spent"]["blocks"] == out["spent"]["budget"] == 48
    assert out["spent"]["probes"] == 3 * 8 and out["spent"]["total"] == 48 + 24


def test_lookahead_candidates_must_be_enabled(make_config):
    with pytest.raises(ConfigError, match="lookahead.candidates"):
        candidates(make_config("env.actions=[keep,stop]", "lookahead.candidates=[lr_up]"))


def test_lookahead_in_the_benchmark_reports_its_probe_samples(make_config, tmp_path):
    import bench

    cfg = make_config(
        "env.budget_unit=samples",
        "env.samples_per_action=8",
        "env.max_actions=3",
        "run.threads=1",
        "lookahead.candidates=[keep,lr_down]",
        "lookahead.probe_samples=4",
    )
    doc = bench.run_bench(cfg, ["static", "lookahead"], [0], tmp_path / "bench", quiet=True, reference="static")
    runs = {r["controller"]: r for r in doc["runs"]}
    la = runs["lookahead"]
    assert la["status"] == "finished" and la["judge_passed_all_checks"] is True
    assert la["sample_budget"] == 24 and la["samples_spent"] <= 24 and la["probe_samples"] > 0
    assert la["probes_per_decision"][0] == 2 and la["decisions"] < 3  # probes bought fewer decisions
    assert runs["static"]["decisions"] == 3


def test_lookahead_val_wer_criterion_scores_probes_by_decoding(make_config, tmp_path):
    cfg = make_config(
        "env.budget_unit=samples",
        "env.samples_per_action=8",
        "env.max_actions=2",
        "lookahead.candidates=[keep,lr_down]",
        "lookahead.probe_samples=4",
        "lookahead.criterion=val_wer",
        "lookahead.probe_eval_utterances=3",
    )
    run_lookahead(cfg, tmp_path / "la")
    row = json.loads((tmp_path / "la" / LOG).read_text().splitlines()[0])
    assert row["criterion"] == "val_wer" and [p["action"] for p in row["probes"]] == ["keep", "lr_down"]
    assert all(0.0 <= p["value"] < 10 for p in row["probes"])
