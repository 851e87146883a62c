"""The math of learning a controller, as small pure torch functions (each unit-tested by hand).

Sequences are ``prompt + decision`` token ids, left-padded; ``decision_mask`` is 1 exactly on the decision's
tokens (the JSON answer and its end-of-sequence token), so every loss reads only what the controller writes.
Logits are computed only at the last positions that predict decision tokens (prompts are long, vocabularies large).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError

from sttrl.env.decision import Decision


# ----- batches and log-probabilities ------------------------------------------------------------
@dataclass
class Batch:
    """Left-padded ``input_ids``, ``attention_mask``, ``decision_mask`` and ``position_ids`` (all ``[n, T]``).
    Every decision ends the sequence, so the last ``keep`` positions (the longest decision plus the token before
    it) hold everything the losses read: the model computes logits there only."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    decision_mask: torch.Tensor
    position_ids: torch.Tensor
    keep: int

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.decision_mask.to(device),
            self.position_ids.to(device),
            self.keep,
        )

    @property
    def tail_ids(self) -> torch.Tensor:
        return self.input_ids[:, -self.keep :]

    @property
    def tail_mask(self) -> torch.Tensor:
        """1 where a tail logit predicts a decision token (``[n, keep - 1]``)."""
        return self.decision_mask[:, -self.keep + 1 :]


def make_batch(
    prompts: Sequence[Sequence[int]],
    decisions: Sequence[Sequence[int]],
    pad_id: int,
    masks: Sequence[Sequence[int]] | None = None,
) -> Batch:
    """Concatenate each prompt with its decision's ids (not re-tokenized: the mask stays exact) and pad left;
    positions count real tokens only, as in generation. ``masks[i]`` (0/1 per decision token) narrows the
    decision mask to some of its tokens (the action's, :mod:`sttrl.policy.scoring`); default: all of them."""
    if len(prompts) != len(decisions):
        raise ValueError(f"{len(prompts)} prompts but {len(decisions)} decisions")
    if any(not p for p in prompts) or any(not d for d in decisions):
        raise ValueError("every prompt and every decision needs at least one token")
    if masks is not None and [len(m) for m in masks] != [len(d) for d in decisions]:
        raise ValueError("every decision mask needs one entry per decision token")
    length = max(len(p) + len(d) for p, d in zip(prompts, decisions, strict=True))
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    dmask = torch.zeros_like(ids)
    for i, (p, d) in enumerate(zip(prompts, decisions, strict=True)):
        n = len(p) + len(d)
        ids[i, length - n :] = torch.tensor(list(p) + list(d), dtype=torch.long)
        attn[i, length - n :] = 1
        dmask[i, length - len(d) :] = torch.tensor(list(masks[i]), dtype=torch.long) if masks is not None else 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids, attn, dmask, pos, max(len(d) for d in decisions) + 1)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``log p(x_t | x_<t)`` under teacher forcing: ``[n, T-1]`` for tokens 1..T-1 from logits 0..T-2."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def forward_logits(model: Any, batch: Batch) -> torch.Tensor:
    """Logits at the batch's last ``keep`` positions (``[n, keep, V]``)."""
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=batch.keep,
    )
    return out.logits[:, -batch.keep :]


def decision_logprobs(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Sum of the decision tokens' log-probabilities per sequence (``[n]``); ``logits`` from forward_logits."""
    return (token_logprobs(logits, batch.tail_ids) * batch.tail_mask.to(logits.dtype)).sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


# ----- baselines and advantages -----------------------------------------------------------------
def leave_one_out_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """``rewards`` is ``[states, k]``; each sample's baseline is the mean of the other k-1 samples of its state."""
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError("the leave-one-out baseline needs k >= 2 samples per state")
    return (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)


def normalize_advantages(adv: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(adv - mean) / (std + eps)`` over all entries (population std); all-equal advantages become 0."""
    centred = adv - adv.mean()
    return centred / (centred.pow(2).mean().sqrt() + eps)


def rloo_advantages(rewards: torch.Tensor, normalize: bool) -> torch.Tensor:
    adv = rewards - leave_one_out_baseline(rewards)
    return normalize_advantages(adv) if normalize else adv


# ----- KL, entropy, reference ----------------------------------------------------------------
def kl_per_token(policy_logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact ``KL(policy || ref) = sum_v p(v) (log p(v) - log q(v))`` at every position (``[..., T]``)."""
    logp = torch.log_softmax(policy_logits.float(), dim=-1)
    logq = torch.log_softmax(ref_logits.float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def decision_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """KL summed over each decision's tokens (``[n]``): the positions that predict decision tokens."""
    kl = kl_per_token(policy_logits[:, :-1], ref_logits[:, :-1])
    return (kl * batch.tail_mask.to(kl.dtype)).sum(-1)


def entropy_per_token(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def decision_entropy(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean entropy of the next-token distribution over the positions that predict decision tokens."""
    return masked_mean(entropy_per_token(logits[:, :-1]), batch.tail_mask)


class AdaptiveKL:
    """Ziegler et al. (2019): ``e = clip(KL / target - 1, -0.2, 0.2)``, ``coef *= 1 + e * n / horizon``.
    With ``adaptive=False`` the coefficient stays fixed."""

    def __init__(self, coef: float, target: float, horizon: int, adaptive: bool = True) -> None:
        self.value, self.target, self.horizon, self.adaptive = coef, target, horizon, adaptive

    def update(self, current_kl: float, n_steps: int) -> float:
        if self.adaptive:
            error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


def train_top_layers(model: torch.nn.Module, n: int) -> int:
    """Freeze every weight but the top ``n`` decoder layers and the final norm (embeddings, tied or not, stay
    frozen, so autograd starts at the first trained layer); returns the number of trainable parameters. A model
    without ``get_decoder().layers`` (a Llama-style decoder) is a ValueError."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"policy.train_top_layers needs a decoder with .layers; {type(model).__name__} has none")
    if n > len(layers):
        raise ValueError(f"policy.train_top_layers={n} but the model has {len(layers)} decoder layers")
    model.requires_grad_(False)
    for layer in list(layers)[-n:]:
        layer.requires_grad_(True)
    norm = getattr(decoder, "norm", None)
    if norm is not None:
        norm.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_reference(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy: eval mode, no gradients."""
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


@torch.no_grad()
def ema_update(ref: torch.nn.Module, policy: torch.nn.Module, rate: float) -> None:
    """``ref <- (1 - rate) * ref + rate * policy``, parameter by parameter."""
    for r, p in zip(ref.parameters(), policy.parameters(), strict=True):
        r.mul_(1.0 - rate).add_(p.detach(), alpha=rate)


@torch.no_grad()
def copy_weights(ref: torch.nn.Module, policy: torch.nn.Module) -> None:
    ema_update(ref, policy, 1.0)


def update_reference(
    ref: torch.nn.Module, policy: torch.nn.Module, strategy: str, step: int, rate: float, period: int
) -> bool:
    """After optimizer step ``step`` (1-based): ema every step, periodic copies every ``period``; True if changed."""
    if strategy == "ema":
        ema_update(ref, policy, rate)
        return True
    if strategy == "periodic" and step % period == 0:
        copy_weights(ref, policy)
        return True
    return False


# ----- losses ---------------------------------------------------------------------------------
def policy_gradient_loss(logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE with given advantages: ``-mean(A * log pi(decision))`` (advantages are constants)."""
    return -(advantages.detach() * logp).mean()


def sft_loss(logits: torch.Tensor, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean negative log-likelihood per decision token (tokens outside the mask do not count). With ``weights``
    (one per sequence): each sequence's mean token NLL, averaged with those weights (a state whose label is a tie
    of several actions counts once: each tied action weighs 1/ties)."""
    logp = token_logprobs(logits, batch.tail_ids)
    if weights is None:
        return -masked_mean(logp, batch.tail_mask)
    mask = batch.tail_mask.to(logp.dtype)
    per_seq = (logp * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    w = weights.to(logp.dtype)
    return -(w * per_seq).sum() / w.sum().clamp(min=1e-12)


def dpo_loss(
    pol_better: torch.Tensor, pol_worse: torch.Tensor, ref_better: torch.Tensor, ref_worse: torch.Tensor, beta: float
) -> torch.Tensor:
    """Rafailov et al. (2023): ``-log sigmoid(beta * ((pi_b - ref_b) - (pi_w - ref_w)))``, averaged over pairs."""
    margin = (pol_better - ref_better) - (pol_worse - ref_worse)
    return -F.logsigmoid(beta * margin).mean()


# ----- decisions as text ---------------------------------------------------------------------
def parse_decision(text: str, allowed: Sequence[str]) -> Any:
    """The :class:`~sttrl.env.decision.Decision` in ``text`` when it is exactly one valid JSON object naming an
    enabled action; None otherwise (invalid JSON is detected, never guessed at)."""
    try:
        obj = json.loads(text)
        decision = Decision.model_validate(obj)
    except (ValueError, ValidationError, TypeError):
        return None
    return decision if decision.action.value in allowed else None


def decision_text(action: str, rationale: str) -> str:
    """The canonical JSON of a decision (what the constrained decoder can produce, field order kept)."""
    return json.dumps({"action": action, "rationale": rationale}, ensure_ascii=False)


def finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None
