"""The block cache on the debug preset (one thread, bit-exact): a cached block equals a retrained one bit for bit,
a hit whose checkpoint was evicted is trained again and compared, probes and evaluations are cached, and the kept
checkpoints stay within their size limit (least recently used first)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from sttrl.control.lookahead import LOG, run_lookahead
from sttrl.env.blockcache import BlockCache
from sttrl.env.gym import SttEnv
from sttrl.rundir import block_name

ACTIONS = ["lr_up", "keep"]


def _episode(cfg, run_id: str) -> tuple[SttEnv, list[dict]]:
    env = SttEnv(cfg)
    env.reset(seed=0, options={"run_id": run_id})
    for a in ACTIONS:
        env.step(a)
    return env, env.trajectory.records()


def _hashes(env: SttEnv) -> list[dict]:
    ckpts = env.run_dir / "checkpoints"
    return [json.loads((ckpts / block_name(b) / "state.json").read_text())["hashes"] for b in (1, 2)]


def _same_numbers(a: list[dict], b: list[dict]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x["train"]["losses"] == y["train"]["losses"] and x["train"]["grad_norms"] == y["train"]["grad_norms"]
        assert x["eval"]["wer"] == y["eval"]["wer"] and x["eval"]["examples"] == y["eval"]["examples"]
        assert x["reward"] == y["reward"] and x["observation"]["train_loss"] == y["observation"]["train_loss"]


def test_a_cached_block_equals_a_retrained_one_bit_for_bit(make_config, tmp_path):
    on = ("env.max_actions=2", "cache.enabled=true", f"cache.dir={tmp_path / 'blocks'}")
    first, rec_first = _episode(make_config(*on), "first")
    assert first.runtime.cache.cache.stats.misses == 2 and first.runtime.cache.cache.stats.eval_misses == 3
    cached, rec_cached = _episode(make_config(*on), "cached")
    stats = cached.runtime.cache.cache.stats
    assert (stats.hits, stats.checkpoint_hits, stats.eval_hits, stats.mismatches) == (2, 2, 3, 0)
    assert all("[cached block" in r["train"]["note"] for r in rec_cached)
    retrained, rec_retrained = _episode(make_config("env.max_actions=2"), "retrained")
    assert retrained.runtime.cache is None
    # weights, optimizer and RNG state of both blocks: the same bytes; every number of the trajectory equal
    assert _hashes(cached) == _hashes(retrained) == _hashes(first)
    _same_numbers(rec_cached, rec_retrained)
    final = [json.loads((e.run_dir / "run.json").read_text())["final"]["sha256"] for e in (cached, retrained)]
    assert final[0] == final[1]
    # a hit's checkpoint shares its files with the cache (hard links), and the run still judges: same files
    weights = cached.run_dir / "checkpoints" / block_name(2) / "model.safetensors"
    assert weights.stat().st_nlink >= 2


def test_an_evicted_checkpoint_is_trained_again_from_its_parent_and_compared(make_config, tmp_path):
    on = ("env.max_actions=2", "cache.enabled=true", f"cache.dir={tmp_path / 'blocks'}", "cache.max_checkpoint_gb=0")
    _, rec_a = _episode(make_config(*on), "a")
    assert not any((tmp_path / "blocks" / "checkpoints").iterdir())  # metrics only
    b, rec_b = _episode(make_config(*on), "b")
    stats = b.runtime.cache.cache.stats
    assert (stats.hits, stats.checkpoint_hits, stats.mismatches, stats.eval_hits) == (2, 0, 0, 3)
    _same_numbers(rec_a, rec_b)


def test_lookahead_probes_and_blocks_come_from_the_cache_on_a_rerun(make_config, tmp_path):
    overrides = (
        "env.budget_unit=samples",
        "env.samples_per_action=16",
        "env.max_actions=2",
        "lookahead.candidates=[keep,lr_up]",
        "lookahead.probe_samples=8",
        "cache.enabled=true",
        f"cache.dir={tmp_path / 'blocks'}",
    )
    first = run_lookahead(make_config(*overrides), tmp_path / "la1")
    again = run_lookahead(make_config(*overrides), tmp_path / "la2")
    _same_numbers(first["records"], again["records"])
    rows = [json.loads(x) for x in (tmp_path / "la2" / LOG).read_text().splitlines()]
    first_rows = [json.loads(x) for x in (tmp_path / "la1" / LOG).read_text().splitlines()]
    probe_losses = lambda rs: [[p["losses"] for p in r["probes"]] for r in rs]
    assert probe_losses(rows) == probe_losses(first_rows)
    assert all("[cached block" in r["train"]["note"] for r in again["records"])


def _fake_checkpoint(path: Path, size: int) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x" * size)
    (path / "state.json").write_text("{}")
    return path


def test_kept_checkpoints_stay_within_the_limit_least_recently_used_first(tmp_path):
    cache = BlockCache(tmp_path / "cache", max_checkpoint_bytes=2500)
    for i, name in enumerate(("s1", "s2")):
        cache.keep(name, _fake_checkpoint(tmp_path / "src" / name, 1000))
        os.utime(cache.checkpoint(name), (time.time() - 100 + i, time.time() - 100 + i))
    assert cache.checkpoint("s1") is not None  # used: s2 is now the least recently used
    cache.keep("s3", _fake_checkpoint(tmp_path / "src" / "s3", 1000))
    assert cache.checkpoint("s2") is None and cache.checkpoint("s1") is not None and cache.checkpoint("s3") is not None
    assert cache.checkpoint_bytes() <= 2500
    cache.keep("big", _fake_checkpoint(tmp_path / "src" / "big", 3000))  # larger than the limit: not kept
    assert cache.checkpoint("big") is None


@pytest.mark.parametrize("field", ["hp", "cursor", "seed", "steps", "parent", "context"])
def test_every_part_of_the_address_changes_the_key(field):
    from sttrl.env.blockcache import block_key

    base = {"parent": "p", "hp": {"lr": 1e-3}, "cursor": 0, "seed": 0, "steps": 2, "context": "c"}
    other = dict(base, **{field: {"lr": 2e-3} if field == "hp" else (1 if isinstance(base[field], int) else "q")})
    assert block_key(**base) != block_key(**other)


def test_the_cache_rollouts_benchmark_runs_quick(data_cache, tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cache_rollouts.py"
    out = tmp_path / "cache_rollouts.json"
    cmd = [sys.executable, str(script), "--quick", "--out", str(out), "--set", f"data.cache_dir={data_cache}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    summary = json.loads(out.read_text())["summary"]
    assert all(summary[m]["exact"] for m in ("no-cache", "cache", "cache-warm"))
    assert summary["cache-warm"]["blocks_trained"]["median"] == 0
    assert summary["cache"]["blocks_trained"]["median"] <= summary["no-cache"]["blocks_trained"]["median"]
