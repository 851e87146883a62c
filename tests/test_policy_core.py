"""sttrl.policy.core on a tiny random causal LM: every number checked against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from sttrl.config import load_config
from sttrl.control.prompting import decision_turns
from sttrl.llm.local import load_model, resolve_model
from sttrl.policy import core
from sttrl.policy.data import state_rationale
from sttrl.policy.stages import Learner, state_reward

ALLOWED = ("keep", "lr_up", "lr_down", "stop")


@pytest.fixture
def model(tiny_lm):
    torch.manual_seed(0)
    return load_model(resolve_model(str(tiny_lm)), cache=False)


def manual_logprob(model, seq: list[int], start: int) -> float:
    """Sum of log p(seq[t] | seq[:t]) for t >= start, one unpadded forward per token."""
    total = 0.0
    for t in range(start, len(seq)):
        step_logits = model(input_ids=torch.tensor([seq[:t]])).logits[0, -1]
        total += float(torch.log_softmax(step_logits, -1)[seq[t]])
    return total


def test_decision_logprobs_equal_a_manual_nll_and_the_mask_selects_the_decision(model):
    prompt, decision = [5, 17, 42, 9], [100, 7, 3]
    b = core.make_batch([prompt, [8, 9]], [decision, [11]], pad_id=0)
    assert b.input_ids.tolist() == [prompt + decision, [0, 0, 0, 0, 8, 9, 11]]  # left padding
    assert b.decision_mask.tolist() == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1]]
    assert b.attention_mask.tolist() == [[1] * 7, [0, 0, 0, 0, 1, 1, 1]]
    assert b.position_ids[1].tolist()[4:] == [0, 1, 2] and b.keep == 4
    assert b.tail_mask.tolist() == [[1, 1, 1], [0, 0, 1]]  # tail logits 0..2 predict tail tokens 1..3
    with torch.no_grad():
        logits = core.forward_logits(model.model, b)
        assert logits.shape[:2] == (2, 4)
        got = core.decision_logprobs(logits, b)
        manual = [manual_logprob(model.model, prompt + decision, 4), manual_logprob(model.model, [8, 9, 11], 2)]
    assert got.tolist() == pytest.approx(manual, abs=1e-4)  # padding changes nothing
    sft = core.sft_loss(logits, b)  # mean NLL over the 4 decision tokens of the batch
    assert sft.item() == pytest.approx(-sum(manual) / 4, abs=1e-4)


def test_a_rows_mask_covers_exactly_its_decision_json_and_eos(model):
    cfg = load_config("debug")
    obs = dict(
        step=1,
        steps_left=2,
        lr=1e-3,
        batch_size=4,
        grad_accum=1,
        freeze_layers=0,
        max_freeze_layers=2,
        train_loss=3.2,
        wer=1.0,
        status="ok",
        global_step=2,
    )
    text = core.decision_text("lr_down", state_rationale(obs, 40))
    row = {"prompt": decision_turns(obs, [], cfg), "decision": text}
    b = Learner(model, cfg).batch([row])
    ids = b.input_ids[0][b.decision_mask[0].bool()].tolist()
    assert ids[-1] == model.tokenizer.eos_token_id
    assert model.tokenizer.decode(ids[:-1]) == text == '{"action": "lr_down", "rationale": "WER 1, loss 3.2"}'


def test_leave_one_out_baseline_and_advantage_normalization():
    r = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    assert core.leave_one_out_baseline(r).tolist() == [[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]]
    assert core.rloo_advantages(r, normalize=False).tolist() == [[-1.5, 0.0, 1.5], [-3.0, -3.0, 6.0]]
    norm = core.normalize_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    s = math.sqrt(1.25)  # population std of 1..4 around 2.5
    assert norm.tolist() == pytest.approx([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s], abs=1e-6)
    assert core.normalize_advantages(torch.tensor([2.0, 2.0])).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        core.leave_one_out_baseline(torch.tensor([[1.0]]))


def test_kl_on_a_known_pair_and_entropy():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    kl = core.kl_per_token(p.log(), q.log())
    assert kl.item() == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), abs=1e-6)  # 0.5108
    assert core.kl_per_token(q.log() + 3.0, q.log()).item() == pytest.approx(0.0, abs=1e-7)  # logits, not probs
    h = core.entropy_per_token(torch.tensor([0.5, 0.25, 0.25]).log())
    assert h.item() == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)), abs=1e-6)
    # over a batch: only positions that predict decision tokens count
    b = core.make_batch([[1, 2]], [[3]], pad_id=0)  # tail = tokens 2, 3: the logits at token 2 predict token 3
    logits = torch.stack([torch.tensor([0.5, 0.5, 1e-9, 1e-9]).log(), torch.full((4,), 0.25).log()]).unsqueeze(0)
    ref = torch.stack([torch.tensor([0.9, 0.1, 1e-9, 1e-9]).log(), torch.full((4,), 0.25).log()]).unsqueeze(0)
    assert core.decision_kl(logits, ref, b).item() == pytest.approx(0.5108256, abs=1e-5)
    assert core.decision_entropy(logits, b).item() == pytest.approx(math.log(2), abs=1e-5)


def test_adaptive_kl_controller_follows_ziegler():
    ctl = core.AdaptiveKL(0.1, target=1.0, horizon=10)
    assert ctl.update(2.0, 5) == pytest.approx(0.1 * (1 + 0.2 * 5 / 10))  # error clipped at +0.2
    assert ctl.update(0.9, 5) == pytest.approx(0.11 * (1 - 0.1 * 5 / 10))
    assert ctl.update(0.0, 10) == pytest.approx(0.1045 * 0.8)  # clipped at -0.2
    fixed = core.AdaptiveKL(0.1, target=1.0, horizon=10, adaptive=False)
    assert fixed.update(5.0, 10) == 0.1


def test_ema_and_periodic_reference_updates(model):
    policy = model.model
    ref = core.make_reference(policy)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p))
    before = [r.clone() for r in ref.parameters()]
    assert core.update_reference(ref, policy, "ema", 1, rate=0.1, period=3)
    for r, r0, p in zip(ref.parameters(), before, policy.parameters(), strict=True):
        assert torch.allclose(r, 0.9 * r0 + 0.1 * p, atol=1e-6)
    ema = [r.clone() for r in ref.parameters()]
    assert not core.update_reference(ref, policy, "periodic", 2, rate=0.1, period=3)
    assert all(torch.equal(r, e) for r, e in zip(ref.parameters(), ema, strict=True))
    assert core.update_reference(ref, policy, "periodic", 3, rate=0.1, period=3)
    assert all(torch.equal(r, p) for r, p in zip(ref.parameters(), policy.parameters(), strict=True))
    assert not core.update_reference(ref, policy, "frozen", 3, rate=0.1, period=3)


def test_reference_gets_no_gradients_and_does_not_change(model):
    policy = model.model
    ref = core.make_reference(policy)
    snapshot = [r.clone() for r in ref.parameters()]
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    b = core.make_batch([[5, 6, 7], [5, 6]], [[8, 9], [10]], pad_id=0)
    for _ in range(2):
        logits = core.forward_logits(policy, b)
        ref_logits = core.forward_logits(ref, b)  # even inside the autograd graph
        loss = -core.decision_logprobs(logits, b).mean() + 0.1 * core.decision_kl(logits, ref_logits, b).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not r.requires_grad and r.grad is None for r in ref.parameters())
    assert all(torch.equal(r, s) for r, s in zip(ref.parameters(), snapshot, strict=True))
    assert any(not torch.equal(p, s) for p, s in zip(policy.parameters(), snapshot, strict=True))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_sign_of_the_advantage_moves_the_chosen_decision(model, sign):
    policy = model.model
    b = core.make_batch([[5, 6, 7, 8]], [[20, 21, 22]], pad_id=0)
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    with torch.no_grad():
        before = core.decision_logprobs(core.forward_logits(policy, b), b).item()
    loss = core.policy_gradient_loss(core.decision_logprobs(core.forward_logits(policy, b), b), torch.tensor([sign]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = core.decision_logprobs(core.forward_logits(policy, b), b).item()
    assert (after - before) * sign > 0, (before, after)


def test_dpo_loss_by_hand():
    loss = core.dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), 0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))), abs=1e-6)  # margin 1, beta 0.5
    same = core.dpo_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-1.0, -3.0]), torch.zeros(2), torch.zeros(2), 1.0)
    assert same.item() == pytest.approx(math.log(2), abs=1e-6)


def test_invalid_json_is_detected_and_penalized():
    assert core.parse_decision('{"action": "keep", "rationale": "flat"}', ALLOWED).action.value == "keep"
    bad_answers = (
        '{"action": "keep", "rationale": "x"} trailing',
        '{"action": "keep"}',
        '{"action": "fly", "rationale": ""}',
        '{"action": "batch_up", "rationale": ""}',
        "keep",
        "",
        "[1]",
    )
    for bad in bad_answers:
        assert core.parse_decision(bad, ALLOWED) is None, bad  # batch_up: a valid action, but not enabled
    rows = [{"action": "keep", "reward": -3.0}, {"action": "lr_up", "reward": -2.5}]
    assert state_reward(rows, "lr_up", 1.0) == -2.5
    assert state_reward(rows, "stop", 1.0) == -3.0  # never probed: the state's worst measured reward
    assert state_reward(rows, None, 1.0) == -4.0  # invalid answer: worst minus the penalty


def test_sampled_answers_are_rewarded_from_measured_outcomes_and_invalid_ones_penalized(model):
    from sttrl.policy.stages import sample_group

    cfg = load_config("debug", policy_preset="debug", overrides=["policy.temperature=1.5"])
    turns = [{"role": "user", "content": "WER 1.0, loss 3.2: your decision?"}]  # short: the test stays fast
    rows = [{"prompt": turns, "action": "keep", "reward": -3.0}, {"action": "lr_up", "reward": -2.5}]
    ids, rewards = sample_group(Learner(model, cfg), rows, 4, seed=0)  # constrained: always a valid Decision
    assert len(ids) == 4 and all(i[-1] == model.tokenizer.eos_token_id for i in ids)
    assert all(r in (-3.0, -2.5) for r in rewards)
    free = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"constrained": False})})
    _, rewards = sample_group(Learner(model, free), rows, 2, seed=0)  # random weights, free text: never valid JSON
    assert rewards == [-3.0 - cfg.policy.invalid_json_penalty] * 2


def test_train_top_layers_freezes_the_rest_and_only_the_top_changes(model):
    policy = model.model
    n = core.train_top_layers(policy, 1)
    top = policy.get_decoder().layers[-1]
    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(".layers.1." in name or name.endswith("model.norm.weight") for name in trainable)
    assert n == sum(p.numel() for p in top.parameters()) + policy.get_decoder().norm.weight.numel()
    before = {name: p.clone() for name, p in policy.named_parameters()}
    opt = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    b = core.make_batch([[5, 6, 7, 8]], [[20, 21, 22]], pad_id=0)
    loss = -core.decision_logprobs(core.forward_logits(policy, b), b).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = {name for name, p in policy.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= trainable
    assert all(p.grad is None for name, p in policy.named_parameters() if name not in trainable)
    with pytest.raises(ValueError, match="has 2 decoder layers"):
        core.train_top_layers(policy, 3)
