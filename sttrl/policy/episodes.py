"""The outcome stage over whole episodes (``policy.stage=episodes``): RLOO with multi-step returns in the real
environment (``sttrl.env.gym.SttEnv``), which TRL's single-completion trainers do not cover.

Each optimizer step takes ``batch_size`` train instances (``env.instances.train_seeds``, else the run seed) and runs
``k_samples`` episodes from each, all from the same reset (same data order), the policy sampling its decisions from
the softmax over its action scores (``policy.temperature``, :mod:`sttrl.policy.scoring`). An episode's outcome is its
return (the sum of the environment's step rewards); episodes last at most ``policy.max_episode_length`` decisions.
Every decision of an episode gets that episode's leave-one-out advantage, and the loss is the categorical RLOO one of
:mod:`sttrl.policy.stages` (KL to the reference, entropy bonus).
Episode run directories go under ``run.out_dir/policy-episodes/<id>`` (training checkpoints removed after each episode).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sttrl.env.gym import SttEnv
from sttrl.policy import core
from sttrl.policy.controller import LearnedController
from sttrl.policy.stages import Learner, Scored, categorical_step
from sttrl.rundir import new_run_id
from sttrl.train.exclusive import exclusive


def episode_config(cfg: Any) -> Any:
    """``cfg`` with episodes capped at ``policy.max_episode_length`` decisions."""
    env = cfg.env.model_copy(update={"max_actions": min(cfg.env.max_actions, cfg.policy.max_episode_length)})
    return cfg.model_copy(update={"env": env})


def run_episode(env: Any, ctl: Any, instance: int | None, run_dir: Path) -> float:
    """One episode decided by ``ctl`` (a tracing LearnedController); its outcome (see the module docstring)."""
    opts: dict[str, Any] = {"run_dir": str(run_dir)}
    if instance is not None:
        opts["instance"] = instance
    _, info = env.reset(seed=env.cfg.run.seed, options=opts)
    obs, history, done, total = info["observation"], [], False, 0.0
    while not done:
        d = ctl.decide(obs, history)
        _, reward, term, trunc, info = env.step(d)
        total += float(reward)
        obs, history, done = info["observation"], env.trajectory.records(), term or trunc
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return total


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def train_episodes(
    lr: Learner, ds: Any = None, on_step: Callable[[dict[str, float]], None] | None = None
) -> list[dict[str, float]]:
    """RLOO over whole episodes (see the module docstring); ``ds`` is not used."""
    cfg = episode_config(lr.cfg)
    p = cfg.policy
    spec = cfg.env.instances
    instances: list[int | None] = list(spec.train_seeds) if spec is not None else [None]
    env = SttEnv(cfg, progress=False, source="learned")
    ref = core.make_reference(lr.model)
    kl_ctl = core.AdaptiveKL(p.kl_coef, p.kl_target, p.kl_horizon, p.adaptive_kl)
    opt = lr.optimizer()
    root = Path(cfg.run.out_dir) / "policy-episodes" / new_run_id()
    try:
        for n in range(1, p.steps + 1):
            lr.model.eval()
            returns, seqs = [], []
            for b in range(p.batch_size):
                instance = instances[((n - 1) * p.batch_size + b) % len(instances)]
                group = []
                for j in range(p.k_samples):
                    ctl = LearnedController(cfg, lr.loaded, sample=True, seed=p.seed + n * 7919 + b * 101 + j, trace=[])
                    group.append(run_episode(env, ctl, instance, root / f"step{n}-b{b}-k{j}"))
                    seqs.append(list(ctl.trace or []))
                returns.append(group)
            r = torch.tensor(returns, dtype=torch.float32)
            adv_ep = core.rloo_advantages(r, p.normalize_advantages).flatten().tolist()
            decisions = [
                Scored(ids, rationale, [taken], [a])
                for a, ep in zip(adv_ep, seqs, strict=True)
                for ids, rationale, taken in ep
            ]
            stats = categorical_step(lr, ref, kl_ctl, opt, n, decisions)
            stats["return"] = float(r.mean())
            if on_step:
                on_step(stats)
    finally:
        env.close()
    lr.model.eval()
    return lr.log
