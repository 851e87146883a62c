from sttrl.config import load_config
from sttrl.control.classical import RandomPolicy, RulePolicy, StaticPolicy
from sttrl.control.registry import make_controller
from sttrl.env.actions import Action
from sttrl.outward.trajectory import StepRecord, Trajectory
from sttrl.rundir import TRAJECTORY


def obs(**kw):
    base = dict(
        step=1,
        steps_left=5,
        lr=1e-3,
        batch_size=8,
        grad_accum=1,
        freeze_layers=0,
        max_freeze_layers=2,
        train_loss=1.0,
        wer=0.5,
        cer=0.3,
        best_wer=0.5,
        previous_wer=0.6,
        memory_gb=1.0,
        memory_device="cpu",
        status="ok",
        global_step=10,
    )
    base.update(kw)
    return base


def test_rule_policy_reads_the_observation():
    p = RulePolicy()
    assert p.decide(obs(status="nan"), [{}]).action is Action.LR_DOWN
    assert p.decide(obs(status="diverged"), [{}]).action is Action.LR_DOWN
    assert p.decide(obs(status="oom"), [{}]).action is Action.BATCH_DOWN
    assert p.decide(obs(status="oom", batch_size=1), [{}]).action is Action.FREEZE_MORE
    assert p.decide(obs(), []).action is Action.KEEP
    assert p.decide(obs(wer=0.4, previous_wer=0.5), [{"action": "keep", "status": "ok"}]).action is Action.KEEP
    assert p.decide(obs(wer=0.6, previous_wer=0.5), [{"action": "keep", "status": "ok"}]).action is Action.LR_DOWN
    flat = obs(wer=0.5, previous_wer=0.505)
    assert p.decide(flat, [{"action": "keep", "status": "ok"}]).action is Action.LR_DOWN
    assert p.decide(flat, [{"action": "lr_down", "status": "ok"}]).action is Action.STOP


def test_random_and_static():
    r = RandomPolicy(seed=3)
    seq = [r.decide(obs(), [{}] * i).action for i in range(20)]
    assert seq == [RandomPolicy(seed=3).decide(obs(), [{}] * i).action for i in range(20)]
    assert Action.STOP not in seq and len(set(seq)) > 2
    assert StaticPolicy().decide(obs(), []).action is Action.KEEP
    cfg = load_config("debug", overrides=["env.actions=[keep, stop]"])
    rule = make_controller("rule", cfg)
    assert rule.decide(obs(status="nan"), [{}]).action is Action.KEEP and rule.decide(obs(), []).source == "rule"


def test_trajectory_is_append_only_and_idempotent(tmp_path):
    path = tmp_path / TRAJECTORY
    t = Trajectory(path)
    rec = StepRecord(
        run_id="r",
        step=1,
        action="keep",
        hp_before={"lr": 1.0},
        hp_after={"lr": 1.0},
        status="ok",
        reward=0.1,
        observation=obs(),
    )
    assert t.append(rec) and not t.append(rec)
    with open(path, "a") as fh:  # a torn line from a crash mid-write
        fh.write('{"schema": "sttrl.st')
    t2 = Trajectory(path)
    assert t2.steps() == [1]
    assert t2.records()[0]["schema"] == "sttrl.step/1"
