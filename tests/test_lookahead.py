"""The lookahead controller on the debug preset: every probe sample counts against the episode's budget,
the winner's probe is the start of its block (not trained again), and the log holds every probe."""

from __future__ import annotations

import json
import shutil

import pytest

from sttrl.control.lookahead import LOG, candidates, run_lookahead
from sttrl.errors import ConfigError
from sttrl.keys import key_fingerprint


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


def test_probes_of_one_decision_see_the_same_data(make_config, tmp_path):
    # common random numbers: every probe starts from the block checkpoint's cursor, weights and RNG state
    cfg = make_config(
        "env.budget_unit=samples",
        "env.samples_per_action=16",
        "env.max_actions=3",
        "lookahead.candidates=[keep,lr_up,batch_down]",
        "lookahead.probe_samples=8",
        "lookahead.charge_probes=false",
    )
    run_lookahead(cfg, tmp_path / "la")
    rows = [json.loads(x) for x in (tmp_path / "la" / LOG).read_text().splitlines()]
    for row in rows:
        probes = {p["action"]: p for p in row["probes"]}
        starts = {p["cursor"][0] for p in probes.values()}
        assert len(starts) == 1, starts  # the same data cursor for every probe of the decision
        assert all(p["cursor"][1] - p["cursor"][0] == p["samples"] == 8 for p in probes.values())
        # the same batch size sees the same first batch from the same weights: the same loss before any update
        assert probes["keep"]["losses"][0] == probes["lr_up"]["losses"][0]
    assert rows[1]["probes"][0]["cursor"][0] == rows[0]["probes"][0]["cursor"][0] + 16  # a block later


def test_probe_share_caps_what_losing_probes_spend(make_config, tmp_path):
    # budget 3 x 8 = 24; share 0.2 pays for one decision's losing probe (4 samples), not for two
    cfg = make_config(
        "env.budget_unit=samples",
        "env.samples_per_action=8",
        "env.max_actions=3",
        "lookahead.candidates=[keep,lr_down]",
        "lookahead.probe_samples=4",
        "lookahead.probe_share=0.2",
    )
    out = run_lookahead(cfg, tmp_path / "la")
    rows = [json.loads(x) for x in (tmp_path / "la" / LOG).read_text().splitlines()]
    assert [len(r["probes"]) for r in rows] == [2, 0]
    assert out["spent"]["probes"] == 4 <= 0.2 * out["spent"]["budget"]
    assert "share of the budget" in out["records"][1]["rationale"]


def test_a_registered_criterion_plugs_in_and_unknown_names_are_refused(make_config, tmp_path):
    from sttrl.control.lookahead import CRITERIA, register_criterion

    def fake_last_loss(rt, losses):  # a test criterion: the probe's last loss
        return float(losses[-1])

    register_criterion("fake_last_loss", fake_last_loss)
    try:
        cfg = make_config(
            "env.budget_unit=samples",
            "env.samples_per_action=8",
            "env.max_actions=1",
            "lookahead.candidates=[keep,lr_down]",
            "lookahead.probe_samples=4",
            "lookahead.criterion=fake_last_loss",
            "lookahead.charge_probes=false",
        )
        run_lookahead(cfg, tmp_path / "la")
        (row,) = [json.loads(x) for x in (tmp_path / "la" / LOG).read_text().splitlines()]
        assert row["criterion"] == "fake_last_loss"
        assert all(p["value"] == p["losses"][-1] for p in row["probes"])
        with pytest.raises(ConfigError, match="lookahead.criterion 'nope' is unknown; valid: train_loss, val_wer"):
            run_lookahead(make_config("lookahead.criterion=nope"), tmp_path / "la2")
    finally:
        CRITERIA.pop("fake_last_loss")


def test_tune_lookahead_quick_writes_a_tuned_file_the_benchmark_runs(data_cache, tmp_path, capsys):
    from bench import tune_lookahead
    from sttrl.config import load_config
    from sttrl.control.lookahead import configure, load_tuned

    out = tmp_path / "la.json"
    sets = ["--set", f"data.cache_dir={data_cache}", "--set", f"run.out_dir={tmp_path / 'runs'}"]
    ledger = tmp_path / "ledger.jsonl"
    assert tune_lookahead.main(["--quick", *sets, "--out", str(out), "--ledger", str(ledger)]) == 0
    printed = capsys.readouterr().out
    assert "2 points x 1 train instances = 2 lookahead episodes" in printed and "tuned: probes of 4 samples" in printed
    doc = load_tuned(out)
    assert doc["train_instances"] == [0] and doc["split"] == "dev" and len(doc["grid"]) == 2
    assert {p["criterion"] for p in doc["grid"]} == {"train_loss", "val_wer"}
    best = min(doc["grid"], key=lambda p: p["dev_wer_mean"])
    assert doc["settings"]["criterion"] == best["criterion"] and doc["settings"]["candidates"] == [
        "keep",
        "lr_down",
        "lr_up",
    ]
    assert doc["cost"]["episodes"] == 2 and doc["cost"]["samples"] <= 2 * 16 and doc["cost"]["seconds"] > 0
    runs = sorted((tmp_path / "la-runs").iterdir())
    assert all((r / "judge-dev.json").is_file() and not (r / "judge.json").exists() for r in runs)  # dev only
    assert not any((r / "checkpoints").exists() or (r / "final").exists() for r in runs)  # scored: weights dropped
    # again: every run is read back, nothing trains
    assert tune_lookahead.main(["--quick", *sets, "--out", str(out)]) == 0 and load_tuned(out)["grid"] == doc["grid"]
    # the ledger outlives the run directories: a new machine with only the ledger trains nothing either
    rows = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert len(rows) == 2 and {r["judge_key"] for r in rows} == {key_fingerprint()} == set(doc["judge_keys"])
    shutil.rmtree(tmp_path / "la-runs")
    assert tune_lookahead.main(["--quick", *sets, "--out", str(out), "--ledger", str(ledger)]) == 0
    assert load_tuned(out)["grid"] == doc["grid"] and not (tmp_path / "la-runs").exists()
    other = [*sets, "--set", "env.max_actions=3"]
    assert tune_lookahead.main(["--quick", *other, "--out", str(out), "--ledger", str(ledger)]) == 2
    assert "give this tuning another --ledger" in capsys.readouterr().err
    cfg = configure(load_config("debug", overrides=[f"bench.lookahead_file={out}"]))
    assert cfg.lookahead.probe_samples == 4 and cfg.lookahead.criterion == doc["settings"]["criterion"]
    assert tune_lookahead.main(["--quick", *sets, "--criteria", "nope", "--out", str(out)]) == 2
    assert "unknown ['nope']" in capsys.readouterr().err


def test_a_ledger_row_that_is_not_json_or_lacks_a_field_is_named_by_file_and_line(tmp_path):
    from bench.tuning import read_ledger

    path = tmp_path / "ledger.jsonl"
    row = {"run": "p4-lr-val_wer-s1-i0", "config_sha": "abc", "instance": 0, "settings": {}, "dev_wer": 0.5}
    path.write_text(json.dumps(row) + "\n\n{not json\n")
    with pytest.raises(ConfigError, match=r"ledger.jsonl: line 3 is not valid JSON"):
        read_ledger(path, "abc")
    path.write_text('{"run": "x", "instance": 0}\n')
    with pytest.raises(ConfigError, match=r"ledger.jsonl: row 1 needs .*; it lacks config_sha, settings, dev_wer"):
        read_ledger(path, "abc")
    assert read_ledger(tmp_path / "absent.jsonl", "abc") == {}


def test_tune_lookahead_halving_runs_the_better_half_on_each_later_instance(tmp_path):
    """The scheduling of successive halving, with the episode runner replaced by a table of dev WERs (the real
    runner is covered by the quick test above)."""
    from bench import tune_lookahead
    from sttrl.config import load_config

    points = tune_lookahead.grid_points([4, 8], ["lr"], ["train_loss", "val_wer"], [0.25])  # 4 points
    wer = {0: [0.5, 0.5, 0.9, 0.1], 1: [0.4, 0.4, 0.1, 0.1], 2: [0.3, 0.6, 0.2, 0.2], 3: [0.2, 0.7, 0.3, 0.3]}
    calls: list[tuple[int, int]] = []

    def run(cfg, instance, settings, run_dir, cache):
        j = next(k for k, p in enumerate(points) if run_dir.name.startswith(tune_lookahead.tag_of(p)))
        calls.append((j, instance))
        w = wer[j][instance]
        return {
            "instance": instance,
            "dev_wer": w,
            "probe_samples": 4,
            "samples": 16,
            "actions": ["keep"],
            "steps": 4,
            "seconds": 1.0,
            "settings": settings,
        }

    cfg = load_config("debug")
    doc = tune_lookahead.tune(cfg, points, [0, 1, 2, 3], tmp_path, on_line=lambda _: None, halve_after=2, run=run)
    # instances 0, 1: all four points (means 0.5, 0.4, 0.45, 0.45); instance 2: the better two (1 and, on the
    # tie at 0.45, the earlier point 2); instance 3: the better of those (1: 0.3 against 2: 0.367)
    assert calls == [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (1, 3)]
    assert [p["instances_run"] for p in doc["grid"]] == [2, 4, 3, 2]
    assert doc["settings"]["probe_samples"] == 4 and doc["settings"]["criterion"] == "val_wer"  # point 1
    assert doc["dev_wer"] == pytest.approx(0.25) and doc["halve_after"] == 2 and doc["cost"]["episodes"] == 11
    assert tune_lookahead.episodes_planned(4, 4, 2) == 11 and tune_lookahead.episodes_planned(16, 4, 2) == 44
    assert tune_lookahead.episodes_planned(16, 4, 0) == 64
