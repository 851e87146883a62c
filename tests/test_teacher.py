"""Teacher trajectories: train instances only, one row per probed state, a versioned schema that
``datasets`` loads."""

from __future__ import annotations

import json

import datasets

from sttrl.control.teacher import SCHEMA, main, rows_from_run_dir


def test_teacher_file_schema_loads_with_datasets(data_cache, tmp_path, capsys):
    out = tmp_path / "teacher.jsonl"
    common = [
        "--preset",
        "debug",
        "--set",
        f"data.cache_dir={data_cache}",
        "--set",
        f"run.out_dir={tmp_path / 'runs'}",
        "--set",
        "env.instances.lr=[1e-4, 1e-2]",
        "--set",
        "env.budget_unit=samples",
        "--set",
        "env.samples_per_action=8",
        "--set",
        "env.max_actions=3",
        "--set",
        "lookahead.candidates=[keep,lr_up]",
        "--set",
        "lookahead.probe_samples=4",
    ]
    assert main([*common, "--seeds", "1000", "--out", str(out)]) == 2  # a test instance is refused
    assert "train instances only" in capsys.readouterr().out and not out.exists()
    assert main([*common, "--instances", "1", "--out", str(out)]) == 0
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert len(ds) >= 1 and set(ds.column_names) >= {
        "schema",
        "instance_seed",
        "observation",
        "probes",
        "chosen",
        "chosen_value",
        "criterion",
        "val_wer_after",
    }
    row = ds[0]
    assert row["schema"] == SCHEMA and row["instance_seed"] == 0 and row["step"] == 1
    assert [p["action"] for p in row["probes"]] == ["keep", "lr_up"]
    best = min((p for p in row["probes"] if p["value"] is not None), key=lambda p: p["value"])
    assert row["chosen"] == best["action"] and row["chosen_value"] == best["value"]
    assert all(p["samples"] >= 4 and p["losses"] for p in row["probes"])

    # the same rows rebuilt from the run directory (runs made elsewhere: python -m sttrl.teacher --from-runs)
    again = rows_from_run_dir(tmp_path / "runs" / "teacher-s0")
    assert again == [json.loads(x) for x in out.read_text().splitlines()]
    out2 = tmp_path / "again.jsonl"
    assert main(["--from-runs", str(tmp_path / "runs" / "teacher-s0"), "--out", str(out2)]) == 0
    assert out2.read_text() == out.read_text()
    assert main(["--from-runs", str(tmp_path / "nope"), "--out", str(out2)]) == 2
