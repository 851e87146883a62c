"""The Gymnasium path (``python -m sttrl.run``) and the LangGraph path (``python -m graph.run``) run the same
episode step (``sttrl.env.episode``): the same seed and controller give the same trajectory, field by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sttrl.rundir import TRAJECTORY

IGNORED = {"timings", "source", "time"}  # wall-clock facts, and the label of who decided


TIMINGS = {"seconds", "samples_per_s", "utterances_per_s", "convert_seconds", "loss_seconds"}


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / TRAJECTORY).read_text().splitlines()]


def _without(d: dict, keys: set[str]) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


@pytest.mark.parametrize("controller,seed", [("random", 3), ("rule", 0)])
def test_env_and_graph_write_identical_trajectories(controller, seed, data_cache, tmp_path):
    from graph.run import main as graph_main
    from sttrl.control.run import main as env_main

    common = [
        "--preset",
        "debug",
        "--seed",
        str(seed),
        "--quiet",
        "--set",
        f"data.cache_dir={data_cache}",
        "--set",
        f"run.out_dir={tmp_path / 'runs'}",
        "--set",
        "env.max_actions=4",
    ]
    assert env_main([*common, "--policy", controller, "--run-dir", str(tmp_path / "env"), "--no-judge"]) == 0
    assert (
        graph_main(
            [
                *common,
                "--agent",
                controller,
                "--run-dir",
                str(tmp_path / "graph"),
                "--checkpointer",
                str(tmp_path / "cp.sqlite"),
                "--thread-id",
                "paths",
            ]
        )
        == 0
    )
    env, graph = _records(tmp_path / "env"), _records(tmp_path / "graph")
    assert [r["step"] for r in env] == [r["step"] for r in graph] and len(env) >= 1
    for a, b in zip(env, graph, strict=True):
        a, b = _without(a, IGNORED | {"run_id"}), _without(b, IGNORED | {"run_id"})
        for key in sorted(set(a) | set(b)):
            if key in ("train", "eval"):  # measured seconds and throughputs differ between two runs
                a_k = _without(a[key] or {}, TIMINGS)
                b_k = _without(b[key] or {}, TIMINGS)
                assert a_k == b_k, f"step {a['step']} field {key}"
            else:
                assert a[key] == b[key], f"step {a['step']} field {key}: {a[key]!r} != {b[key]!r}"
    if controller == "random":  # the random controller moved the hyperparameters: the comparison saw changes
        assert any(r["hp_before"] != r["hp_after"] for r in env)
