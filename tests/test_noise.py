"""benchmarks/noise.py and benchmarks/val_loss.py: the MDE (exact noncentral t), the variance decomposition on data
with known components, the regime table, and both scripts end to end on the debug preset (--quick), resumable."""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

import bench.stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import noise_stats  # noqa: E402 - benchmarks/ is not a package: on the path just above


def test_mde_is_exact_noncentral_t():
    # a paired t-test with n=10 at alpha 0.05 has 80 % power at a standardized effect of ~1 (power 0.803 at 1.0)
    assert noise_stats.mde(1.0, 10, 0.05) == pytest.approx(0.996, abs=0.002)
    assert noise_stats.power_of(noise_stats.mde(0.3, 7, 0.01), 0.3, 7, 0.01) == pytest.approx(0.8, abs=1e-6)
    assert noise_stats.mde(1.0, 1000, 0.05) == pytest.approx(noise_stats.normal_mde(1.0, 1000, 0.05), rel=0.002)
    assert noise_stats.mde(0.0, 5, 0.05) == 0.0 and noise_stats.mde(1.0, 1, 0.05) is None
    # the figures: paired SD 0.042-0.100 needs ~18-90 instances for 0.03 at alpha 0.05 (no correction)
    assert (noise_stats.pairs_needed(0.042, 0.03, 0.05), noise_stats.pairs_needed(0.1, 0.03, 0.05)) == (18, 90)
    n = noise_stats.pairs_needed(0.05, 0.03, 0.05 / 6)
    assert noise_stats.mde(0.05, n, 0.05 / 6) <= 0.03 < noise_stats.mde(0.05, n - 1, 0.05 / 6)


def _synthetic(instances: int, seeds: int, sd_inst: float, sd_chaos: float, utts: int = 300, rng_seed: int = 0):
    """Rows of a two-controller design with known components: per-utterance errors are binomial around an error
    rate that moves with the instance (A's effect), the seed (chaos) and nothing else."""
    rng = np.random.default_rng(rng_seed)
    words = rng.integers(5, 15, size=utts)
    hard = rng.uniform(-0.1, 0.1, size=utts)  # utterance difficulty, shared by every run
    runs = {}
    for i in range(instances):
        effect = rng.normal(0.0, sd_inst)
        for s in range(seeds):
            rows = []
            for shift in (effect + rng.normal(0.0, sd_chaos), rng.normal(0.0, sd_chaos)):
                errors = rng.binomial(words, np.clip(0.4 + hard + shift, 0.01, 0.99))
                rows.append({"dev_wer": errors.sum() / words.sum(), "errors": errors.tolist(), "words": words.tolist()})
            runs[(i, s)] = tuple(rows)
    return runs


def test_decomposition_recovers_known_components():
    # seeded: the estimates' own sampling error with 300 instances is ~15-20 % (measured over generator seeds)
    comp = noise_stats.decompose(_synthetic(300, 2, sd_inst=0.04, sd_chaos=0.02), boot=200)
    assert comp["var_instances"] == pytest.approx(0.04**2, rel=0.4)
    # chaos moves each controller's rate by SD 0.02: the difference's chaos variance is 2 x 0.02^2
    assert comp["var_chaos"] == pytest.approx(2 * 0.02**2, rel=0.4)
    # the judge: a binomial difference over ~3000 words of rate ~0.4, ~2 x 0.24 / 3000
    words = sum(next(iter(_synthetic(1, 1, 0, 0).values()))[0]["words"])
    assert comp["var_judge"] == pytest.approx(2 * 0.4 * 0.6 / words, rel=0.3)
    # the fixed-set reading's noise: seed-to-seed variance with nothing subtracted (here chaos plus the binomial draw)
    assert comp["var_within_observed"] == pytest.approx(comp["var_chaos"] + comp["var_judge"], rel=0.3)
    quiet = noise_stats.decompose(_synthetic(100, 2, sd_inst=0.0, sd_chaos=0.0), boot=200)
    assert quiet["var_instances"] < 0.2 * comp["var_instances"] and quiet["var_chaos"] < 0.2 * comp["var_chaos"]
    with pytest.raises(ValueError, match="same utterances"):
        noise_stats.decompose({(0, 0): ({"dev_wer": 0.5, "errors": [1], "words": [2]},
                                        {"dev_wer": 0.5, "errors": [1, 1], "words": [2, 2]})})  # fmt: skip


def test_instances_scored_on_different_utterance_sets_decompose_per_set():
    """Rows from two machines (two judge keys: two hidden dev sets) mix across instances, never within one."""
    one = _synthetic(6, 2, sd_inst=0.04, sd_chaos=0.02)
    base = noise_stats.decompose(one, boot=200)
    other = {(i + 6, s): tuple({**r, "errors": r["errors"][:-5], "words": r["words"][:-5]} for r in pair)
             for (i, s), pair in _synthetic(6, 2, sd_inst=0.04, sd_chaos=0.02, rng_seed=5).items()}  # fmt: skip
    mixed = noise_stats.decompose({**one, **other}, boot=200)
    assert mixed["instances"] == 12 and mixed["utterance_sets"] == 2 and base["utterance_sets"] == 1
    assert mixed["var_judge"] == pytest.approx(base["var_judge"], rel=0.3)
    again = noise_stats.decompose(one, boot=200)  # one set: the resamples and every figure as before
    assert again == base


def test_regimes_are_priced_and_the_cheapest_is_chosen():
    import noise

    rows = []
    for (h, v), cpu, sd_inst in (((512, 64), 250.0, 0.04), ((1024, 64), 400.0, 0.02)):
        for (i, s), pair in _synthetic(8, 2, sd_inst=sd_inst, sd_chaos=0.01, rng_seed=h).items():
            for c, row in zip(("rule", "schedule"), pair, strict=True):
                rows.append({**row, "horizon": h, "val_size": v, "instance": i, "seed": s, "controller": c,
                             "n_dev": 300, "n_test": 600, "suite_cpu_s": cpu})  # fmt: skip
    args = Namespace(pair="rule,schedule", boot=200, contestants=6, replicates="1,2", alpha=0.05, power=0.8,
                     target=0.03, budget_cpu_hours=10.0)  # fmt: skip
    regimes = noise.analyse(args, rows)
    assert [(g["horizon"], g["val_size"]) for g in regimes] == [(512, 64), (1024, 64)]
    bench_cpu = regimes[0]
    assert bench_cpu["gpu_reference_regime"] == [512, 64]
    assert bench_cpu["episode_gpu_min"] == pytest.approx(60 / noise.GPU_EPISODES_PER_HOUR)  # the measured H200 rate
    r1, r2 = bench_cpu["suite"]
    assert r2["sd"] < r1["sd"] and r1["cpu_hours_for_target"] == pytest.approx(
        r1["instances_for_target"] * 7 * 250 / 3600
    )
    assert r1["fixed_set_mde_in_budget"] is None  # the fixed-set reading needs replicates
    within = bench_cpu["components"]["var_within_observed"] ** 0.5
    assert r2["fixed_set_mde_in_budget"] == pytest.approx(
        bench.stats.min_detectable_fixed(within, r2["instances_in_budget"], 2, comparisons=6)
    )
    md, best = noise.render(regimes, 0.03)
    costs = [s["cpu_hours_for_target"] for g in regimes for s in g["suite"]]
    assert best["cpu_hours_for_target"] == min(costs) and md.count("\n") == 1 + len(costs)


def _script(name: str, tmp_path: Path, data_cache: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--quick", "--work", str(tmp_path / name),
         "--out", str(tmp_path / f"{name}.json"), "--set", f"data.cache_dir={data_cache}",
         "--set", f"run.out_dir={tmp_path / 'runs'}", *extra],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip


def test_noise_script_quick_is_resumable(data_cache, tmp_path):
    proc = _script("noise", tmp_path, data_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "noise.json").read_text())
    (regime,) = doc["regimes"]
    comp = regime["components"]
    assert comp["instances"] == 2 and comp["pairs"] == 4 and comp["utterances"] > 0
    assert all(comp[k] is not None and comp[k] >= 0 for k in ("var_judge", "var_chaos", "var_instances"))
    rows = doc["rows"]
    assert len(rows) == 8 and {r["controller"] for r in rows} == {"rule", "static"}
    by = {(r["instance"], r["controller"], r["seed"]): r for r in rows}
    for (i, c, s), r in by.items():  # the second seed replays the first seed's decisions
        assert r["replayed"] == (s == 1) and r["actions"] == by[(i, c, 0)]["actions"]
        assert r["suite_cpu_s"] > r["episode_cpu_s"] > 0 and r["n_dev"] == len(r["errors"])
    assert all(not (p / "checkpoints").exists() for p in (tmp_path / "noise" / "runs").iterdir())
    again = _script("noise", tmp_path, data_cache)
    assert again.returncode == 0 and "(0 to do)" in again.stdout, again.stdout[-2000:]


def test_val_loss_script_quick(data_cache, tmp_path):
    proc = _script("val_loss", tmp_path, data_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "val_loss.json").read_text())
    assert len(doc["rows"]) == 4 and all(r["val_loss"] > 0 and r["loss_s"][1] > 0 for r in doc["rows"])
    timing = doc["summary"]["timing"]["median"]
    assert timing["wer"]["seconds"] > 0 and timing["loss"]["seconds"] > 0
    assert set(doc["summary"]["mean"]["dev_wer"]) == {"val_loss", "val_wer", "train_loss"}


def test_a_replay_whose_deciding_run_failed_is_skipped_not_a_crash(tmp_path, capsys):
    """A first-seed run that failed leaves no row: its replays wait for the next call instead of a KeyError."""
    import noise

    args = Namespace(seeds="0,1", workers=0, work=tmp_path, preset="debug", overrides=[])
    spec = {"horizon": 12, "val_size": 6, "instance": 0, "controller": "rule", "seed": 1}
    noise.execute(args, [spec], {}, tmp_path / "rows.jsonl")
    assert "skipped: the seed-0 run it replays has no row yet" in capsys.readouterr().out
    assert not (tmp_path / "rows.jsonl").exists()


def test_report_only_analyses_the_rows_there_are_and_runs_nothing(tmp_path, capsys):
    """A measurement cut short is reported from its rows: --report-only starts no episode."""
    import noise

    doc = json.loads((REPO / "benchmarks" / "results" / "noise-bench-cpu-h512-v64-i2.json").read_text())
    work = tmp_path / "work"
    work.mkdir()
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in doc["rows"]))
    out = tmp_path / "noise.json"
    argv = ["--preset", "bench-cpu", "--instances", "3", "--horizons", "512", "--val-sizes", "64", "--work", str(work),
            "--out", str(out), "--boot", "200", "--report-only"]  # fmt: skip
    assert noise.main(argv) == 0
    printed = capsys.readouterr().out
    assert "12 runs (4 to do)" in printed and "4 planned runs not run; the analysis uses the 8 there are" in printed
    got = json.loads(out.read_text())
    assert got["planned_runs"] == 12 and len(got["rows"]) == 8
    assert not (work / "runs").exists()  # nothing ran
    comp = got["regimes"][0]["components"]
    assert comp["instances"] == 2 and comp["pairs"] == 4
