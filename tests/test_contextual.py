"""The ``contextual`` controller: its maps checked on hand-made numbers, its tuning command on the debug preset
(train instances, hidden dev, cross-validation), and a benchmark episode that runs the schedule it chose for a test
instance from the start the episode itself measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sttrl.control import context_models as cm

# three train instances, one feature; two grid points: point 0 is best where the feature is low, point 1 where high
X = np.array([[0.0], [0.1], [1.0], [1.1]])
Y = np.array([[0.3, 0.5], [0.32, 0.52], [0.6, 0.4], [0.62, 0.41]])


def test_global_and_nearest_neighbour_maps_by_hand():
    assert cm.fit("global", X, Y).predict([5.0]).tolist() == pytest.approx(Y.mean(axis=0).tolist())
    assert cm.fit("knn-1", X, Y).predict([0.95]).tolist() == pytest.approx([0.6, 0.4])
    assert cm.fit("knn-3", X, Y).predict([0.0]).tolist() == pytest.approx(Y[[0, 1, 2]].mean(axis=0).tolist())
    with pytest.raises(ValueError, match="unknown contextual map 'tree'"):
        cm.fit("tree", X, Y)


def test_the_gp_interpolates_near_its_data_and_falls_back_to_the_global_mean_far_away():
    gp = cm.fit("gp", X, Y)
    assert set(gp.params) == {"length_scale", "amplitude", "noise"}
    assert gp.params["length_scale"] in cm.LENGTH_SCALES
    near = gp.predict([0.05])
    assert near[0] < near[1]  # the low-feature instances' best point
    assert gp.predict([1.05])[1] < gp.predict([1.05])[0]
    assert gp.predict([1e3]).tolist() == pytest.approx(Y.mean(axis=0).tolist(), abs=1e-6)


def test_cross_validation_prefers_a_map_that_reads_an_informative_feature():
    best, cv = cm.choose(X, Y)
    assert list(cv) == ["global", "knn-1", "knn-3", "gp"]
    assert cv["knn-1"]["chosen"] == [0, 0, 1, 1] and cv["knn-1"]["regret"] == pytest.approx(0.0)
    assert cv["global"]["dev_wer"] > cv["knn-1"]["dev_wer"] and best != "global"
    # a feature that says nothing: the instances share one best point, and the global map is as good as any
    flat = np.array([[0.3, 0.5], [0.31, 0.52], [0.29, 0.5], [0.3, 0.51]])
    best, cv = cm.choose(X, flat)
    assert best == "global" and cv["global"]["regret"] == pytest.approx(0.0)


def test_tune_contextual_quick_then_the_benchmark_runs_its_schedule(data_cache, tmp_path, capsys):
    import bench
    from bench import tune_contextual
    from bench.tuning import QUICK_OVERRIDES
    from sttrl.config import load_config
    from sttrl.control.contextual import START_DIR, load_tuned
    from sttrl.rundir import RUN_RECORD, TRAJECTORY

    out = tmp_path / "ctx.json"
    sets = ["--set", f"data.cache_dir={data_cache}", "--set", f"run.out_dir={tmp_path / 'runs'}"]
    sched_out = tmp_path / "sched.json"
    assert tune_contextual.main(["--quick", *sets, "--out", str(out), "--schedule-out", str(sched_out)]) == 0
    printed = capsys.readouterr().out
    assert "2 grid points x 2 train instances = 4 runs" in printed and "CV dev WER" in printed
    doc = load_tuned(out)
    assert doc["train_instances"] == [0, 1] and doc["split"] == "dev" and len(doc["grid"]) == 2
    assert doc["features"] == ["log_lr", "log_batch", "freeze_layers", "start_loss", "start_wer"]
    assert doc["model"] in doc["cv"] and set(doc["cv"]) == {"global", "knn-1", "gp"}
    assert all(len(r["features"]) == 5 and len(r["dev_wer"]) == 2 for r in doc["instances"])
    assert doc["cost"]["episodes"] == 4 and doc["cost"]["samples"] == 4 * 16
    runs = sorted((tmp_path / "ctx-runs").iterdir())
    assert len(runs) == 4 and all((r / "judge-dev.json").is_file() and not (r / "judge.json").exists() for r in runs)
    assert not any((r / "checkpoints").exists() or (r / "final").exists() for r in runs)  # scored: weights dropped
    # the global map as the schedule controller's tuned file: the same grid point, the same runs
    from sttrl.control.schedule import load_tuned as load_schedule
    from sttrl.control.schedule import schedule_of

    sched, best = load_schedule(sched_out), doc["global_best"]
    assert (sched["peak_lr"], sched["shape"]) == (best["peak_lr"], best["shape"])
    assert sched["dev_wer"] == best["dev_wer_mean"]
    assert sched["train_instances"] == [0, 1] and sched["cost"] == doc["cost"] and len(sched["grid"]) == 2
    ref = schedule_of(load_config("debug", overrides=[f"bench.schedule_file={sched_out}"]))
    assert ref["peak_lr"] == best["peak_lr"] and ref["source"].startswith("tuned file")

    overrides = [*QUICK_OVERRIDES, f"data.cache_dir={data_cache}", f"run.out_dir={tmp_path / 'runs'}"]
    cfg = load_config("debug", overrides=[*overrides, f"bench.contextual_file={out}"])
    res = bench.run_bench(cfg, ["contextual"], [1000], tmp_path / "b", quiet=True)
    (run,) = res["runs"]
    assert run["status"] == "finished" and run["train_samples"] == 16
    train = json.loads((Path(run["run_dir"]) / RUN_RECORD).read_text())["config"]["train"]
    assert train["lr_schedule"] == "cosine" and train["lr"] in {g["peak_lr"] for g in doc["grid"]}
    traj = [json.loads(x) for x in (Path(run["run_dir"]) / TRAJECTORY).read_text().splitlines()]
    assert [t["action"] for t in traj] == ["keep", "keep"] and f"map {doc['model']}" in traj[0]["rationale"]
    # the start features the configure step measured equal the episode's own step-0 measurement
    (start_file,) = [
        p for p in (data_cache / START_DIR).glob("*.json") if json.loads(p.read_text())["lr"] == run["instance"]["lr"]
    ]
    start = json.loads(start_file.read_text())
    assert f"start_loss {start['train_loss']:.4g}, start_wer {start['wer']:.4g}" in traj[0]["rationale"]

    untuned = load_config("debug", overrides=overrides)
    res = bench.run_bench(untuned, ["contextual"], [1001], tmp_path / "b2", quiet=True)
    traj = [json.loads(x) for x in (Path(res["runs"][0]["run_dir"]) / TRAJECTORY).read_text().splitlines()]
    assert "no bench.contextual_file" in traj[0]["rationale"]
