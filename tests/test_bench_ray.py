"""The benchmark's Ray executor: two debug episodes as Ray tasks on a local loopback cluster give the same
numbers as the local executor, and the cluster leaves no token-auth file or temp dir behind."""

from __future__ import annotations

import glob
import tempfile

import pytest

import bench
from bench import cluster, executors
from bench.suites import DEBUG_INSTANCES
from sttrl import extras

KEYS = (
    "controller",
    "seed",
    "status",
    "hidden_wer",
    "hidden_cer",
    "best_val_wer",
    "train_steps",
    "train_samples",
    "evaluations",
    "actions",
    "curve",
    "final_sha256",
    "instance",
)


def test_ray_executor_matches_local(make_config, tmp_path):
    had_token = cluster.AUTH_TOKEN.exists()
    before = set(glob.glob(f"{tempfile.gettempdir()}/sttrl-ray-*"))
    # a test instance drawn in, a budget in samples, and the schedule controller's own config: the worker
    # builds every run's config as the local executor does
    cfg = make_config(*DEBUG_INSTANCES)
    local = bench.run_bench(cfg, ["static", "schedule"], [1000], tmp_path / "local", quiet=True)
    # one task at a time (2 CPUs per task on a 2-CPU cluster): two torch processes on 2 cores slow each other
    ray = bench.run_bench(
        cfg,
        ["static", "schedule"],
        [1000],
        tmp_path / "ray",
        quiet=True,
        executor="ray",
        ray_num_cpus=2,
        cpus_per_episode=2,
    )
    assert [r["status"] for r in ray["runs"]] == ["finished", "finished"], ray["runs"]
    assert [[r[k] for k in KEYS] for r in ray["runs"]] == [[r[k] for k in KEYS] for r in local["runs"]]
    assert cluster.AUTH_TOKEN.exists() == had_token
    assert set(glob.glob(f"{tempfile.gettempdir()}/sttrl-ray-*")) == before


def test_pool_executor_matches_local(make_config, tmp_path):
    """The pool executor runs each episode in a fresh spawned process through the same job as Ray's workers;
    one worker here (two torch processes on 2 cores slow each other), several on a GPU machine."""
    cfg = make_config(*DEBUG_INSTANCES)
    local = bench.run_bench(cfg, ["static", "schedule"], [1000], tmp_path / "local", quiet=True)
    pool = bench.run_bench(
        cfg, ["static", "schedule"], [1000], tmp_path / "pool", quiet=True, executor="pool", workers=1
    )
    assert [r["status"] for r in pool["runs"]] == ["finished", "finished"], pool["runs"]
    assert [[r[k] for k in KEYS] for r in pool["runs"]] == [[r[k] for k in KEYS] for r in local["runs"]]
    with pytest.raises(bench.ConfigError, match="--workers must be at least 1, not 0"):
        bench.Bench(cfg, ["static"], [1000], tmp_path / "x", executor="pool", workers=0)


def test_unknown_executor_and_missing_ray_are_one_line(make_config, tmp_path, monkeypatch):
    with pytest.raises(bench.ConfigError, match="unknown executor 'dask'; valid: local, pool, ray"):
        bench.Bench(make_config(), ["static"], [0], tmp_path, executor="dask")
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(bench.ConfigError, match=r"pip install -e '\.\[ray\]'"):
        executors.check_executor("ray")


def test_two_clusters_one_after_another_in_one_process():
    """Ray 2.60's token auth kept the token in the process after its file was removed, and the next cluster's
    GCS never started; clusters started here run without it and leave the environment as they found it."""
    import os

    before = {k: v for k, v in os.environ.items() if k.startswith("RAY_")}
    for _ in range(2):
        with cluster.ray_cluster(num_cpus=1) as connected:
            assert connected.get(connected.remote(lambda: 2).remote()) == 2
    assert {k: v for k, v in os.environ.items() if k.startswith("RAY_")} == before
