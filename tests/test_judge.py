"""The judge cannot be fooled by editing the run directory (issue 10, items 9-12): signed run records,
the graph state's hashes, recomputed rewards, the hidden split's key and access log; any failed check
exits non-zero and leaves the run unscored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sttrl.config import load_config
from sttrl.env.gym import SttEnv
from sttrl.io import sha256_file
from sttrl.judge.integrity import expected_from_state
from sttrl.judge.scoring import judge, main
from sttrl.keys import sign_record
from sttrl.rundir import RUN_RECORD, TRAJECTORY


@pytest.fixture(scope="module")
def finished(data_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished two-step debug episode (Gymnasium path: no checkpointer), judged by nobody yet."""
    out = tmp_path_factory.mktemp("judge-runs")
    env = SttEnv(
        load_config("debug", overrides=[f"data.cache_dir={data_cache}", f"run.out_dir={out}", "env.max_actions=2"]),
        progress=False,
    )
    env.reset(seed=0)
    shutil.copyfile(env.run_dir / "checkpoints" / "block-0000" / "model.safetensors", out / "initial.safetensors")
    env.step("keep")
    env.step("keep")
    run_dir = env.run_dir
    env.close()
    return run_dir


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    """A fresh copy of the finished run to tamper with."""
    return Path(shutil.copytree(finished, tmp_path / finished.name))


def _record(run: Path) -> dict:
    return json.loads((run / RUN_RECORD).read_text())


def _write_record(run: Path, record: dict) -> None:
    (run / RUN_RECORD).write_text(json.dumps(record, indent=2))


def _failed(report: dict) -> list[str]:
    return [name for name, c in report["checks"].items() if not c["passed"]]


def _state_like(run: Path) -> dict:
    """What the LangGraph state holds for this run: final info, block checkpoint hashes, step records."""
    record = _record(run)
    ckpts = [{"block": 0, "sha256": record["initial_weights_sha256"]}]
    records = [json.loads(line) for line in (run / TRAJECTORY).read_text().splitlines()]
    return {"final": dict(record["final"]), "checkpoints": ckpts, "records": records}


def test_untampered_run_passes_every_check_and_exits_zero(run):
    report = judge(run, progress=False)
    assert _failed(report) == [] and report["scored"] and report["wer"] is not None
    assert set(report["checks"]) >= {
        "record_authentic",
        "checkpoint_present",
        "hash_matches_record",
        "weights_changed",
        "splits_disjoint",
        "hidden_split_untouched",
        "trajectory_consistent",
    }
    assert judge(run, progress=False, write=False, expected=expected_from_state(_state_like(run)))["scored"]
    assert main([str(run), "--quiet"]) == 0


def test_flipped_weight_byte_with_its_new_hash_in_run_json_is_caught(run):
    weights = run / "final" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    record = _record(run)
    record["final"]["sha256"] = record["final"]["files"]["model.safetensors"] = sha256_file(weights)
    _write_record(run, record)
    report = judge(run, progress=False)
    assert "record_authentic" in _failed(report) and not report["scored"] and report["score"] == 0.0
    assert main([str(run), "--quiet"]) == 1


def test_initial_weights_copied_over_final_with_both_hashes_edited_is_caught(run, finished):
    initial = finished.parent / "initial.safetensors"  # block 0's weights (its checkpoint is pruned by then)
    shutil.copyfile(initial, run / "final" / "model.safetensors")
    record = _record(run)
    record["final"]["sha256"] = record["final"]["files"]["model.safetensors"] = sha256_file(initial)
    record["initial_weights_sha256"] = "0" * 64
    _write_record(run, record)
    assert "record_authentic" in _failed(judge(run, progress=False))
    # the graph state's hashes (a record the run directory cannot rewrite) catch it too
    expected = expected_from_state(_state_like(finished))
    report = judge(run, progress=False, expected=expected)
    assert {"record_authentic", "hash_matches_record", "weights_changed"} <= set(_failed(report))


def test_final_config_is_covered_by_the_hash(run):
    cfg = run / "final" / "config.json"
    cfg.write_text(cfg.read_text().replace('"d_model": 64', '"d_model": 64, "tampered": true'))
    report = judge(run, progress=False)
    assert (
        "hash_matches_record" in _failed(report) and "config.json" in report["checks"]["hash_matches_record"]["reason"]
    )
    assert main([str(run), "--quiet"]) == 1


def test_record_signed_with_another_key_is_not_authentic(run, monkeypatch):
    monkeypatch.setenv("STTRL_JUDGE_KEY", "another-machine-key-0123456789")
    report = judge(run, progress=False, write=False)
    assert "record_authentic" in _failed(report) and "signed with key" in report["checks"]["record_authentic"]["reason"]
    monkeypatch.setenv("STTRL_JUDGE_KEY", "short")
    from sttrl.errors import ConfigError

    with pytest.raises(ConfigError, match="STTRL_JUDGE_KEY"):
        judge(run, progress=False, write=False)


def test_edited_reward_in_the_trajectory_fails_and_exits_non_zero(run, finished):
    path = run / TRAJECTORY
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[0]["reward"] = 99.0
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = judge(run, progress=False)
    assert "trajectory_consistent" in _failed(report) and "99.0" in report["checks"]["trajectory_consistent"]["reason"]
    assert not report["scored"] and main([str(run), "--quiet"]) == 1


def test_a_trajectory_cut_short_fails_against_the_signed_record(run):
    """Issue 24 item 3: deleting the last line of trajectory.jsonl leaves a self-consistent file, but the signed run
    record's final model is after block 2: the standalone judge fails ``trajectory_consistent`` and exits 1."""
    path = run / TRAJECTORY
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    report = judge(run, progress=False, write=False)
    reason = report["checks"]["trajectory_consistent"]["reason"]
    assert _failed(report) == ["trajectory_consistent"] and "signed run record" in reason and "block 2" in reason
    assert main([str(run), "--quiet"]) == 1


def test_the_judge_report_holds_no_hidden_text(run):
    """Issue 24 item 3: judge.json stays in the run directory, where a later run could read it: no transcripts."""
    report = judge(run, progress=False)
    assert report["scored"] and "examples" not in report
    assert "examples" not in json.loads((run / "judge.json").read_text())


def test_missing_trajectory_fails_when_the_graph_state_has_steps(run):
    (run / TRAJECTORY).unlink()
    report = judge(run, progress=False, write=False, expected=expected_from_state(_state_like_without_file(run)))
    assert (
        "trajectory_consistent" in _failed(report) and "missing" in report["checks"]["trajectory_consistent"]["reason"]
    )


def _state_like_without_file(run: Path) -> dict:
    record = _record(run)
    return {"final": dict(record["final"]), "checkpoints": [], "records": [{"step": 1}, {"step": 2}]}


def test_trajectory_is_compared_with_the_graph_state_records(run):
    state = _state_like(run)
    state["records"][1]["status"] = "oom"  # the state says otherwise than the file
    report = judge(run, progress=False, write=False, expected=expected_from_state(state))
    assert (
        "trajectory_consistent" in _failed(report)
        and "graph state" in report["checks"]["trajectory_consistent"]["reason"]
    )


def test_signature_covers_the_integrity_fields():
    record = {
        "run_id": "r",
        "created": 1.0,
        "config": {},
        "initial_weights_sha256": "a",
        "data_manifest": "m",
        "final": {"sha256": "b"},
    }
    sig = sign_record(record)
    assert sig["value"] != sign_record({**record, "final": {"sha256": "c"}})["value"]
    assert sig["value"] == sign_record({**record, "opened_splits": ["train"]})["value"]
