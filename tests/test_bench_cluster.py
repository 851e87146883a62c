"""The benchmark past one machine: an existing Ray cluster of two nodes (``ray.cluster_utils.Cluster`` on this
machine, each node its own raylet), reached through ``--address`` as a user would reach a real one. The code is
uploaded as Ray's working directory, every node must see the benchmark directory and the data cache (checked
first), the episodes' threads live in a Postgres checkpointer, and the config keeps its default *relative*
``data.cache_dir``: resolved once at the entry point, so neither a worker on another node (its working directory
is the uploaded code) nor a PBT member (Ray Tune runs it in a trial directory) looks for the cache elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_graph_resume import postgres_url  # noqa: F401 - a fixture: a throwaway PostgreSQL on loopback

import bench
from bench.cluster import check_shared
from bench.suites import DEBUG_INSTANCES
from graph.checkpointer import open_checkpointer, thread_ids
from sttrl.config import load_config
from sttrl.errors import ConfigError
from sttrl.rundir import JUDGE_REPORT


@pytest.fixture(scope="module")
def two_nodes():
    """A Ray cluster of a head and a worker node on this machine, one CPU each, without token auth."""
    pytest.importorskip("ray.tune")
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # as a loopback cluster of bench.cluster: no token file left behind
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        try:
            cluster.wait_for_nodes()
            yield cluster
        finally:
            cluster.shutdown()


def test_suite_on_a_two_node_cluster_with_postgres_and_the_default_cache_dir(
    two_nodes,
    data_cache,
    postgres_url,  # noqa: F811 - the fixture imported above
    tmp_path,
    monkeypatch,
):
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "sttrl").symlink_to(data_cache)  # the default location, holding the session's corpus
    monkeypatch.chdir(tmp_path)
    pbt = ("bench.pbt_population=2", "bench.pbt_blocks=2", "bench.pbt_max_concurrent=1")
    cfg = load_config("debug", overrides=[*DEBUG_INSTANCES, *pbt])
    assert str(cfg.data.cache_dir) == ".cache/sttrl"  # the default, relative to where the user stands
    doc = bench.run_bench(
        cfg,
        ["static", "pbt"],
        [1000],
        "bench",
        quiet=True,
        executor="ray",
        address=two_nodes.address,
        cpus_per_episode=1,
        checkpointer=postgres_url,
    )
    runs = {r["controller"]: r for r in doc["runs"]}
    assert [r["status"] for r in runs.values()] == ["finished", "finished"], doc["runs"]
    assert doc["config"]["data"]["cache_dir"] == str(data_cache.resolve())  # resolved once, at the entry point
    assert doc["executor"] == {"name": "ray", "address": two_nodes.address, "checkpointer": postgres_url}
    for r in runs.values():
        judged = Path(r.get("judged_run_dir") or r["run_dir"])
        assert judged.is_relative_to(tmp_path / "bench") and json.loads((judged / JUDGE_REPORT).read_text())["scored"]
    assert not list((tmp_path / "bench").rglob(".cache"))  # nothing synthesized inside a trial or worker directory
    with open_checkpointer(postgres_url) as saver:
        assert "bench-static-s1000" in thread_ids(saver)
    assert not (tmp_path / "bench" / "checkpoints.sqlite").exists()


def test_a_node_that_does_not_see_the_directory_is_one_line(two_nodes, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    import ray

    from bench.cluster import ray_cluster

    with ray_cluster(two_nodes.address) as connected:
        check_shared(connected, [tmp_path / "seen"])  # both nodes share this machine's disk
        real_nodes = ray.nodes
        ghost = {"NodeID": "ab" * 28, "Alive": True}  # a node that would see nothing: no task can run there
        monkeypatch.setattr(ray, "nodes", lambda: [*real_nodes(), ghost])
        with pytest.raises(ConfigError, match=r"1 of 3 Ray nodes \(abababababab\) do not see .*every node mounts"):
            check_shared(connected, [tmp_path / "seen"], timeout_s=5)


def test_every_node_must_judge_with_the_drivers_key(two_nodes, monkeypatch):
    """The hidden domain is salted by the judge key: a node with another key would score on another hidden set."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    from bench.cluster import check_judge_key, ray_cluster

    with ray_cluster(two_nodes.address) as connected:
        check_judge_key(connected)  # both nodes were started from this process's environment: the same key
        monkeypatch.setenv("STTRL_JUDGE_KEY", "a-key-only-this-driver-holds-0123456789")  # the nodes keep theirs
        with pytest.raises(ConfigError, match=r"2 of 2 Ray nodes judge with another key .*same STTRL_JUDGE_KEY"):
            check_judge_key(connected, timeout_s=60)


def test_judge_key_mismatch_names_the_nodes_and_never_the_key():
    from bench.cluster import judge_key_mismatch

    assert judge_key_mismatch("f" * 16, {"a" * 56: "f" * 16}, ["a" * 56]) is None
    line = judge_key_mismatch("f" * 16, {"a" * 56: "f" * 16, "b" * 56: "0" * 16}, ["a" * 56, "b" * 56, "c" * 56])
    assert line.startswith("2 of 3 Ray nodes judge with another key than this machine's ffffffffffffffff: ")
    assert "bbbbbbbbbbbb (0000000000000000)" in line and "cccccccccccc (no answer or no key)" in line
