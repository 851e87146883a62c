"""Replicates with common random numbers, the judge's per-utterance errors, the MDE in bench.json, paths resolved at
the entry point, and the decisive suite's plan (debug preset, real episodes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import bench
from bench.replicates import data_seed, plan, seeds_table
from bench.suites import DEBUG_INSTANCES
from sttrl.config import absolute_paths, load_config
from sttrl.rundir import CONFIG_FILE, JUDGE_REPORT, JUDGE_UTTERANCES


def test_data_seeds_are_shared_by_slot_and_replicate_zero_keeps_the_instance_seed():
    assert data_seed(1000, 0) == 1000 and data_seed(1000, 1) == data_seed(1000, 1) != data_seed(1001, 1)
    assert len({data_seed(1000, r) for r in range(50)}) == 50 and all(0 <= data_seed(7, r) < 2**31 for r in range(9))
    runs = plan(["static", "rule"], [1000, 1001], 2)
    assert [(c, s.seed, s.replicate) for c, s in runs[:3]] == [
        ("static", 1000, 0),
        ("rule", 1000, 0),
        ("static", 1001, 0),
    ]
    assert runs[-1][1].name("rule") == "bench-rule-s1001-r1" and runs[0][1].name("static") == "bench-static-s1000"
    assert seeds_table([1000], 2) == {"1000": [1000, data_seed(1000, 1)]}
    with pytest.raises(ValueError):
        data_seed(1000, -1)


def test_relative_paths_are_resolved_once_at_the_entry_point(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        "debug",
        overrides=[
            "bench.schedule_file=tuned/schedule.json",
            "bench.contextual_file=tuned/contextual.json",
            "bench.lookahead_file=tuned/lookahead.json",
            "cache.dir=blocks",
            "data.hub.local_dir=hub",
        ],
    )
    assert str(cfg.data.cache_dir) == ".cache/sttrl" and str(cfg.run.out_dir) == "runs"  # the defaults
    fixed = absolute_paths(cfg)
    assert (
        fixed.data.cache_dir == tmp_path.resolve() / ".cache/sttrl" and fixed.run.out_dir == tmp_path.resolve() / "runs"
    )
    here = tmp_path.resolve()
    assert fixed.bench.schedule_file == here / "tuned/schedule.json" and fixed.data.hub.local_dir == here / "hub"
    assert fixed.bench.contextual_file == here / "tuned/contextual.json" and fixed.cache.dir == here / "blocks"
    assert fixed.bench.lookahead_file == here / "tuned/lookahead.json"
    assert absolute_paths(fixed) == fixed  # absolute paths stay as they are
    b = bench.Bench(cfg, ["static"], [0], "b", quiet=True)
    assert b.cfg.data.cache_dir.is_absolute() and b.out == tmp_path.resolve() / "b"


def test_replicates_pair_per_instance_and_replicate_with_shared_data_seeds(make_config, tmp_path):
    cfg = make_config(*DEBUG_INSTANCES)
    out = tmp_path / "b"
    one = bench.run_bench(cfg, ["static", "schedule"], [1000], out, quiet=True)  # R = 1 first
    assert [r["thread_id"] for r in one["runs"]] == ["bench-static-s1000", "bench-schedule-s1000"]
    doc = bench.run_bench(
        make_config(*DEBUG_INSTANCES, "bench.replicates=2"), ["static", "schedule"], [1000], out, quiet=True
    )
    runs = {(r["controller"], r["replicate"]): r for r in doc["runs"]}
    assert [r["thread_id"] for r in doc["runs"]] == [
        "bench-static-s1000",
        "bench-schedule-s1000",
        "bench-static-s1000-r1",
        "bench-schedule-s1000-r1",
    ]
    assert runs[("static", 0)]["resumed"] == "skipped (finished earlier)"  # the directory grew by one replicate
    assert doc["replicates"] == 2 and doc["data_seeds"] == {"1000": [1000, data_seed(1000, 1)]}
    for c in ("static", "schedule"):  # common random numbers: both controllers of a replicate train on its seed
        for r in (0, 1):
            run_cfg = yaml.safe_load((Path(runs[(c, r)]["run_dir"]) / CONFIG_FILE).read_text())
            assert run_cfg["run"]["seed"] == runs[(c, r)]["data_seed"] == data_seed(1000, r)
            assert run_cfg["env"]["instance"]["seed"] == 1000  # the same instance
    assert runs[("static", 0)]["final_sha256"] != runs[("static", 1)]["final_sha256"]  # another data order
    paired = doc["paired"]["controllers"]["static"]
    assert (paired["n_pairs"], paired["n_replicate_pairs"]) == (1, 2)
    mean_diff = sum(runs[("static", r)]["hidden_wer"] - runs[("schedule", r)]["hidden_wer"] for r in (0, 1)) / 2
    assert paired["diff_mean"] == pytest.approx(mean_diff) and "min_detectable" in paired
    assert "| MDE |" in doc["table"]
    fixed = paired["fixed_set"]  # with replicates: the reading on this instance only, chaos the only noise
    assert (fixed["n_instances"], fixed["df"]) == (1, 1) and fixed["diff_mean"] == pytest.approx(mean_diff)
    assert "On these instances only" in doc["table"]
    # the judge's per-utterance errors sit next to judge.json and add up to its WER
    run_dir = Path(runs[("static", 1)]["run_dir"])
    report = json.loads((run_dir / JUDGE_REPORT).read_text())
    utts = json.loads((run_dir / JUDGE_UTTERANCES).read_text())["utterances"]
    assert len(utts) == report["n_utterances"] and {"id", "words", "word_errors", "chars", "char_errors"} <= set(
        utts[0]
    )
    assert sum(u["word_errors"] for u in utts) / sum(u["words"] for u in utts) == pytest.approx(report["wer"])
    assert sum(u["char_errors"] for u in utts) / sum(u["chars"] for u in utts) == pytest.approx(report["cer"])


def test_decisive_suite_prints_its_estimate_and_mde_first(make_config, capsys):
    cfg = make_config()
    common = ["--set", f"data.cache_dir={cfg.data.cache_dir}", "--set", f"run.out_dir={cfg.run.out_dir}"]
    assert bench.main(["--suite", "decisive", "--dry-run", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("learned: skipped (no --learned-model DIR")  # a suite leaves it out without one
    first = lines[1]
    assert first.startswith("suite decisive: preset bench-cpu, ") and "161 test instances" in first
    assert "MDE 0.030 hidden WER at n=161" in first  # sized from the noise budget
    for part in ("schedule", "static", "rule", "tpe", "sha", "lookahead", "estimated time", "MDE", "Holm"):
        assert part in first, part
    # the reference is the committed tuned schedule, an absolute path wherever the suite runs from
    results = Path(bench.__file__).resolve().parents[1] / "benchmarks" / "results"
    assert lines[2] == (
        f"tuned files: schedule_file: {results / 'schedule-tuned-bench-cpu-i8.json'}; contextual_file: "
        f"{results / 'contextual-bench-cpu-i8.json'}; lookahead_file: {results / 'lookahead-tuned-bench-cpu-i4.json'}"
    )
    assert bench.main(["--suite", "decisive", "--seeds", "40", "--replicates", "2", "--dry-run", *common]) == 0
    out = capsys.readouterr().out
    assert "40 test instances x 2 replicates" in out and "seeds [1000, 1001," in out and "1039]" in out
    assert "on these 40 instances only (the fixed-set reading" in out
