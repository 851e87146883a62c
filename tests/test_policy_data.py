"""The policy config (presets, YAML round trip, sweeps), decision rows from teacher and episode files, the
prompt they carry (the LLM controller's own), and the sttrl.policy.learn CLI's one-line errors."""

from __future__ import annotations

import json

import pytest

from sttrl.config import load_config
from sttrl.control.prompting import decision_turns
from sttrl.errors import ConfigError
from sttrl.policy.data import dpo_pairs, load_rows, states
from sttrl.policy.learn import main as learn_main
from sttrl.policy.settings import policy_presets, sweep
from sttrl.rundir import TRAJECTORY


def obs(step: int, wer: float, loss: float | None = 3.0, status: str = "ok") -> dict:
    return dict(
        step=step,
        steps_left=3 - step,
        global_step=2 * step,
        lr=1e-3,
        batch_size=4,
        grad_accum=1,
        freeze_layers=0,
        max_freeze_layers=2,
        train_loss=loss,
        wer=wer,
        cer=0.8,
        best_wer=wer,
        previous_wer=wer + 0.05,
        memory_gb=0.5,
        memory_device="cpu",
        status=status,
    )


def teacher_file(tmp_path, probes_at_step_2=None):
    hist = [
        {
            "schema": "sttrl.step/1",
            "run_id": "r1",
            "step": 1,
            "action": "keep",
            "status": "ok",
            "reward": 0.1,
            "hp_before": {"lr": 1e-3, "batch_size": 4, "grad_accum": 1, "freeze_layers": 0},
            "observation": obs(1, 0.95),
            "train": {"losses": [3.2, 3.0], "samples": 8},
            "eval": {"n": 6},
            "clamped": False,
        }
    ]
    rows = [
        {
            "schema": "sttrl.teacher/1",
            "run_id": "r1",
            "step": 1,
            "observation": obs(0, 1.0, None),
            "chosen": "lr_up",
            "history": [],
            "probes": [
                {"action": "keep", "value": 3.2},
                {"action": "lr_up", "value": 3.0},
                {"action": "lr_down", "value": None, "status": "nan"},
            ],
        },
        {
            "schema": "sttrl.teacher/1",
            "run_id": "r1",
            "step": 2,
            "observation": obs(1, 0.95),
            "chosen": "keep",
            "history": hist,
            "probes": probes_at_step_2 or [{"action": "keep", "value": 2.9}, {"action": "fly", "value": 2.0}],
        },
    ]
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, hist


def test_policy_presets_yaml_round_trip_and_sweep(tmp_path):
    assert policy_presets() == ["debug", "full", "small"]
    cfg = load_config("debug", policy_preset="full", overrides=["policy.kl_coef=0.2"])
    assert (cfg.policy.reference, cfg.policy.k_samples, cfg.policy.kl_coef) == ("ema", 8, 0.2)
    path = cfg.save(tmp_path / "c.yaml")
    again = load_config(None, path)
    assert again.policy == cfg.policy and again.to_dict() == cfg.to_dict()
    grid = sweep(cfg, {"lr": [1e-5, 1e-4], "policy.reference": ["frozen", "periodic"], "train.lr": [2e-3]})
    assert [(c.policy.lr, c.policy.reference) for c in grid] == [
        (1e-5, "frozen"),
        (1e-5, "periodic"),
        (1e-4, "frozen"),
        (1e-4, "periodic"),
    ]
    assert all(c.train.lr == 2e-3 and c.policy.k_samples == 8 for c in grid)
    with pytest.raises(ConfigError, match=r"policy\.k_samples"):
        sweep(cfg, {"k_samples": [4, 1]})
    with pytest.raises(ConfigError, match=r"policy\.nope: unknown key"):
        sweep(cfg, {"nope": [1]})
    with pytest.raises(ConfigError, match="non-empty list"):
        sweep(cfg, {"lr": []})
    with pytest.raises(ConfigError, match="unknown policy preset 'huge'; valid: debug, full, small"):
        load_config("debug", policy_preset="huge")
    with pytest.raises(ConfigError, match=r"policy\.reference"):
        load_config("debug", overrides=["policy.reference=sometimes"])


def test_teacher_rows_carry_the_controllers_prompt_rewards_and_validity(tmp_path):
    cfg = load_config("debug", policy_preset="debug")
    path, hist = teacher_file(tmp_path)
    ds = load_rows([path], cfg)
    assert len(ds) == 5
    r = ds[0]
    assert (r["state"], r["kind"], r["action"], r["best"], r["valid"]) == ("r1/1", "teacher", "keep", False, True)
    assert r["prompt"] == decision_turns(obs(0, 1.0, None), [], cfg)
    assert ds[3]["prompt"] == decision_turns(obs(1, 0.95), hist, cfg)  # the history shapes the prompt's facts
    assert json.loads(r["decision"]) == {"action": "keep", "rationale": "WER 1"}
    assert ds["reward"][:3] == [-3.2, -3.0, -4.2]  # failed probe: worst measured (-3.2) minus failed_probe_penalty
    assert ds["outcome"][:3] == [3.2, 3.0, None]
    assert ds["best"][:3] == [False, True, False]
    assert ds[4]["valid"] is False  # "fly" is no action: filtered out of every stage
    assert [row["action"] for row in states(ds)["r1/2"]] == ["keep"]
    pairs = [(a["action"], b["action"]) for a, b in dpo_pairs(ds)]
    assert pairs == [("lr_up", "keep"), ("keep", "lr_down"), ("lr_up", "lr_down")]
    assert len(dpo_pairs(ds, min_gap=0.5)) == 2


def test_prompt_is_the_llm_controllers_own(tmp_path):
    from graph.agents import build_messages
    from graph.local_llm import json_skeleton
    from sttrl.env.decision import Decision

    cfg = load_config("debug")
    _, hist = teacher_file(tmp_path)
    turns = decision_turns(obs(1, 0.95), hist, cfg)
    msgs = build_messages(obs(1, 0.95), hist, cfg, cfg.agent.history_window)
    assert [t["content"] for t in turns[:2]] == [m.content for m in msgs]
    assert turns[2]["role"] == "system" and json_skeleton(Decision.model_json_schema()) in turns[2]["content"]


def test_episode_rows_use_returns_to_go(tmp_path):
    cfg = load_config("debug", overrides=["policy.gamma=0.5"])
    recs = [
        {
            "schema": "sttrl.step/1",
            "run_id": "e1",
            "step": s,
            "action": a,
            "reward": rw,
            "status": "ok",
            "observation": obs(s, 1.0 - 0.1 * s),
        }
        for s, a, rw in ((1, "keep", 1.0), (2, "lr_down", 2.0), (3, "stop", 4.0))
    ]
    run = tmp_path / "run-a"
    run.mkdir()
    (run / TRAJECTORY).write_text("".join(json.dumps(r) + "\n" for r in recs))
    ds = load_rows([tmp_path], cfg)
    assert ds["action"] == ["lr_down", "stop"]  # step 1's starting observation is not in the records
    assert ds["reward"] == [2.0 + 0.5 * 4.0, 4.0]
    assert ds[0]["prompt"] == decision_turns(obs(1, 0.9), recs[:1], cfg)


def test_learn_cli_bad_input_is_one_line_exit_2(tmp_path, tiny_lm, capsys):
    path, _ = teacher_file(tmp_path)
    cases = [
        (["--data", str(tmp_path / "missing.jsonl")], "missing.jsonl does not exist"),
        (["--data", str(path), "--set", "policy.lr=-1"], "policy.lr"),
        (["--data", str(path), "--model", "local:/nowhere/model"], "/nowhere/model"),
        (["--data", str(path), "--stage", "dpo", "--set", "policy.dpo_min_gap=5"], "dpo needs teacher states"),
    ]
    (tmp_path / "bad.jsonl").write_text('{"schema": "other/1"}\n')
    cases.append((["--data", str(tmp_path / "bad.jsonl")], "bad.jsonl: schema 'other/1'"))
    for extra, needle in cases:
        argv = ["--preset", "debug", "--model", str(tiny_lm), "--out", str(tmp_path / "out"), *extra]
        assert learn_main(argv) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()
    from sttrl.control.run import (
        main as run_main,  # the Gymnasium runner: --policy learned needs --model, refused early
    )

    assert run_main(["--preset", "debug", "--policy", "learned", "--quiet"]) == 2
    assert run_main(["--preset", "debug", "--policy", "rule", "--model", str(tiny_lm), "--quiet"]) == 2
    assert "--model is the model directory of --policy learned" in capsys.readouterr().out


def test_ties_count_as_best_and_rows_carry_their_instance(tmp_path):
    probes = [{"action": "keep", "value": 2.9}, {"action": "lr_down", "value": 2.9}, {"action": "lr_up", "value": 3.0}]
    path, _ = teacher_file(tmp_path, probes_at_step_2=probes)
    ds = load_rows([path], load_config("debug"))
    step2 = [r for r in ds if r["state"] == "r1/2"]
    assert [(r["action"], r["best"], r["ties"]) for r in step2] == [
        ("keep", True, 2),
        ("lr_down", True, 2),
        ("lr_up", False, 2),
    ]  # an exact tie is a tie
    assert ds[0]["ties"] == 1 and ds[0]["instance"] is None
    wide = load_rows([path], load_config("debug", overrides=["policy.tie_tolerance=0.15"]))
    assert [r["best"] for r in wide if r["state"] == "r1/2"] == [True, True, True]


def test_the_held_out_split_keeps_whole_instances_out_and_the_majority_from_training(tmp_path):
    from sttrl.policy import heldout

    lines = []
    for seed, chosen in ((0, "lr_down"), (1, "lr_down"), (2, "keep"), (3, "lr_up")):
        for step in (1, 2):
            row = {
                "schema": "sttrl.teacher/1",
                "run_id": f"r{seed}",
                "instance_seed": seed,
                "step": step,
                "observation": obs(step - 1, 1.0),
                "chosen": chosen,
                "history": [],
                "probes": [{"action": a, "value": 1.0 if a == chosen else 2.0} for a in ("keep", "lr_down", "lr_up")],
            }
            lines.append(json.dumps(row) + "\n")
    path = tmp_path / "t.jsonl"
    path.write_text("".join(lines))
    cfg = load_config("debug", overrides=["policy.holdout_fraction=0.5", "policy.seed=3"])
    held = heldout.split(load_rows([path], cfg), cfg)
    out = {rows[0]["instance"] for rows in held.heldout}
    assert len(out) == 2 and len(held.heldout) == 4 and "held out" in held.how
    assert not {r["instance"] for r in held.train} & out  # no row of a held-out instance trains
    assert heldout.majority(held.train) in {"lr_down", "keep", "lr_up"}
    one = load_rows([teacher_file(tmp_path)[0]], load_config("debug", overrides=["policy.holdout_fraction=0.5"]))
    single = heldout.split(one, load_config("debug", overrides=["policy.holdout_fraction=0.5"]))
    assert len(single.heldout) == 1 and "correlated" in single.how  # one instance: every 2nd state
    assert heldout.split(one, load_config("debug", overrides=["policy.holdout_fraction=0"])).heldout == []
