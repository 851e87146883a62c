"""The teacher-forced validation loss (sttrl.eval.loss) and env.eval_every on the debug preset: the loss is the
training objective on validation utterances, it is in every observation and eval file, WER is decoded only every
k-th block (carried in between, with zero WER gain), and the judge still recomputes every reward."""

from __future__ import annotations

import json

import pytest
import torch

from sttrl.control.lookahead import LOG, run_lookahead
from sttrl.control.prompting import render_observation
from sttrl.env.gym import SttEnv
from sttrl.env.runtime import EpisodeRuntime
from sttrl.eval.loss import validation_loss
from sttrl.eval.result import EvalResult
from sttrl.judge.scoring import judge
from sttrl.train.loss import label_loss


def test_loss_is_whisper_loss_token_weighted_and_batch_size_free(make_config, tmp_path):
    rt = EpisodeRuntime(make_config(), tmp_path / "run", progress=False)
    store, model = rt.val_store, rt.loaded.model
    model.eval()
    with torch.no_grad():  # Whisper's own forward(labels=...) masks -100: the same mean as label_loss
        batch = store.batch([0, 1])
        ours = float(label_loss(model, batch))
        theirs = float(model(input_features=batch.input_features, decoder_input_ids=batch.decoder_input_ids,
                             labels=batch.labels).loss)  # fmt: skip
        assert ours == pytest.approx(theirs, rel=1e-5)
        sums = [float(label_loss(model, store.batch([i]), reduction="sum")) for i in range(len(store))]
        tokens = [int(store.batch([i]).label_targets.numel()) for i in range(len(store))]
    one, many = validation_loss(store, rt.device, batch_size=1), validation_loss(store, rt.device, batch_size=8)
    assert one.tokens == many.tokens == sum(tokens) and one.n == len(store)
    assert one.loss == pytest.approx(sum(sums) / sum(tokens), rel=1e-5)
    assert many.loss == pytest.approx(one.loss, rel=1e-5)
    assert validation_loss(store, rt.device, max_utterances=2).n == 2


def test_eval_every_carries_wer_and_the_judge_recomputes_rewards(make_config):
    env = SttEnv(make_config("env.max_actions=4", "env.eval_every=3"))
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["observation"]["val_loss"] > 0 and info["observation"]["wer_step"] == 0
    for _ in range(4):
        obs, _, _, _, info = env.step("keep")
        assert env.observation_space.contains(obs)
    records = env.trajectory.records()
    evals = {b: json.loads((env.run_dir / "evals" / f"block-{b:04d}.json").read_text()) for b in range(5)}
    # decoded at the start, at block 3 (every 3rd) and at the budget's last block (4); the loss after every block
    assert [evals[b]["wer_block"] for b in range(5)] == [None, 0, 0, None, None]
    assert [r["observation"]["wer_step"] for r in records] == [0, 0, 3, 4]
    assert all(e["val_loss"] > 0 and e["loss_seconds"] > 0 for e in evals.values())
    assert [r["observation"]["val_loss"] for r in records] == [evals[b]["val_loss"] for b in range(1, 5)]
    assert evals[1]["wer"] == evals[2]["wer"] == evals[0]["wer"] and evals[1]["seconds"] == 0.0
    assert len({e["val_loss"] for e in evals.values()}) == 5  # measured on each block's own weights
    penalty = env.cfg.env.reward.step_penalty
    assert [r["reward"] for r in records[:2]] == pytest.approx([-penalty, -penalty])  # no fresh WER: no gain
    assert records[2]["reward"] == pytest.approx(evals[0]["wer"] - evals[3]["wer"] - penalty)  # blocks 1-3's gain
    assert [r["spent"]["evaluations"] for r in records] == [1, 1, 2, 3]
    assert "validation loss (teacher-forced" in render_observation(records[-1]["observation"])
    report = judge(env.run_dir, progress=False)
    assert report["scored"], report["checks"]["trajectory_consistent"]


def test_eval_files_written_before_the_loss_still_load(make_config, tmp_path):
    rt = EpisodeRuntime(make_config(), tmp_path / "run", progress=False)
    old = {"wer": 0.9, "cer": 0.5, "n": 6, "seconds": 1.0, "utterances_per_s": 6.0, "examples": []}
    (rt.eval_dir).mkdir(parents=True, exist_ok=True)
    (rt.eval_dir / "block-0000.json").write_text(json.dumps(old))
    res = rt.evaluate(0)
    assert res == EvalResult(**old) and res.val_loss is None and res.wer_measured_after(0) == 0


def test_lookahead_val_loss_criterion(make_config, tmp_path):
    cfg = make_config(
        "env.budget_unit=samples",
        "env.samples_per_action=8",
        "env.max_actions=1",
        "lookahead.candidates=[keep,lr_up]",
        "lookahead.probe_samples=4",
        "lookahead.charge_probes=false",
        "lookahead.criterion=val_loss",
        "lookahead.probe_eval_utterances=3",
    )
    run_lookahead(cfg, tmp_path / "la")
    row = json.loads((tmp_path / "la" / LOG).read_text().splitlines()[0])
    values = {p["action"]: p["value"] for p in row["probes"]}
    assert row["criterion"] == "val_loss" and all(0 < v < float("inf") for v in values.values())
    assert row["chosen"] == min(values, key=values.get)
    assert len(set(values.values())) == 2  # each probe's own weights were measured
