"""The controller benchmark (``bench``) and the kill-anywhere check (``benchmarks/kill_anywhere.py``).

A ``debug`` smoke of the benchmark with every controller (the LLM is a fake chat model), interrupted
once inside an episode and once inside an Optuna trial, resumed through the CLI, and run once more to
show that finished runs are skipped; the budget accounting and the search space on their own; and
the kill-anywhere script with a small N in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_agents import FakeToolCallingModel, call

import bench
from graph.agents import LLMAgent
from sttrl.control import registry as registry
from sttrl.env.runtime import EpisodeRuntime
from sttrl.rundir import JUDGE_REPORT, RUN_RECORD, TRAJECTORY

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _torch_threads():
    """The runs here use one torch thread (``run.threads=1``, which sets it process-wide); give the
    other tests back the count they started with."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# ----- pure parts --------------------------------------------------------------------------------
def test_search_space_is_what_an_episode_can_reach(make_config):
    cfg = make_config()  # debug: lr 1e-3 (x1.5), batch 4 in [1, 16] (x2), 3 decisions
    space = bench.search_space(cfg, max_freeze=2)
    assert space["lr"] == pytest.approx((1e-3 / 1.5**3, 1e-3 * 1.5**3))
    assert space["batch_size"] == [1, 2, 4, 8, 16] and space["freeze_layers"] == (0, 2)
    narrow = bench.search_space(
        make_config("env.max_actions=1", "train.lr_max=1.2e-3", "env.actions=[keep,lr_up,lr_down,stop]"), max_freeze=2
    )
    assert narrow["lr"] == pytest.approx((1e-3 / 1.5, 1.2e-3))  # clipped to lr_max
    assert narrow["batch_size"] == [4] and narrow["freeze_layers"] == (0, 0)  # those actions are disabled
    dists = bench.optuna_distributions(narrow)
    assert list(dists) == ["lr"] and dists["lr"].log
    hp = bench.trial_hp(narrow, {"lr": 1.1e-3})
    assert (hp.lr, hp.batch_size, hp.grad_accum, hp.freeze_layers) == (1.1e-3, 4, 1, 0)


def test_budget_matches_training_steps_and_counts_evaluations(make_config):
    b = bench.budget_of(make_config())
    assert (b.train_steps, b.evaluations, b.optuna_trials, b.steps_per_trial) == (6, 4, 3, 2)
    b2 = bench.budget_of(make_config("env.max_actions=4", "env.steps_per_action=5"), optuna_trials=3)
    assert b2.steps_per_trial == 6 and b2.to_dict()["optuna"]["train_steps"] == 18  # floor: never more than 20
    with pytest.raises(bench.ConfigError, match="less than one training step"):
        bench.budget_of(make_config(), optuna_trials=7)


def test_curve_band_holds_a_stopped_run_at_its_last_value():
    runs = [
        {"curve": {"x": [0, 2, 4, 6], "y": [1.0, 0.9, 0.8, 0.7]}},
        {"curve": {"x": [0, 2, 4], "y": [1.0, 0.7, 0.6]}},
    ]
    band = bench.curve_band(runs)
    assert band["x"] == [0, 2, 4, 6] and band["n"] == [2, 2, 2, 2]
    assert band["mean"] == pytest.approx([1.0, 0.8, 0.7, 0.65]) and band["min"][-1] == 0.6
    optuna_like = bench.curve_band([{"curve": {"x": [2, 4], "y": [0.9, 0.8]}}, {"curve": {"x": [3], "y": [0.5]}}])
    assert optuna_like["x"] == [2, 3, 4] and optuna_like["n"] == [1, 2, 2]


def test_llm_is_skipped_without_a_key(make_config, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    code = bench.main(
        [
            "--preset",
            "debug",
            "--controllers",
            "llm",
            "--seeds",
            "1",
            "--out",
            str(tmp_path / "b"),
            "--set",
            f"data.cache_dir={tmp_path / 'unused'}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "llm: skipped (no GROQ_API_KEY" in out
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert doc["runs"] == [] and "GROQ_API_KEY" in doc["skipped"]["llm"]
    assert not (tmp_path / "unused").exists()  # nothing was built


# ----- the debug smoke: every controller, interrupted twice, resumed, then skipped ----------------
class Interrupting:
    """An agent that is interrupted (like Ctrl-C) when asked for step ``at``, once."""

    def __init__(self, inner, at: int) -> None:
        self.inner, self.at, self.fired, self.name = inner, at, False, inner.name

    def decide(self, observation, history):
        if len(history) + 1 == self.at and not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        return self.inner.decide(observation, history)


def test_debug_bench_every_controller_interrupted_resumed_and_skipped(make_config, tmp_path, monkeypatch, capsys):
    assert not registry.get("optuna").missing_packages(), "the bench extra is missing: pip install -e '.[bench]'"
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    # one torch thread: the debug model is too small to gain from two, and a shared machine makes two
    # threads wait on each other (decoding slows down tenfold under load)
    cfg = make_config("env.max_actions=2", "run.threads=1")  # budget: 4 training steps, 3 validation evaluations
    out = tmp_path / "bench"
    static_interrupt: list[Interrupting] = []

    def factory(controller, run_cfg):
        if controller == "llm":
            fake = FakeToolCallingModel(responses=[call("lr_down", "WER is flat: cool the learning rate")])
            return LLMAgent(fake, run_cfg, backoff_s=0)
        if controller == "static" and static_interrupt:
            return static_interrupt.pop()
        return None

    from graph.agents import make_agent

    static_interrupt.append(Interrupting(make_agent("static", cfg), at=2))
    controllers = ["static", "random", "rule", "llm", "optuna"]
    with pytest.raises(KeyboardInterrupt):  # 1. interrupted inside the static episode's second decision
        bench.run_bench(cfg, controllers, [0], out, agent_factory=factory, quiet=True)
    assert json.loads((out / "bench.json").read_text())["runs"] == []

    real_evaluate = EpisodeRuntime.evaluate
    fired = []

    def evaluate_then_interrupt(self, block=None, **kwargs):
        if self.run_dir.name == "trial-001" and not fired:
            fired.append(True)
            raise KeyboardInterrupt
        return real_evaluate(self, block, **kwargs)

    monkeypatch.setattr(EpisodeRuntime, "evaluate", evaluate_then_interrupt)
    with pytest.raises(KeyboardInterrupt):  # 2. the episodes finish; interrupted inside Optuna's second trial
        bench.run_bench(cfg, controllers, [0], out, agent_factory=factory, quiet=True)
    trial0 = out / "runs" / "bench-optuna-s0" / "trial-000" / "trial.json"
    mtime0 = trial0.stat().st_mtime_ns
    partial = json.loads((out / "bench.json").read_text())
    assert [r["controller"] for r in partial["runs"]] == ["static", "random", "rule", "llm"]
    assert partial["runs"][0]["resumed"].startswith("resumes at decide after step 1")

    argv = [
        "--preset",
        "debug",
        "--controllers",
        ",".join(controllers),
        "--seeds",
        "1",
        "--out",
        str(out),
        "--set",
        "env.max_actions=2",
        "--set",
        "run.threads=1",
        "--set",
        f"data.cache_dir={cfg.data.cache_dir}",
        "--set",
        f"run.out_dir={cfg.run.out_dir}",
    ]
    capsys.readouterr()
    assert bench.main(argv, agent_factory=factory) == 0  # 3. the CLI resumes: only Optuna has work left
    printed = capsys.readouterr().out
    doc = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").stat().st_size > 10_000
    assert "| controller | runs | hidden WER | hidden CER | best val WER |" in printed and doc["table"] in printed
    assert "resumes after 1 of 2 trials" in printed
    assert trial0.stat().st_mtime_ns == mtime0  # a finished trial is never trained again

    runs = {r["controller"]: r for r in doc["runs"]}
    assert list(runs) == controllers and all(r["status"] == "finished" for r in runs.values())
    assert doc["budget"]["episode"] == {"max_actions": 2, "steps_per_action": 2, "train_steps": 4, "evaluations": 3}
    for c in ("static", "random", "llm"):  # these spend the whole budget
        assert (runs[c]["train_steps"], runs[c]["evaluations"]) == (4, 3), c
    rule = runs["rule"]  # may stop early: it spends less, and says so
    trained = rule["decisions"] - (rule["end_reason"] == "stop")
    assert rule["train_steps"] == 2 * trained and rule["evaluations"] == trained + 1
    assert runs["static"]["actions"] == ["keep", "keep"] and runs["llm"]["sources"] == {"llm": 2}
    opt = runs["optuna"]
    assert (opt["train_steps"], opt["evaluations"], len(opt["trials"])) == (4, 2, 2)
    assert [t["number"] for t in opt["trials"]] == [0, 1] and opt["curve"]["x"] == [2, 4]
    import optuna

    study = optuna.load_study(study_name="bench-optuna-s0", storage=f"sqlite:///{out / 'optuna.sqlite'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert [t.params for t in study.trials] == [t["params"] for t in opt["trials"]]
    for r in runs.values():  # every number comes from the run's own files
        judged = Path(r.get("judged_run_dir") or r["run_dir"])
        report = json.loads((judged / JUDGE_REPORT).read_text())
        assert (r["hidden_wer"], r["hidden_cer"]) == (report["wer"], report["cer"]) and report["scored"]
        assert r["final_sha256"] == json.loads((judged / RUN_RECORD).read_text())["final"]["sha256"]
        assert r["thread_id"] == f"bench-{r['controller']}-s0" and r["wall_s"] > 0
    static_traj = [json.loads(x) for x in (Path(runs["static"]["run_dir"]) / TRAJECTORY).read_text().splitlines()]
    assert [s["step"] for s in static_traj] == [1, 2]  # one record per step across the interruption
    assert runs["static"]["curve"]["y"][1:] == [s["eval"]["wer"] for s in static_traj]
    assert doc["summary"]["optuna"]["evaluations"]["mean"] == 2 and doc["summary"]["static"]["runs"] == 1

    capsys.readouterr()
    assert bench.main(argv, agent_factory=factory) == 0  # 4. everything finished: skipped, same numbers
    again = json.loads((out / "bench.json").read_text())
    assert all(r["resumed"] == "skipped (finished earlier)" for r in again["runs"])
    keys = ("hidden_wer", "hidden_cer", "best_val_wer", "train_steps", "evaluations", "curve", "final_sha256")
    assert [[r[k] for k in keys] for r in again["runs"]] == [[r[k] for k in keys] for r in doc["runs"]]


def test_a_benchmark_directory_keeps_its_config(make_config, tmp_path):
    out = tmp_path / "bench"
    bench.Bench(make_config(), ["static"], [0], out, quiet=True).write()
    with pytest.raises(bench.ConfigError, match="another config .*train.lr"):
        bench.Bench(make_config("train.lr=2e-3"), ["static"], [0], out, quiet=True).run()
    # a field added to the config since the directory was written counts as its default, not as a difference
    doc = json.loads((out / "bench.json").read_text())
    del doc["config"]["lookahead"]["charge_probes"]
    (out / "bench.json").write_text(json.dumps(doc))
    bench.Bench(make_config(), ["static"], [0], out, quiet=True)._check_existing()
    with pytest.raises(bench.ConfigError, match="lookahead.charge_probes"):
        bench.Bench(make_config("lookahead.charge_probes=false"), ["static"], [0], out, quiet=True)._check_existing()


# ----- kill-anywhere -----------------------------------------------------------------------------
def test_kill_anywhere_with_three_kills(data_cache, tmp_path):
    out = tmp_path / "kill.json"
    env = {k: v for k, v in os.environ.items() if k not in ("GROQ_API_KEY", "OPENAI_API_KEY")}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "kill_anywhere.py"),
            "--n",
            "3",
            "--seed",
            "0",
            "--steps-per-action",
            "2",
            "--max-actions",
            "2",
            "--set",
            "run.threads=1",
            "--set",
            f"data.cache_dir={data_cache}",
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "resumed runs 3/3, lost steps 0, duplicated steps 0, judge equal: yes" in proc.stdout
    result = json.loads(out.read_text())
    assert result["passed"] and len(result["kills"]) == 3 and result["chains"]
    assert all(k["resumed"] and k["resume_line"].startswith(k["expected"]) for k in result["kills"])
    assert all(c["weights_equal"] and c["numbers_equal"] for c in result["chains"])
