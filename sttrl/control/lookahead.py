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

Which probe wins is a *criterion* from :data:`CRITERIA` (``lookahead.criterion``): ``train_loss``, ``val_wer`` and
``val_loss`` here; another module adds one with :func:`register_criterion` (a function of the runtime holding the
probe's end and the probe's losses; lower is better). ``lookahead.probe_share`` caps the share of the budget that
losing probes may spend. Common random numbers: every probe of a decision starts from the same block checkpoint, so
from the same weights, optimizer and RNG state and the same data cursor; each probe records its ``cursor`` (start,
end) so a test checks it. A tuned file (``python -m bench.tune_lookahead``, ``bench.lookahead_file``) sets the
``lookahead.*`` values in the benchmark (:func:`configure`)."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sttrl.config import Config, config_from_dict
from sttrl.control.schedule import read_tuned
from sttrl.env import episode
from sttrl.env.actions import Action
from sttrl.env.decision import Decided
from sttrl.env.phases import Pending, Progress
from sttrl.errors import ConfigError
from sttrl.rundir import block_name
from sttrl.train.blocks import Hyperparams

if TYPE_CHECKING:
    from sttrl.env.runtime import EpisodeRuntime

LOG = "lookahead.jsonl"
SOURCE = "lookahead"
TUNED_SCHEMA = "sttrl.lookahead/1"

Criterion = Callable[["EpisodeRuntime", list[float]], float]
CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, fn: Criterion) -> Criterion:
    """Add a probe criterion: ``fn(rt, losses)`` scores the model the runtime holds at a probe's end (lower wins)."""
    old = CRITERIA.get(name)
    if old is not None and old is not fn:
        raise ValueError(f"lookahead criterion {name!r} is already registered")
    CRITERIA[name] = fn
    return fn


def _train_loss(rt: EpisodeRuntime, losses: list[float]) -> float:
    tail = losses[len(losses) // 2 :]
    return float(sum(tail) / len(tail))


def _val_wer(rt: EpisodeRuntime, losses: list[float]) -> float:
    return float(rt.score_current(rt.cfg.lookahead.probe_eval_utterances).wer)


register_criterion("train_loss", _train_loss)
register_criterion("val_wer", _val_wer)


def _val_loss(rt: EpisodeRuntime, losses: list[float]) -> float:
    """The probe's teacher-forced validation loss on ``probe_eval_utterances`` (no decoding: sttrl.eval.loss)."""
    return float(rt.validation_loss(rt.cfg.lookahead.probe_eval_utterances).loss)


register_criterion("val_loss", _val_loss)


def criterion_of(cfg: Config) -> Criterion:
    """The registered criterion ``lookahead.criterion`` names; a ConfigError lists the valid names."""
    fn = CRITERIA.get(cfg.lookahead.criterion)
    if fn is None:
        raise ConfigError(f"lookahead.criterion {cfg.lookahead.criterion!r} is unknown; valid: {', '.join(CRITERIA)}")
    return fn


def load_tuned(path: str | Path) -> dict[str, Any]:
    """A tuned lookahead file (``sttrl.lookahead/1``); ConfigError when missing or of another schema."""
    return read_tuned(path, TUNED_SCHEMA, "lookahead")


def with_settings(cfg: Config, settings: dict[str, Any]) -> Config:
    """``cfg`` with these ``lookahead.*`` values (validated as the config is)."""
    data = cfg.to_dict()
    data["lookahead"] = {**data["lookahead"], **settings}
    return config_from_dict(data)


def configure(cfg: Config) -> Config:
    """The lookahead's config in the benchmark: the tuned file's settings when ``bench.lookahead_file`` is set."""
    if cfg.bench.lookahead_file is None:
        return cfg
    return with_settings(cfg, load_tuned(cfg.bench.lookahead_file)["settings"])


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


def probe(rt: EpisodeRuntime, progress: episode.Progress, action: str, probe_dir: Path) -> dict[str, Any]:
    """Train ``action``'s probe from block ``progress.step``'s checkpoint; its checkpoint goes to ``probe_dir``."""
    from sttrl.train.checkpoint import read_checkpoint_record  # torch: loaded when a probe runs

    pend = episode.pending(progress, Decided(Action(action), "probe", SOURCE), rt.cfg)
    hp = pend.hp
    per_step = hp.batch_size * hp.grad_accum
    steps = max(1, min(rt.steps_for(hp), math.ceil(rt.cfg.lookahead.probe_samples / per_step)))
    t0 = time.perf_counter()
    start = read_checkpoint_record(rt.ckpt_dir / block_name(progress.step))["trainer"]["cursor"]
    res = rt.probe(progress.step, hp, steps, save_to=probe_dir)
    ok = res.status == "ok" and bool(res.losses)
    value = criterion_of(rt.cfg)(rt, list(res.losses)) if ok else math.inf
    return {
        "action": action,
        "hp_after": pend.hp_after,
        "clamped": pend.clamped,
        "steps": steps,
        "samples": res.samples if res.status == "ok" else res.steps_attempted * per_step,
        "status": res.status,
        "losses": list(res.losses),
        "value": value,
        "cursor": [start, rt.trainer.state.cursor if ok else start],
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

    criterion_of(cfg), candidates(cfg)  # a bad name fails before anything trains
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


def _cost(cfg: Config, progress: episode.Progress, budget: int, spent: Spent) -> tuple[int, int, int, bool]:
    """(a decision with probes, a plain block, what is left, whether the probes fit in ``lookahead.probe_share``) in
    samples at the hyperparameters in force."""
    block = block_samples(cfg, progress.hp)
    losers = (len(candidates(cfg)) - 1) * min(cfg.lookahead.probe_samples, block)
    share_fits = spent.probes + losers <= cfg.lookahead.probe_share * budget + 1e-9
    if cfg.lookahead.charge_probes:
        return block + losers, block, budget - spent.total, share_fits
    return block, block, budget - spent.blocks, share_fits  # teacher trajectories: the probes are extra compute


def _next_decision(
    rt: EpisodeRuntime, progress: Progress, budget: int, spent: Spent
) -> tuple[Pending | None, list[dict[str, Any]], Path | None]:
    """The next step: probed when the budget pays for the probes, a plain ``keep`` while a block fits, else None."""
    cfg = rt.cfg
    if progress.step >= cfg.env.max_actions:
        return None, [], None
    decision, block, left, share_fits = _cost(cfg, progress, budget, spent)
    if left >= decision and share_fits:
        pend, probes, start = lookahead_step(rt, progress, rt.run_dir / "probes" / f"block-{progress.step + 1:04d}")
        winner = next((p for p in probes if p["action"] == pend.action and p["status"] == "ok"), None)
        spent.probes += sum(p["samples"] for p in probes) - (winner["samples"] if winner else 0)
        spent.probe_list.append(sum(p["samples"] for p in probes))
        return pend, probes, start
    if left >= block:
        why = (
            "lookahead: budget left pays for a block, not for probes"
            if share_fits
            else f"lookahead: the probes' share of the budget ({cfg.lookahead.probe_share:g}) is spent; keep"
        )
        return episode.pending(progress, Decided(Action.KEEP, why, SOURCE), cfg), [], None
    return None, [], None
