import pytest

from sttrl.config import RewardConfig, load_config
from sttrl.env.actions import ALL_ACTIONS, SEED_ACTIONS, Action, apply, parse_action
from sttrl.env.reward import reward
from sttrl.train.blocks import Hyperparams


def hp(**kw):
    base = dict(lr=1e-3, batch_size=8, grad_accum=1, freeze_layers=0)
    base.update(kw)
    return Hyperparams(**base)


def test_apply_multiplies_and_clamps():
    t = load_config("debug").train
    out = apply(hp(), Action.LR_UP, t, 2)
    assert out.hp.lr == pytest.approx(1.5e-3) and not out.clamped
    assert apply(hp(), Action.LR_DOWN, t, 2).hp.lr == pytest.approx(1e-3 / 1.5)
    top = apply(hp(lr=t.lr_max), Action.LR_UP, t, 2)
    assert top.hp.lr == t.lr_max and top.clamped
    assert apply(hp(), Action.BATCH_UP, t, 2).hp.batch_size == 16
    assert apply(hp(batch_size=16), Action.BATCH_UP, t, 2).clamped  # debug batch_max is 16
    assert apply(hp(batch_size=1), Action.BATCH_DOWN, t, 2).hp.batch_size == 1
    assert apply(hp(), Action.FREEZE_MORE, t, 2).hp.freeze_layers == 1
    f = apply(hp(freeze_layers=2), Action.FREEZE_MORE, t, 2)
    assert f.hp.freeze_layers == 2 and f.clamped
    assert apply(hp(), Action.FREEZE_LESS, t, 2).clamped
    assert apply(hp(), Action.KEEP, t, 2).hp == hp()


def test_parse_action():
    assert parse_action("LR_UP", ALL_ACTIONS) is Action.LR_UP
    assert parse_action(0, ALL_ACTIONS) is Action.KEEP
    with pytest.raises(ValueError, match="unknown action"):
        parse_action("jump", ALL_ACTIONS)
    with pytest.raises(ValueError, match="not enabled"):
        parse_action("keep", SEED_ACTIONS)  # the seed's exact seven have no keep


def test_reward():
    cfg = RewardConfig()
    assert reward(0.8, 0.6, "ok", cfg) == pytest.approx(0.2 - 0.05)
    assert reward(0.8, 0.8, "oom", cfg) == pytest.approx(-1.05)
    assert reward(0.8, 0.8, "nan", cfg) == pytest.approx(-2.05)
    assert reward(0.8, 0.8, "diverged", cfg) == pytest.approx(-2.55)
    with pytest.raises(ValueError):
        reward(0.8, 0.8, "exploded", cfg)
