"""Issue 11: the hidden domain split into dev (every tuning decision) and test (reported results only)."""

from __future__ import annotations

import json

import pytest

from sttrl.data import build_speech_data, load_hidden_split
from sttrl.data.dataset import data_fingerprint
from sttrl.data.hidden import judge_access
from sttrl.rundir import JUDGE_REPORT, RUN_RECORD


def test_dev_and_test_are_disjoint_from_each_other_and_from_training(make_config):
    cfg = make_config("data.max_hidden_utterances=32", "data.hidden_sentences=48", "data.hidden_dev_fraction=0.5")
    data = build_speech_data(cfg.data, progress=False)
    # no run is live on this data, so these logged (non-judge) accesses fail nothing
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
        load_hidden_split(cfg.data, progress=False, split="train")


def test_judge_scores_dev_and_test_separately(make_config):
    from sttrl.env.gym import SttEnv
    from sttrl.judge.scoring import judge, main

    env = SttEnv(
        make_config(
            "env.max_actions=1",
            "data.max_hidden_utterances=32",
            "data.hidden_sentences=48",
            "data.hidden_dev_fraction=0.5",
        )
    )
    env.reset(seed=0)
    env.step("keep")
    env.close()
    test = judge(env.run_dir, progress=False)
    dev = judge(env.run_dir, progress=False, split="dev")
    assert test["split"] == "test" and dev["split"] == "dev" and test["scored"] and dev["scored"]
    record = json.loads((env.run_dir / RUN_RECORD).read_text())  # the judge's access is bound to a finished run
    with judge_access(record, data_fingerprint(env.cfg.data)):
        every = load_hidden_split(env.cfg.data, progress=False, split="all")
    assert test["n_utterances"] + dev["n_utterances"] == len(every) and test["wer"] is not None
    assert json.loads((env.run_dir / JUDGE_REPORT).read_text())["split"] == "test"
    assert json.loads((env.run_dir / "judge-dev.json").read_text())["split"] == "dev"
    assert main([str(env.run_dir), "--split", "dev", "--quiet"]) == 0


def test_headroom_script_runs_on_the_debug_preset(data_cache, tmp_path):
    """benchmarks/headroom.py end to end on 1 test and 1 train instance with a 2-point grid (debug preset)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "headroom"
    proc = subprocess.run(
        [
            sys.executable,
            str(repo / "benchmarks" / "headroom.py"),
            "--preset",
            "debug",
            "--test-instances",
            "1",
            "--train-instances",
            "1",
            "--grid-lr",
            "1e-3,3e-3",
            "--out",
            str(out),
            "--set",
            f"data.cache_dir={data_cache}",
            "--set",
            f"run.out_dir={tmp_path / 'runs'}",
            "--set",
            "env.max_actions=1",
            "--set",
            "env.budget_unit=samples",
            "--set",
            "env.samples_per_action=8",
            "--set",
            "env.instances.lr=[1e-4, 1e-2]",
            "--set",
            "env.instances.batch_sizes=[2, 4]",
            "--set",
            "data.max_hidden_utterances=32",
            "--set",
            "data.hidden_sentences=48",
            "--set",
            "data.hidden_dev_fraction=0.5",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "headroom.json").read_text())
    s = doc["summary"]
    assert s["mean"]["oracle"] <= s["mean"]["tuned"]  # the tuned setting is one of the grid's
    assert {r["kind"] for r in doc["rows"]} == {"train-grid", "start", "grid", "rule"}
    assert s["per_instance"][0]["oracle"] == min(
        r["dev_wer"] for r in doc["rows"] if r["kind"] == "grid" and r["instance"] == 1000
    )
    assert "room to repair a start" in proc.stdout
    assert not list(out.glob("*/judge.json"))  # only the dev split was scored
