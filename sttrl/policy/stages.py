"""Training stages over decision rows (:mod:`sttrl.policy.data`), one optimizer loop each, read top to bottom.

- ``sft``: the teacher's best decision per state (and logged episode decisions), NLL on the decision tokens only.
- ``rloo``: for a batch of states, k decisions sampled from the policy (JSON-constrained, as the controller decides);
  each gets the reward measured for its action at that state (teacher probes; an action nobody probed gets the
  state's worst measured reward; an invalid answer that minus ``invalid_json_penalty``). Loss:
  ``-mean(A * log pi(d)) + kl_coef * mean KL(pi || ref) - entropy_coef * H``, A the leave-one-out advantage
  (normalized), KL exact over the vocabulary on the decision tokens, kl_coef moved by the adaptive controller,
  the reference frozen, periodically copied or an EMA of the policy.
- ``dpo``: pairs (better, worse action at one state) from the teacher rows, the starting model as the reference,
  trained by TRL's DPOTrainer on the controller's tokens (sttrl.policy.trl_dpo; :func:`stage_items` gives the pairs).
- ``episodes``: RLOO over whole episodes in the environment, multi-step returns (sttrl.policy.episodes).
- ``grpo``: TRL's GRPOTrainer on live episodes, one tool per action (sttrl.policy.grpo).

The sft and rloo losses are written here (sttrl.policy.core) rather than taken from TRL's trainers: see
docs/train-an-llm.md for why they do not fit.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sttrl.config import Config
from sttrl.errors import ConfigError
from sttrl.policy import core
from sttrl.policy.data import dpo_pairs, states


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
        from sttrl.llm.constrained import chat_prompt_ids

        return chat_prompt_ids(self.loaded, turns)

    def decision_ids(self, text: str) -> list[int]:
        """The decision's tokens as the controller ends them: the JSON, then end of sequence."""
        return list(self.tok.encode(text, add_special_tokens=False)) + [self.tok.eos_token_id]

    def batch(self, rows: list[dict[str, Any]]) -> core.Batch:
        return core.make_batch(
            [self.prompt_ids(r["prompt"]) for r in rows],
            [self.decision_ids(r["decision"]) for r in rows],
            self.tok.pad_token_id,
        ).to(self.device)

    def optimizer(self) -> torch.optim.Optimizer:
        p = self.cfg.policy
        params = [q for q in self.model.parameters() if q.requires_grad]
        return torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)

    def step(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
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
        loss = core.sft_loss(core.forward_logits(lr.model, b), b)
        norm = lr.step(opt, loss)
        stats = {"step": n, "loss": float(loss.detach()), "grad_norm": norm}
        lr.log.append(stats)
        if on_step:
            on_step(stats)
    lr.model.eval()
    return lr.log


def state_reward(rows: list[dict[str, Any]], action: str | None, invalid_penalty: float) -> float:
    """The measured reward of ``action`` at the state whose rows are ``rows`` (see the module docstring)."""
    worst = min(r["reward"] for r in rows)
    if action is None:
        return worst - invalid_penalty
    return next((r["reward"] for r in rows if r["action"] == action), worst)


def sample_group(lr: Learner, rows: list[dict[str, Any]], k: int, seed: int) -> tuple[list[list[int]], list[float]]:
    """k decisions sampled at the state of ``rows``: their token ids and measured rewards."""
    from sttrl.policy.controller import sample_decision

    p = lr.cfg.policy
    prompt = lr.prompt_ids(rows[0]["prompt"])
    ids, rewards = [], []
    for j in range(k):
        out, decision = sample_decision(
            lr.loaded,
            prompt,
            lr.cfg.env.actions,
            constrained=p.constrained,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            max_chars=p.max_rationale_chars,
            seed=seed * 1009 + j,
        )
        ids.append(out.ids or [lr.tok.eos_token_id])
        rewards.append(state_reward(rows, decision.action.value if decision else None, p.invalid_json_penalty))
    return ids, rewards


def rl_step(
    lr: Learner,
    ref: Any,
    kl_ctl: core.AdaptiveKL,
    opt: torch.optim.Optimizer,
    n: int,
    prompts: list[list[int]],
    answers: list[list[int]],
    adv: torch.Tensor,
) -> dict[str, float]:
    """One policy-gradient step on sampled answers with their advantages: ``-mean(A log pi) + kl_coef KL -
    entropy_coef H``, then the reference update and the adaptive KL update. Returns (and logs) the step's numbers."""
    p = lr.cfg.policy
    b = core.make_batch(prompts, answers, lr.tok.pad_token_id).to(lr.device)
    lr.model.train()
    logits = core.forward_logits(lr.model, b)
    with torch.no_grad():
        ref_logits = core.forward_logits(ref, b)
    logp = core.decision_logprobs(logits, b)
    kl = core.decision_kl(logits, ref_logits, b)
    ent = core.decision_entropy(logits, b)
    coef = kl_ctl.value
    loss = core.policy_gradient_loss(logp, adv) + coef * kl.mean() - p.entropy_coef * ent
    norm = lr.step(opt, loss)
    core.update_reference(ref, lr.model, p.reference, n, p.ema_rate, p.ref_period)
    kl_now = float(kl.detach().mean())
    kl_ctl.update(kl_now, len(answers))
    stats = {
        "step": n,
        "loss": float(loss.detach()),
        "kl": kl_now,
        "kl_coef": coef,
        "entropy": float(ent.detach()),
        "decisions": len(answers),
        "grad_norm": norm,
    }
    lr.log.append(stats)
    return stats


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
        prompts, decisions, rewards = [], [], []
        for g, rows in enumerate(chunk):
            ids, rs = sample_group(lr, rows, p.k_samples, p.seed + n * 7919 + g)
            prompts += [lr.prompt_ids(rows[0]["prompt"])] * p.k_samples
            decisions += ids
            rewards.append(rs)
        r = torch.tensor(rewards, dtype=torch.float32, device=lr.device)
        adv = core.rloo_advantages(r, p.normalize_advantages).flatten()
        stats = rl_step(lr, ref, kl_ctl, opt, n, prompts, decisions, adv)
        stats["reward"] = float(r.mean())
        if on_step:
            on_step(stats)
    lr.model.eval()
    return lr.log


STAGES: dict[str, Callable[..., list[dict[str, float]]]] = {"sft": train_sft, "rloo": train_rloo}
"""The stages trained here from a dataset; ``dpo`` trains through TRL (:mod:`sttrl.policy.trl_dpo`), ``episodes``
(:mod:`sttrl.policy.episodes`) and ``grpo`` (:mod:`sttrl.policy.grpo`, TRL) run the environment instead."""
