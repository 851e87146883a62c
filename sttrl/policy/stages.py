"""Training stages over decision rows (:mod:`sttrl.policy.data`), one optimizer loop each, read top to bottom.

- ``sft``: the teacher's best decisions per state (every action tied with the best counts, each weighing 1/ties, so a
  state counts once) and logged episode decisions; NLL on the action's tokens (``policy.train_on: action``; the
  rationale only copies the prompt's numbers) or on the whole JSON (``decision``).
- ``rloo``: for a batch of teacher states, k actions sampled from the policy's softmax over its action scores
  (:mod:`sttrl.policy.scoring`); each gets the reward measured for it at that state (an action nobody probed: the
  state's worst). Loss: ``-mean(A * log pi(a|s)) + kl_coef * mean KL(pi || ref) - entropy_coef * H(pi)``, A the
  leave-one-out advantage (normalized), pi the categorical policy over the enabled actions, KL and entropy exact over
  those actions, kl_coef moved by the adaptive controller, the reference frozen, periodically copied or an EMA.
- ``dpo``: pairs (better, worse action at one state) from the teacher rows, the starting model as the reference,
  trained by TRL's DPOTrainer on the controller's tokens (sttrl.policy.trl_dpo; :func:`stage_items` gives the pairs).
- ``episodes``: RLOO over whole episodes in the environment, multi-step returns (sttrl.policy.episodes).
- ``grpo``: TRL's GRPOTrainer on live episodes, one tool per action (sttrl.policy.grpo).

The sft and rloo losses are written here (sttrl.policy.core) rather than taken from TRL's trainers: see
docs/train-an-llm.md for why they do not fit.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from sttrl.config import Config
from sttrl.errors import ConfigError
from sttrl.llm.constrained import chat_prompt_ids
from sttrl.policy import core, scoring
from sttrl.policy.data import dpo_pairs, states
from sttrl.train.exclusive import exclusive


@dataclass
class Learner:
    """A trainable causal LM with its tokenizer (an ``sttrl.llm.local.LoadedModel``), the config and a log."""

    loaded: Any
    cfg: Config
    log: list[dict[str, float]] = field(default_factory=list)

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def tok(self) -> Any:
        return self.loaded.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prompt_ids(self, turns: list[dict[str, str]]) -> list[int]:
        return chat_prompt_ids(self.loaded, turns)

    def decision_ids(self, text: str) -> list[int]:
        """The decision's tokens as the controller ends them: the JSON, then end of sequence."""
        return list(self.tok.encode(text, add_special_tokens=False)) + [self.tok.eos_token_id]

    def batch(self, rows: list[dict[str, Any]]) -> core.Batch:
        """Prompt + decision of each row, masked on what the stage trains (``policy.train_on``)."""
        decisions = [json.loads(r["decision"]) for r in rows]
        cands = [scoring.candidate(self.tok, d["action"], d["rationale"]) for d in decisions]
        on_action = self.cfg.policy.train_on == "action"
        return core.make_batch(
            [self.prompt_ids(r["prompt"]) for r in rows],
            [c.ids for c in cands],
            self.tok.pad_token_id,
            [c.action_mask if on_action else c.decision_mask for c in cands],
        ).to(self.device)

    def scores(self, model: Any, prompt_ids: list[int], rationale: str) -> torch.Tensor:
        """The enabled actions' scores at a state (``[A]``, differentiable through ``model``)."""
        cands = scoring.candidates(self.tok, self.cfg.env.actions, rationale)
        return scoring.score_actions(model, self.tok.pad_token_id, prompt_ids, cands)

    def optimizer(self) -> torch.optim.Optimizer:
        p = self.cfg.policy
        params = [q for q in self.model.parameters() if q.requires_grad]
        return torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)

    def step(self, opt: torch.optim.Optimizer, loss: torch.Tensor | None = None) -> float:
        """Backward ``loss`` (None: the gradients are already accumulated), clip, update; the gradient norm."""
        if loss is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
        clip = self.cfg.policy.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip is not None else float("inf"))
        opt.step()
        return float(norm)


def _batches(items: list[Any], size: int, steps: int, seed: int) -> Any:
    """``steps`` batches of ``size`` items, reshuffled each pass (seeded)."""
    rng, order = random.Random(seed), []
    for _ in range(steps):
        if len(order) < size:
            fresh = list(items)
            rng.shuffle(fresh)
            order += fresh
        yield [order.pop(0) for _ in range(min(size, len(items)))]


def stage_items(stage: str, ds: Any, cfg: Config) -> list[Any]:
    """What ``stage`` trains on: sft the valid best rows, rloo the teacher states (groups of rows), dpo the pairs;
    a ConfigError when there is nothing (checked before any model is loaded)."""
    if stage == "sft":
        items: list[Any] = [r for r in ds if r["valid"] and r["best"]]
        need = "rows with a valid best decision (teacher choices or episode decisions)"
    elif stage == "rloo":
        items = [rows for rows in states(ds).values() if any(r["kind"] == "teacher" for r in rows)]
        need = "teacher rows (measured outcomes of probed actions per state)"
    else:
        items = dpo_pairs(ds, cfg.policy.dpo_min_gap)
        need = "teacher states with at least two probed actions of different outcomes (policy.dpo_min_gap)"
    if not items:
        raise ConfigError(f"{stage} needs {need}; the data has none")
    return items


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def train_sft(
    lr: Learner, ds: Any, on_step: Callable[[dict[str, float]], None] | None = None
) -> list[dict[str, float]]:
    """Step-wise stage (see the module docstring)."""
    p = lr.cfg.policy
    rows = stage_items("sft", ds, lr.cfg)
    opt = lr.optimizer()
    lr.model.train()
    for n, chunk in enumerate(_batches(rows, p.batch_size, p.steps, p.seed), 1):
        b = lr.batch(chunk)
        weights = torch.tensor([1.0 / max(1, int(r.get("ties") or 1)) for r in chunk], device=lr.device)
        loss = core.sft_loss(core.forward_logits(lr.model, b), b, weights)
        norm = lr.step(opt, loss)
        stats = {"step": n, "loss": float(loss.detach()), "grad_norm": norm}
        lr.log.append(stats)
        if on_step:
            on_step(stats)
    lr.model.eval()
    return lr.log


def state_reward(rows: list[dict[str, Any]], action: str) -> float:
    """The measured reward of ``action`` at the state whose rows are ``rows`` (never probed: the state's worst)."""
    return next((r["reward"] for r in rows if r["action"] == action), min(r["reward"] for r in rows))


@dataclass
class Scored:
    """Decisions at one state for a policy-gradient step: the prompt, the rationale the candidates share, the sampled
    action indices (into ``env.actions``) and their advantages."""

    prompt_ids: list[int]
    rationale: str
    taken: list[int]
    advantages: list[float]


def categorical_step(
    lr: Learner, ref: Any, kl_ctl: core.AdaptiveKL, opt: torch.optim.Optimizer, n: int, states: list[Scored]
) -> dict[str, float]:
    """One policy-gradient step of the categorical policy over the enabled actions: per state one scoring forward
    (gradients accumulated state by state), ``-mean(A log pi(a|s)) + kl_coef KL(pi || ref) - entropy_coef H(pi)``
    averaged over the decisions; then the reference and the adaptive KL updates. Returns (and logs) the numbers."""
    p = lr.cfg.policy
    total = sum(len(s.taken) for s in states)
    coef = kl_ctl.value
    opt.zero_grad(set_to_none=True)
    lr.model.train()
    loss_sum, kl_sum, ent_sum = 0.0, 0.0, 0.0
    for s in states:
        logp = torch.log_softmax(lr.scores(lr.model, s.prompt_ids, s.rationale), -1)
        with torch.no_grad():
            ref_logp = torch.log_softmax(lr.scores(ref, s.prompt_ids, s.rationale), -1)
        probs = logp.exp()
        kl = (probs * (logp - ref_logp)).sum()
        ent = -(probs * logp).sum()
        adv = torch.tensor(s.advantages, dtype=logp.dtype, device=logp.device)
        m = len(s.taken)
        loss = (-(adv * logp[s.taken]).sum() + m * (coef * kl - p.entropy_coef * ent)) / total
        loss.backward()
        loss_sum += float(loss.detach())
        kl_sum, ent_sum = kl_sum + m * float(kl.detach()), ent_sum + m * float(ent.detach())
    norm = lr.step(opt)
    core.update_reference(ref, lr.model, p.reference, n, p.ema_rate, p.ref_period)
    kl_ctl.update(kl_sum / total, total)
    lr.model.eval()
    stats = {
        "step": n,
        "loss": loss_sum,
        "kl": kl_sum / total,
        "kl_coef": coef,
        "entropy": ent_sum / total,
        "decisions": total,
        "grad_norm": norm,
    }
    lr.log.append(stats)
    return stats


def sample_state(lr: Learner, rows: list[dict[str, Any]], k: int, seed: int) -> tuple[Scored, list[float]]:
    """k actions sampled at the state of ``rows`` from the softmax over the policy's scores (``policy.temperature``),
    with their measured rewards (advantages not yet filled in)."""
    p = lr.cfg.policy
    prompt = lr.prompt_ids(rows[0]["prompt"])
    rationale = json.loads(rows[0]["decision"])["rationale"]
    with torch.no_grad():
        scores = lr.scores(lr.model, prompt, rationale).float().cpu()
    gen = torch.Generator().manual_seed(seed)
    probs = torch.softmax(scores / max(p.temperature, 1e-6), -1)
    taken = torch.multinomial(probs, k, replacement=True, generator=gen).tolist()
    rewards = [state_reward(rows, lr.cfg.env.actions[i]) for i in taken]
    return Scored(prompt, rationale, taken, []), rewards


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def train_rloo(
    lr: Learner, ds: Any, on_step: Callable[[dict[str, float]], None] | None = None
) -> list[dict[str, float]]:
    """Outcome stage on single decisions (see the module docstring)."""
    p = lr.cfg.policy
    groups = stage_items("rloo", ds, lr.cfg)
    ref = core.make_reference(lr.model)
    kl_ctl = core.AdaptiveKL(p.kl_coef, p.kl_target, p.kl_horizon, p.adaptive_kl)
    opt = lr.optimizer()
    for n, chunk in enumerate(_batches(groups, p.batch_size, p.steps, p.seed), 1):
        lr.model.eval()
        sampled = [sample_state(lr, rows, p.k_samples, p.seed + n * 7919 + g) for g, rows in enumerate(chunk)]
        r = torch.tensor([rs for _, rs in sampled], dtype=torch.float32)
        adv = core.rloo_advantages(r, p.normalize_advantages)
        states = [replace(s, advantages=a.tolist()) for (s, _), a in zip(sampled, adv, strict=True)]
        stats = categorical_step(lr, ref, kl_ctl, opt, n, states)
        stats["reward"] = float(r.mean())
        if on_step:
            on_step(stats)
    lr.model.eval()
    return lr.log


STAGES: dict[str, Callable[..., list[dict[str, float]]]] = {"sft": train_sft, "rloo": train_rloo}
"""The stages trained here from a dataset; ``dpo`` trains through TRL (:mod:`sttrl.policy.trl_dpo`), ``episodes``
(:mod:`sttrl.policy.episodes`) and ``grpo`` (:mod:`sttrl.policy.grpo`, TRL) run the environment instead."""
