"""The benchmark's peers (issue 13): runs paired by test instance at an equal budget in samples, the trainer's
lr schedules and the ``schedule`` controller with its tuning command, successive halving that continues from
block checkpoints, suites and the action raster. Real debug-preset runs, kept small."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import bench
from bench.suites import DEBUG_INSTANCES
from sttrl.rundir import JUDGE_REPORT, RUN_RECORD, TRAJECTORY
from sttrl.train.trainer import scheduled_lr

# the smoke suite's debug instance set: test instances 1000-1001, train 0-1, 2 blocks of 8 samples
INSTANCES = DEBUG_INSTANCES


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# ----- lr schedules ------------------------------------------------------------------------------
def test_scheduled_lr_matches_a_hand_computation():
    # horizon 10, warm-up 0.2 -> 2 steps: 0.5, 1.0 x peak; then p = (s - 2) / 8
    lin = [scheduled_lr(1.0, s, 10, "linear", 0.2, 0.1) for s in range(10)]
    assert lin[:2] == pytest.approx([0.5, 1.0])
    assert lin[2:] == pytest.approx([0.1 + 0.9 * (1 - (s - 2) / 8) for s in range(2, 10)])
    cos = [scheduled_lr(2.0, s, 10, "cosine", 0.0, 0.0) for s in range(10)]
    assert cos == pytest.approx([2.0 * 0.5 * (1 + math.cos(math.pi * s / 10)) for s in range(10)])
    assert scheduled_lr(1.0, 50, 10, "linear", 0.0, 0.25) == pytest.approx(0.25)  # past the horizon: the final value


def test_trainer_follows_the_schedule_and_constant_is_unchanged(make_config, tmp_path):
    from sttrl.env.runtime import EpisodeRuntime

    def lrs(*overrides: str) -> tuple[list[float], int | None]:
        cfg = make_config("env.max_actions=2", "env.steps_per_action=3", "train.lr=1e-3", "run.threads=1", *overrides)
        rt = EpisodeRuntime(cfg, tmp_path / f"r{len(list(tmp_path.iterdir()))}", progress=False)
        seen: list[float] = []
        for block in (1, 2):
            rt.train_block(block, rt.initial_hp(), on_step=lambda i: seen.append(i.lr))
        assert rt.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(seen[-1])
        return seen, rt.trainer.horizon_steps

    const, horizon = lrs()
    assert const == [1e-3] * 6 and horizon is None  # today's numbers: the action's lr every step
    warm, _ = lrs("train.warmup_steps=2")
    assert warm == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3])
    lin, horizon = lrs("train.lr_schedule=linear", "train.warmup_fraction=0.34", "train.lr_final_fraction=0.1")
    assert horizon == 6  # 2 blocks x 3 steps; warm-up round(0.34 x 6) = 2 steps
    # warm-up (s + 1) / 2, then 0.1 + 0.9 x (1 - (s - 2) / 4)
    assert lin == pytest.approx([1e-3 * f for f in (0.5, 1.0, 1.0, 0.775, 0.55, 0.325)])
    cos, _ = lrs("train.lr_schedule=cosine")
    assert cos == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * s / 6)) for s in range(6)])


# ----- paired by instance, equal samples ---------------------------------------------------------
def test_runs_are_drawn_from_test_instances_at_equal_samples(make_config, tmp_path):
    cfg = make_config(*INSTANCES)
    with pytest.raises(bench.ConfigError, match="not test instances"):
        bench.Bench(cfg, ["static"], [0], tmp_path / "x")  # a train instance is never reported
    assert bench.plan_seeds(cfg, 2) == [1000, 1001] and bench.plan_seeds(make_config(), 2, 5) == [5, 6]
    doc = bench.run_bench(cfg, ["static", "schedule", "tpe"], [1000], tmp_path / "b", quiet=True, optuna_trials=2)
    assert doc["pairing"] == "instance" and doc["instances"]["1000"]["batch_size"] == 4
    assert doc["budget"]["unit"] == "samples" and doc["budget"]["episode"]["train_samples"] == 16
    runs = {r["controller"]: r for r in doc["runs"]}
    assert all(r["status"] == "finished" for r in runs.values()), doc["runs"]
    assert {c: r["train_samples"] for c, r in runs.items()} == {"static": 16, "schedule": 16, "tpe": 16}
    assert runs["static"]["train_steps"] == 4 and runs["static"]["curve"]["x"] == [0, 8, 16]  # batch 4: 2 steps/block
    for c in ("static", "schedule"):
        assert runs[c]["instance"]["seed"] == 1000
        run_cfg = json.loads((Path(runs[c]["run_dir"]) / RUN_RECORD).read_text())["config"]
        assert run_cfg["env"]["instance"]["seed"] == 1000 and run_cfg["train"]["batch_size"] == 4
    sched = json.loads((Path(runs["schedule"]["run_dir"]) / RUN_RECORD).read_text())["config"]["train"]
    assert sched["lr_schedule"] == "cosine" and sched["lr"] == pytest.approx(doc["instances"]["1000"]["lr"])
    traj = [json.loads(x) for x in (Path(runs["schedule"]["run_dir"]) / TRAJECTORY).read_text().splitlines()]
    assert [t["action"] for t in traj] == ["keep", "keep"] and "untuned" in traj[0]["rationale"]
    assert doc["paired"]["reference"] == "schedule" and doc["paired"]["instances"] == "test instances"
    assert doc["paired"]["controllers"]["static"]["n_pairs"] == 1
    assert "| train steps | train samples |" in doc["table"] and doc["summary"]["tpe"]["train_samples"]["mean"] == 16


def test_tune_schedule_on_train_instances_and_the_tuned_file_round_trip(make_config, tmp_path, capsys):
    from bench import tune_schedule

    cfg = make_config(*INSTANCES)
    tuned = tmp_path / "tuned.json"
    argv = [
        "--preset",
        "debug",
        "--out",
        str(tuned),
        "--grid-lr",
        "5e-4,2e-3",
        "--shapes",
        "cosine",
        "--train-instances",
        "1",
        "--final-fraction",
        "0.1",
    ]
    for o in (*INSTANCES, f"data.cache_dir={cfg.data.cache_dir}", f"run.out_dir={cfg.run.out_dir}"):
        argv += ["--set", o]
    assert tune_schedule.main(argv) == 0
    doc = json.loads(tuned.read_text())
    assert doc["train_instances"] == [0] and doc["split"] == "dev" and len(doc["grid"]) == 2
    best = min(doc["grid"], key=lambda p: p["dev_wer_mean"])
    assert (doc["peak_lr"], doc["shape"], doc["final_fraction"]) == (best["peak_lr"], "cosine", 0.1)
    assert doc["cost"]["episodes"] == 2 and doc["cost"]["samples"] == 2 * 16 and doc["cost"]["seconds"] > 0
    runs = sorted((tmp_path / "tuned-runs").iterdir())
    assert all((r / "judge-dev.json").is_file() and not (r / JUDGE_REPORT).exists() for r in runs)  # dev only
    assert "tuned: cosine from peak" in capsys.readouterr().out
    assert tune_schedule.main(argv) == 0  # resumed: read back, same winner
    assert json.loads(tuned.read_text())["peak_lr"] == doc["peak_lr"]

    bcfg = make_config(*INSTANCES, f"bench.schedule_file={tuned}")
    out = bench.run_bench(bcfg, ["schedule"], [1001], tmp_path / "b", quiet=True)
    run = out["runs"][0]
    train = json.loads((Path(run["run_dir"]) / RUN_RECORD).read_text())["config"]["train"]
    assert (train["lr"], train["lr_schedule"], train["lr_final_fraction"]) == (doc["peak_lr"], "cosine", 0.1)
    assert train["batch_size"] == out["instances"]["1001"]["batch_size"]  # the instance's start batch
    rationale = json.loads((Path(run["run_dir"]) / TRAJECTORY).read_text().splitlines()[0])["rationale"]
    assert f"tuned file {tuned}" in rationale
    assert out["schedule_tuning"]["tuned"] and out["schedule_tuning"]["cost"] == doc["cost"]
    with pytest.raises(bench.ConfigError, match="tune_schedule"):
        bench.run_bench(
            make_config(*INSTANCES, f"bench.schedule_file={tmp_path / 'missing.json'}"),
            ["schedule"],
            [1001],
            tmp_path / "c",
            quiet=True,
        )


# ----- successive halving continues from block checkpoints ---------------------------------------
def test_sha_promoted_trial_continues_from_its_checkpoint(make_config, tmp_path):
    import torch

    from bench.sha import rung_sizes

    assert rung_sizes(8, 2) == [8, 4, 2, 1] and rung_sizes(3, 2) == [3, 2, 1] and rung_sizes(1, 3) == [1]
    cfg = make_config(*INSTANCES)
    out = tmp_path / "b"
    doc = bench.run_bench(cfg, ["sha"], [1000], out, quiet=True, optuna_trials=2)
    run = doc["runs"][0]
    assert run["status"] == "finished", run
    assert run["rungs"] == [2, 1] and run["train_samples"] == 16 == doc["budget"]["episode"]["train_samples"]
    rung0 = {r["trial"]: r for r in run["trials"] if r["rung"] == 0}
    last = next(r for r in run["trials"] if r["rung"] == 1)
    assert last["trial"] == min(rung0, key=lambda t: (rung0[t]["val_wer"], t))  # the better one is promoted
    assert last["units"] == 8 and all(r["units"] == 4 for r in rung0.values())
    first = rung0[last["trial"]]
    assert last["global_step"] == first["global_step"] + last["steps"]  # continued, not restarted
    ckpt = Path(last["run_dir"]) / "checkpoints" / "block-0002"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["trainer"]["global_step"] == last["global_step"]
    assert state["trainer"]["cursor"] == first["samples"] + last["samples"]  # the data cursor went on too
    opt = torch.load(ckpt / "optimizer.pt", weights_only=False)
    assert {float(s["step"]) for s in opt["state"].values()} == {float(last["global_step"])}  # Adam's moments too
    assert run["judged_run_dir"] == last["run_dir"] and run["hidden_wer"] is not None
    judged = json.loads((Path(last["run_dir"]) / JUDGE_REPORT).read_text())
    assert (
        judged["scored"]
        and run["final_sha256"] == json.loads((Path(last["run_dir"]) / RUN_RECORD).read_text())["final"]["sha256"]
    )

    # resume: without the result and the last rung's record, only the last rung runs again
    (out / "runs" / "bench-sha-s1000" / "result.json").unlink()
    Path(last["run_dir"], "rung-1.json").unlink()
    before = {t: Path(r["run_dir"], "rung-0.json").stat().st_mtime_ns for t, r in rung0.items()}
    again = bench.run_bench(cfg, ["sha"], [1000], out, quiet=True, optuna_trials=2)["runs"][0]
    assert {t: Path(r["run_dir"], "rung-0.json").stat().st_mtime_ns for t, r in rung0.items()} == before
    assert (again["hidden_wer"], again["final_sha256"]) == (run["hidden_wer"], run["final_sha256"])


# ----- population based training on a loopback Ray cluster ---------------------------------------
def test_pbt_two_members_two_blocks_on_a_local_ray_cluster(make_config, tmp_path):
    import glob
    import tempfile

    from bench import cluster

    pytest.importorskip("ray.tune")
    had_token = cluster.AUTH_TOKEN.exists()
    before = set(glob.glob(f"{tempfile.gettempdir()}/sttrl-ray-*"))
    cfg = make_config(*INSTANCES, "bench.pbt_population=2", "bench.pbt_blocks=2", "bench.pbt_max_concurrent=1")
    doc = bench.run_bench(cfg, ["pbt"], [1000], tmp_path / "b", quiet=True)
    run = doc["runs"][0]
    assert run["status"] == "finished", run
    assert (run["population"], run["blocks"], run["units_per_block"]) == (2, 2, 4)
    assert len(run["reports"]) == 4 and run["train_samples"] == 16 == doc["budget"]["episode"]["train_samples"]
    assert run["replay_log"] and any(Path(p).name == "pbt_global.txt" for p in run["replay_log"])
    rows = {(r["trial"], r["blocks_done"]): r for r in run["reports"]}
    exploited = [r for r in run["reports"] if r["adopted_from"]]
    assert run["exploits"] == len(exploited) >= 1, run["reports"]  # the worse member exploited the better one
    for r in exploited:  # weights, optimizer and global step came with the donor's checkpoint
        donor = rows[(r["adopted_from"], r["blocks_done"] - 1)]
        assert r["global_step"] == donor["global_step"] + r["steps_attempted"]
    assert (
        run["hidden_wer"] is not None and json.loads((Path(run["judged_run_dir"]) / JUDGE_REPORT).read_text())["scored"]
    )
    assert cluster.AUTH_TOKEN.exists() == had_token
    assert set(glob.glob(f"{tempfile.gettempdir()}/sttrl-ray-*")) == before


# ----- the oracle gives regret ----------------------------------------------------------------------
def test_oracle_gives_regret_and_is_not_a_contestant(make_config, tmp_path):
    cfg = make_config(*INSTANCES, "bench.oracle_lrs=[1e-3, 3e-3]")
    doc = bench.run_bench(cfg, ["static", "oracle"], [1000], tmp_path / "b", quiet=True)
    runs = {r["controller"]: r for r in doc["runs"]}
    orc = runs["oracle"]
    assert orc["status"] == "finished" and len(orc["grid"]) == 2
    assert orc["hidden_wer"] == min(p["test_wer"] for p in orc["grid"]) and orc["train_samples"] == 16
    assert "oracle" not in doc["summary"] and "oracle" not in doc["paired"]["controllers"]
    assert doc["paired"]["oracle"] == "oracle"
    assert doc["paired"]["controllers"]["static"]["regret"] == pytest.approx(
        runs["static"]["hidden_wer"] - orc["hidden_wer"]
    )


# ----- suites ------------------------------------------------------------------------------------
def test_suites_smoke_end_to_end_and_estimates(make_config, tmp_path, capsys):
    cfg = make_config()
    common = ["--set", f"data.cache_dir={cfg.data.cache_dir}", "--set", f"run.out_dir={cfg.run.out_dir}"]
    assert bench.main(["--suite", "nope", *common]) == 2
    assert "unknown suite 'nope'; valid: cpu, decisive, full, smoke" in capsys.readouterr().out
    assert bench.main(["--suite", "full", "--dry-run", *common]) == 0
    full = capsys.readouterr().out
    assert "10 test instances" in full and "expected device time" in full and "pbt" in full and "oracle" in full
    assert bench.main(["--suite", "cpu", "--preset", "debug", *common]) == 2  # a suite fixes its preset
    assert "runs preset bench-cpu; drop --preset debug" in capsys.readouterr().out

    out = tmp_path / "smoke"
    assert bench.main(["--suite", "smoke", "--out", str(out), "--quiet", *common]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("suite smoke: preset debug, 5 controllers x 1 test instances")
    doc = json.loads((out / "bench.json").read_text())
    assert doc["preset"] == "debug" and doc["seeds"] == [1000] and doc["pairing"] == "instance"
    runs = {r["controller"]: r for r in doc["runs"]}
    assert list(runs) == ["static", "rule", "schedule", "tpe", "sha"]
    assert all(r["status"] == "finished" and r["hidden_wer"] is not None for r in runs.values())
    budget = doc["budget"]["episode"]["train_samples"]
    assert {c: runs[c]["train_samples"] for c in ("static", "schedule", "tpe", "sha")} == dict.fromkeys(
        ("static", "schedule", "tpe", "sha"), budget
    )  # equal samples, whatever the controller's kind
    assert runs["rule"]["train_samples"] <= budget and doc["paired"]["reference"] == "schedule"
    assert (out / "bench-actions.png").stat().st_size > 5_000


def test_budget_in_samples_and_what_a_missing_extra_says(make_config, monkeypatch, tmp_path):
    from bench.core import default_reference
    from sttrl import extras
    from sttrl.control import registry as registry
    from sttrl.train.blocks import Hyperparams

    b = bench.budget_of(make_config(*INSTANCES), optuna_trials=4)
    hp = Hyperparams(1e-3, 4, 1, 0)
    assert (b.unit, b.total, b.units_per_trial, b.steps_for(4, hp), b.steps_for(6, hp), b.spent(3, hp)) == (
        "samples",
        16,
        4,
        1,
        2,
        12,
    )
    assert bench.budget_of(make_config()).total == 6  # debug: 3 blocks x 2 steps
    assert default_reference(["oracle", "tpe"]) == "tpe"
    with pytest.raises(bench.ConfigError, match="regret only"):
        bench.Bench(make_config(), ["static", "oracle"], [0], tmp_path, reference="oracle")
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(bench.ConfigError, match=r"controller 'pbt' needs the 'ray' extra: pip install -e '\.\[ray\]'"):
        registry.get("pbt")
