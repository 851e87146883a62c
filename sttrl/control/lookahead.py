"""The ``lookahead`` controller: at each decision, fork every candidate action from the current block
checkpoint, train each for a short probe, keep the best by ``lookahead.criterion``, and continue the
block from the winner's probe checkpoint (its probe steps are not trained again).

Budget: an episode may train ``budget_samples(cfg)`` samples (``env.max_actions`` blocks of the episode's
block size), and every probe sample counts (``lookahead.charge_probes: false`` lets the probes go free, for
teacher trajectories: every decision is labelled). A decision costs the block plus the losing probes (the
winner's probe is the start of its block); when what is left cannot pay for a whole decision with probes,
the episode trains plain ``keep`` blocks while a block fits, then ends. ``lookahead.jsonl`` in the run
directory holds, per decision, the observation, every probe with its measured outcome and the winner:
the rows :mod:`sttrl.control.teacher` writes out as teacher trajectories.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sttrl.config import Config
from sttrl.env import episode
from sttrl.env.actions import Action
from sttrl.env.decision import Decided
from sttrl.env.phases import Pending, Progress
from sttrl.errors import ConfigError
from sttrl.train.blocks import Hyperparams

if TYPE_CHECKING:
    from sttrl.env.runtime import EpisodeRuntime

LOG = "lookahead.jsonl"
SOURCE = "lookahead"


def block_samples(cfg: Config, hp: Hyperparams) -> int:
    """Samples one block trains at ``hp`` (env.samples_per_action, or steps_per_action x batch x accumulation)."""
    return cfg.env.block_steps(hp.batch_size, hp.grad_accum) * hp.batch_size * hp.grad_accum


def budget_samples(cfg: Config, hp: Hyperparams) -> int:
    """The episode's training budget in samples: ``env.max_actions`` blocks at the starting hyperparameters."""
    return cfg.env.max_actions * block_samples(cfg, hp)


def candidates(cfg: Config) -> list[str]:
    """The probed actions: ``lookahead.candidates`` that ``env.actions`` enables (never ``stop``)."""
    out = [a for a in cfg.lookahead.candidates if a in cfg.env.actions and a != Action.STOP.value]
    if not out:
        raise ConfigError(
            f"lookahead.candidates {cfg.lookahead.candidates} has no action enabled in env.actions "
            f"{cfg.env.actions} (stop is never probed)"
        )
    return out


@dataclass
class Spent:
    """Samples spent so far: in blocks (after their winning probe) and in probes (all of them)."""

    blocks: int = 0
    probes: int = 0
    probe_list: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.blocks + self.probes


def _criterion(rt: EpisodeRuntime, losses: list[float], status: str) -> float:
    if status != "ok" or not losses:
        return math.inf
    if rt.cfg.lookahead.criterion == "train_loss":
        tail = losses[len(losses) // 2 :]
        return float(sum(tail) / len(tail))
    return float(rt.score_current(rt.cfg.lookahead.probe_eval_utterances).wer)


def probe(rt: EpisodeRuntime, progress: Progress, action: str, probe_dir: Path) -> dict[str, Any]:
    """Train ``action``'s probe from block ``progress.step``'s checkpoint; its checkpoint goes to ``probe_dir``."""
    pend = episode.pending(progress, Decided(Action(action), "probe", SOURCE), rt.cfg)
    hp = pend.hp
    per_step = hp.batch_size * hp.grad_accum
    steps = max(1, min(rt.steps_for(hp), math.ceil(rt.cfg.lookahead.probe_samples / per_step)))
    t0 = time.perf_counter()
    res = rt.probe(progress.step, hp, steps, save_to=probe_dir)
    value = _criterion(rt, list(res.losses), res.status)
    return {
        "action": action,
        "hp_after": pend.hp_after,
        "clamped": pend.clamped,
        "steps": steps,
        "samples": res.samples if res.status == "ok" else res.steps_attempted * per_step,
        "status": res.status,
        "losses": list(res.losses),
        "value": value,
        "seconds": time.perf_counter() - t0,
    }


def lookahead_step(
    rt: EpisodeRuntime, progress: Progress, root: Path
) -> tuple[Pending, list[dict[str, Any]], Path | None]:
    """Probe every candidate from the current block (probes under ``root``), pick the best (lowest criterion; first
    in candidate order on ties). Returns the decision, the probes and the winner's probe checkpoint to continue."""
    cfg = rt.cfg
    shutil.rmtree(root, ignore_errors=True)
    probes = [probe(rt, progress, a, root / a) for a in candidates(cfg)]
    ok = [p for p in probes if math.isfinite(p["value"])]
    best = min(ok, key=lambda p: p["value"]) if ok else None
    action = best["action"] if best else Action.KEEP.value
    why = (
        f"lookahead: lowest {cfg.lookahead.criterion} {best['value']:.4f} of {len(probes)} probes"
        if best
        else f"lookahead: all {len(probes)} probes failed; keep"
    )
    pend = episode.pending(progress, Decided(Action(action), why, SOURCE), cfg)
    start = root / action if best is not None and best["hp_after"] == pend.hp_after else None
    return pend, probes, start


def run_lookahead(cfg: Config, run_dir: str | Path, *, data: Any = None, on_line: Any = None) -> dict[str, Any]:
    """One lookahead episode in ``run_dir`` through the episode loop (:class:`~sttrl.env.episode.Episode`): decisions
    until the sample budget is spent, then the final model. Returns ``{run_dir, records, spent: {blocks, probes,
    total, budget}, decisions}``; the judge is separate."""
    from sttrl.env.runtime import EpisodeRuntime  # torch: loaded when an episode runs, not when the registry lists

    rt = EpisodeRuntime(cfg, run_dir, progress=False, data=data)
    cfg = rt.cfg
    if rt.completed_blocks() != [0]:
        raise ConfigError(f"run directory {run_dir} already holds trained blocks: lookahead episodes start fresh")
    ep = episode.Episode(rt)
    started = ep.start()
    progress = started.progress
    budget = budget_samples(cfg, progress.hp)
    spent, records = Spent(), []
    log = Path(run_dir) / LOG
    log.unlink(missing_ok=True)
    finished = None
    while finished is None:
        pend, probes, start = _next_decision(rt, progress, budget, spent)
        if pend is None:
            finished = ep.finish(progress)
            break
        outcome = ep.advance(pend, continue_from=start)
        shutil.rmtree(rt.run_dir / "probes", ignore_errors=True)
        tr, ev = outcome.train, outcome.eval
        assert tr is not None and ev is not None
        winner_samples = next((p["samples"] for p in probes if p["action"] == pend.action and p["status"] == "ok"), 0)
        spent.blocks += tr.samples + winner_samples
        row = {
            "step": pend.step,
            "observation": progress.observation,
            "probes": probes,
            "chosen": pend.action,
            "criterion": cfg.lookahead.criterion,
            "block_samples": tr.samples + winner_samples,
            "val_wer_after": ev.wer,
            "spent": {"blocks": spent.blocks, "probes": spent.probes, "total": spent.total, "budget": budget},
        }
        with log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        records.append(outcome.record.model_dump(mode="json", by_alias=True))
        progress, finished = outcome.progress, outcome.finished
        if on_line:
            on_line(
                f"step {pend.step}: {pend.action} ({len(probes)} probes), val WER {ev.wer:.3f}, "
                f"spent {spent.total}/{budget} samples ({spent.probes} on probes)"
            )
    return {
        "run_dir": str(run_dir),
        "run_id": rt.run_id,
        "start": started.start,
        "records": records,
        "final": finished.final,
        "decisions": len(records),
        "spent": {"blocks": spent.blocks, "probes": spent.probes, "total": spent.total, "budget": budget},
    }


def _cost(cfg: Config, progress: Progress, budget: int, spent: Spent) -> tuple[int, int, int]:
    """(a decision with probes, a plain block, what is left) in samples at the hyperparameters in force."""
    block = block_samples(cfg, progress.hp)
    k = len(candidates(cfg))
    if cfg.lookahead.charge_probes:
        return block + (k - 1) * min(cfg.lookahead.probe_samples, block), block, budget - spent.total
    return block, block, budget - spent.blocks  # teacher trajectories: the probes are extra compute


def _next_decision(
    rt: EpisodeRuntime, progress: Progress, budget: int, spent: Spent
) -> tuple[Pending | None, list[dict[str, Any]], Path | None]:
    """The next step: probed when the budget pays for the probes, a plain ``keep`` while a block fits, else None."""
    cfg = rt.cfg
    if progress.step >= cfg.env.max_actions:
        return None, [], None
    decision, block, left = _cost(cfg, progress, budget, spent)
    if left >= decision:
        pend, probes, start = lookahead_step(rt, progress, rt.run_dir / "probes" / f"block-{progress.step + 1:04d}")
        winner = next((p for p in probes if p["action"] == pend.action and p["status"] == "ok"), None)
        spent.probes += sum(p["samples"] for p in probes) - (winner["samples"] if winner else 0)
        spent.probe_list.append(sum(p["samples"] for p in probes))
        return pend, probes, start
    if left >= block:
        why = "lookahead: budget left pays for a block, not for probes"
        return episode.pending(progress, Decided(Action.KEEP, why, SOURCE), cfg), [], None
    return None, [], None
