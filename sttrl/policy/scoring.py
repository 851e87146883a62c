"""Choosing an action by scoring: the policy reads every valid ``Decision`` for the state and is scored on each.

A state's candidates are the JSON decisions ``{"action": a, "rationale": r}`` for every enabled action ``a`` with the
same rationale ``r`` (the state's own numbers, :func:`sttrl.policy.data.state_rationale`), so they differ only in the
action. An action's score is the log-likelihood of its *action tokens*: the tokens that overlap the action's value and
its closing quote (:func:`action_mask`), after the prompt and the shared JSON prefix. The learned controller takes the
best score; the outcome stages sample from the softmax over the scores (a categorical policy over the enabled
actions, ``pi(a|s) ∝ p_LM(a|s)``), so a first token shared by several actions ("batch" in batch_up and batch_down)
no longer decides for all of them. Training masks the same action tokens (``policy.train_on: action``), not the
rationale, which only copies numbers from the prompt.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sttrl.policy import core

ACTION_KEY = '"action": "'


def action_mask(tok: Any, text: str, ids: Sequence[int]) -> list[int]:
    """1 for each token of ``ids`` (``text`` tokenized) whose characters overlap the action's value or its closing
    quote in the decision JSON ``text``; token spans come from decoding growing prefixes."""
    start = text.index(ACTION_KEY) + len(ACTION_KEY)
    end = text.index('"', start) + 1
    mask, before = [], 0
    for i in range(len(ids)):
        after = len(tok.decode(list(ids[: i + 1])))
        mask.append(1 if before < end and after > start else 0)
        before = after
    if not any(mask):
        raise ValueError(f"no token of {text!r} covers its action")
    return mask


@dataclass(frozen=True)
class Candidate:
    """One action's decision as the policy writes it: its tokens (ending with end of sequence) and their masks."""

    action: str
    text: str
    ids: list[int]
    action_mask: list[int]  # the action's tokens
    decision_mask: list[int]  # the whole JSON and the end of sequence


def candidate(tok: Any, action: str, rationale: str) -> Candidate:
    text = core.decision_text(action, rationale)
    ids = list(tok.encode(text, add_special_tokens=False))
    return Candidate(action, text, [*ids, tok.eos_token_id], [*action_mask(tok, text, ids), 0], [1] * (len(ids) + 1))


def candidates(tok: Any, actions: Sequence[str], rationale: str) -> list[Candidate]:
    return [candidate(tok, a, rationale) for a in actions]


def score_actions(model: Any, pad_id: int, prompt_ids: Sequence[int], cands: Sequence[Candidate]) -> torch.Tensor:
    """Each candidate's action log-likelihood after ``prompt_ids`` (``[A]``), differentiable: one batched forward."""
    b = core.make_batch([prompt_ids] * len(cands), [c.ids for c in cands], pad_id, [c.action_mask for c in cands])
    b = b.to(next(model.parameters()).device)
    return core.decision_logprobs(core.forward_logits(model, b), b)


@torch.no_grad()
def score_actions_cached(
    model: Any, pad_id: int, prompt_ids: Sequence[int], cands: Sequence[Candidate]
) -> torch.Tensor:
    """:func:`score_actions` without gradients, the prompt read once: its key/value cache is repeated for the
    candidates, which are right-padded after it (what a decision costs: one prompt, A short continuations)."""
    device = next(model.parameters()).device
    prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    out = model(input_ids=prompt, use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(len(cands))
    length = max(len(c.ids) for c in cands)
    ids = torch.full((len(cands), length), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(cands), length), device=device)
    for i, c in enumerate(cands):
        ids[i, : len(c.ids)] = torch.tensor(c.ids, device=device)
        mask[i, : len(c.ids)] = torch.tensor(c.action_mask, dtype=mask.dtype, device=device)
    attn = torch.ones((len(cands), prompt.shape[1] + length), dtype=torch.long, device=device)
    for i, c in enumerate(cands):
        attn[i, prompt.shape[1] + len(c.ids) :] = 0  # right padding after the candidate
    pos = (prompt.shape[1] + torch.arange(length, device=device)).expand(len(cands), length)
    cont = model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache).logits
    first = out.logits[:, -1:].expand(len(cands), 1, -1)
    logits = torch.cat([first, cont[:, :-1]], 1).float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


@dataclass
class Choice:
    """A scored decision: the action taken, its index among the candidates, the softmax over them, the time taken."""

    action: str
    index: int
    probs: list[float]
    seconds: float
    scores: list[float] = field(default_factory=list)


def choose(
    loaded: Any,
    prompt_ids: Sequence[int],
    actions: Sequence[str],
    rationale: str,
    temperature: float = 0.0,
    seed: int = 0,
) -> Choice:
    """Score every action and take the best (``temperature`` 0; the first in ``actions`` on a tie) or sample from
    ``softmax(scores / temperature)`` with a generator seeded by ``seed``."""
    t0 = time.perf_counter()
    cands = candidates(loaded.tokenizer, actions, rationale)
    scores = score_actions_cached(loaded.model, loaded.tokenizer.pad_token_id, prompt_ids, cands).cpu()
    probs = torch.softmax(scores, -1)
    if temperature > 0:
        gen = torch.Generator().manual_seed(seed)
        index = int(torch.multinomial(torch.softmax(scores / temperature, -1), 1, generator=gen))
    else:
        index = int(torch.argmax(scores))
    return Choice(actions[index], index, probs.tolist(), time.perf_counter() - t0, scores.tolist())


def describe(choice: Choice, rationale: str) -> str:
    """The decision's rationale: the chosen action's probability under the policy and the state's numbers."""
    return f"p({choice.action})={choice.probs[choice.index]:.2f} of {len(choice.probs)} scored actions; {rationale}"
