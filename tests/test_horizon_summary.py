"""benchmarks/horizon.py's summary by hand: per budget, the tuned setting is chosen on the train instances and
both margins come from the test instances' start, oracle and tuned runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from horizon import budget_overrides, summarize

A, B = {"lr": 5e-5}, {"lr": 1.5e-4}


def row(n, i, kind, setting, wer):
    return {"samples": n, "instance": i, "kind": kind, "setting": setting, "dev_wer": wer}


def test_summary_by_hand():
    rows = [
        row(256, 0, "train-grid", A, 0.50),
        row(256, 0, "train-grid", B, 0.40),  # B tuned at 256
        row(256, 9, "start", None, 0.70),
        row(256, 9, "grid", A, 0.45),
        row(256, 9, "grid", B, 0.55),
        row(512, 0, "train-grid", A, 0.30),
    ]  # 512 is missing runs
    out = summarize(rows, [256, 512], [A, B], tests=[9], trains=[0])
    s = out[0]
    assert s["complete"] and s["tuned_setting"] == B
    assert s["mean"] == {"start": 0.70, "oracle": 0.45, "tuned": 0.55}
    assert s["repair_room"] == pytest.approx(0.25) and s["adapt_room"] == pytest.approx(0.10)
    assert out[1] == {"samples": 512, "complete": False}


def test_budget_must_divide_into_blocks():
    assert budget_overrides(512, 8) == ["env.budget_unit=samples", "env.samples_per_action=64"]
    with pytest.raises(SystemExit, match="not a multiple"):
        budget_overrides(500, 8)
