"""``sha``: synchronous successive halving over block-level reports, run as a trials controller.

``K`` trials (``--optuna-trials``, default ``env.max_actions``): trial 0 is the instance's start, the others
static settings drawn from the search space with a generator seeded by the run's seed. Rungs keep
``ceil(K / eta^i)`` trials (``bench.sha_eta``, default 2) down to one. Each rung gets an equal share of the
budget that is left (``remaining // rungs left``), split evenly over its trials; a trial trains its share as
one more *block in its own run directory*, so a promoted trial **continues from its block checkpoint**
(weights, optimizer state, data cursor and global step), never restarts. After each block the trial is
evaluated once on validation; the best ``1/eta`` (lowest WER, lowest trial number on ties) are promoted.
The last rung's single trial is saved and judged. Total training never exceeds the episode's budget
(a trial trains ``floor(share / batch)`` steps, at least one; batch sizes above the first rung's share are
left out of the space), and the last rung gets everything that is left.

Why the rung logic is written here and not taken from Optuna's ``SuccessiveHalvingPruner`` /
``HyperbandPruner``: those pruners decide inside one running trial (``trial.report`` + ``should_prune``), so
a trial that is not pruned runs on to the maximum before the next one starts (asynchronous halving), the
budget a study spends depends on the order trials arrive, and continuing a trial later means keeping its
process alive. Synchronous rungs over run directories make continuation a plain ``train_block(i + 1)`` from
the block-``i`` checkpoint, the sample budget exact, and resume free: every (trial, rung) leaves
``trial-NNN/rung-I.json``, and a rerun reads finished rungs back and continues the first unfinished one.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.budget import Budget, start_params, trial_hp
from bench.common import WallClock
from bench.progress import BenchProgress
from bench.results import result_line
from bench.trials import (
    BenchContext,
    finished_earlier,
    fit_batches,
    judge_trial,
    search_result,
)
from sttrl.config import Config, config_from_dict
from sttrl.control import registry as registry
from sttrl.control.spec import ControllerSpec, register
from sttrl.data import build_speech_data
from sttrl.io import atomic_write_json
from sttrl.train.blocks import Hyperparams
from sttrl.train.memory import release_memory


def rung_sizes(k: int, eta: int) -> list[int]:
    """Trials alive at each rung: ``k, ceil(k/eta), ...`` down to 1."""
    sizes = [k]
    while sizes[-1] > 1:
        sizes.append(math.ceil(sizes[-1] / eta))
    return sizes


def sample_params(space: dict[str, Any], start: dict[str, Any], k: int, seed: int) -> list[dict[str, Any]]:
    """Trial 0 the start, the other ``k - 1`` drawn uniformly (lr log-uniform) with a seeded generator."""
    rng = np.random.default_rng([seed, 0x5A4])
    out = [dict(start)]
    lo, hi = space["lr"]
    for _ in range(k - 1):
        p: dict[str, Any] = {}
        if hi > lo:
            p["lr"] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if len(space["batch_size"]) > 1:
            p["batch_size"] = int(space["batch_size"][int(rng.integers(len(space["batch_size"])))])
        f_lo, f_hi = space["freeze_layers"]
        if f_hi > f_lo:
            p["freeze_layers"] = int(rng.integers(f_lo, f_hi + 1))
        out.append(p)
    return out


class ShaController:
    """Successive halving whose promoted trials continue from their checkpoints; see the module docstring."""

    name = "sha"

    def run(self, ctx: BenchContext, seed: int, progress: BenchProgress) -> dict[str, Any]:
        name = ctx.run_name(self.name, seed)
        done = finished_earlier(ctx, name, progress)
        if done is not None:
            return done
        run_dir = ctx.out / "runs" / name
        b = ctx.budget
        clock = WallClock(ctx.out / "wall" / f"{name}.json")
        cfg = ctx.seed_config(seed)
        eta = cfg.bench.sha_eta
        sizes = rung_sizes(b.optuna_trials, eta)
        space = fit_batches(ctx.space(), b, b.total // len(sizes) // sizes[0])  # the first rung's share
        start = start_params(cfg, space, ctx.max_freeze())
        params = sample_params(space, start, sizes[0], ctx.search_seed(seed))
        hps = [trial_hp(space, p) if i else _start_hp(cfg, space, ctx.max_freeze(), p) for i, p in enumerate(params)]
        note = "resumes" if run_dir.is_dir() else "new search"
        progress.start_run(name, b.train_steps, b.steps_per_action, f"{note}: {sizes[0]} trials, rungs {sizes}")
        clock.start()
        data: list[Any] = []
        records: list[dict[str, Any]] = []
        alive, spent = list(range(sizes[0])), 0
        try:
            for rung, size in enumerate(sizes):
                alive = alive[:size]
                share = (b.total - spent) // (len(sizes) - rung)
                units = share // len(alive)
                if rung == len(sizes) - 1:
                    units = b.total - spent  # the last trial gets everything left
                for t in alive:
                    rec = _rung(
                        cfg,
                        b,
                        run_dir,
                        name,
                        t,
                        rung,
                        hps[t],
                        units,
                        data,
                        progress,
                        clock,
                        final=rung == len(sizes) - 1,
                    )
                    records.append(rec)
                    spent += rec["spent"]
                    clock.tick(force=True)
                wer = {r["trial"]: r["val_wer"] for r in records if r["rung"] == rung}
                alive = sorted(alive, key=lambda t: (wer[t], t))
                if rung + 1 < len(sizes):
                    alive = self.promote(cfg, run_dir, rung, alive, sizes, records, hps, progress)
            best = next(r for r in records if r["trial"] == alive[0] and r["rung"] == len(sizes) - 1)
            report, final = judge_trial(Path(best["run_dir"]))
        finally:
            clock.tick(force=True)
            data.clear()
            release_memory(collect=True)
        res = sha_result(seed, name, run_dir, records, best, report, final, b, sizes, eta, clock.seconds, self.name)
        res.update(self.extra_result(run_dir))
        atomic_write_json(run_dir / "result.json", res)
        progress.end_run(result_line(res) + f", best trial {best['trial']} {best['hp']}")
        return {**res, "resumed": note}

    def promote(
        self,
        cfg: Config,
        run_dir: Path,
        rung: int,
        ranked: list[int],
        sizes: list[int],
        records: list[dict[str, Any]],
        hps: list[Hyperparams],
        progress: BenchProgress,
    ) -> list[int]:
        """The trials that continue after ``rung`` (``ranked``: best validation WER first; ``sizes``: trials per
        rung): the best ``sizes[rung + 1]``. A subclass may choose otherwise and change the survivors'
        hyperparameters in ``hps`` (see bench.hybrid)."""
        return ranked[: sizes[rung + 1]]

    def extra_result(self, run_dir: Path) -> dict[str, Any]:
        """Fields a subclass adds to the run's result."""
        return {}


def _start_hp(cfg: Config, space: dict[str, Any], max_freeze: int, params: dict[str, Any]) -> Hyperparams:
    """Trial 0: the instance's start (its lr clipped into the space, as the enqueued TPE trial)."""
    start = Hyperparams.from_config(cfg.train, max_freeze)
    return Hyperparams(float(params.get("lr", start.lr)), start.batch_size, start.grad_accum, start.freeze_layers)


def _rung(
    cfg: Config,
    b: Budget,
    run_dir: Path,
    name: str,
    trial: int,
    rung: int,
    hp: Hyperparams,
    units: int,
    data: list[Any],
    progress: BenchProgress,
    clock: WallClock,
    final: bool,
) -> dict[str, Any]:
    """Block ``rung + 1`` of ``trial`` (continuing from block ``rung``'s checkpoint) and its evaluation;
    ``trial-NNN/rung-I.json`` holds the record (read back when present)."""
    from sttrl.env.runtime import EpisodeRuntime  # torch: the benchmark's CLI and dry run stay torch-free

    tdir = run_dir / f"trial-{trial:03d}"
    rec_path = tdir / f"rung-{rung}.json"
    if rec_path.is_file():
        return json.loads(rec_path.read_text())
    tdata = cfg.to_dict()
    tdata["train"] = {**tdata["train"], "lr": hp.lr, "batch_size": hp.batch_size, "freeze_layers": hp.freeze_layers}
    tcfg = config_from_dict(tdata)
    if not data:
        data.append(build_speech_data(tcfg.data, progress=False))
    t0 = time.perf_counter()
    rt = EpisodeRuntime(tcfg, tdir, progress=False, data=data[0], run_id=f"{name}-trial-{trial:03d}")
    steps = max(1, units // b.spent(1, hp))
    progress.line(
        f"  {name} rung {rung} trial {trial}: lr {hp.lr:.3g} batch {hp.batch_size} frozen "
        f"{hp.freeze_layers}, {steps} steps from global step {rt.trainer.state.global_step}"
    )
    res = rt.train_block(rung + 1, hp, steps=steps, on_step=lambda _i: clock.tick())
    ev = rt.evaluate(rung + 1)
    if final:
        rt.save_final()
    rec = {
        "trial": trial,
        "rung": rung,
        "hp": hp.to_dict(),
        "units": units,
        "steps": res.steps,
        "steps_attempted": res.steps_attempted,
        "samples": res.samples,
        "spent": b.spent(res.steps_attempted, hp),
        "status": res.status,
        "global_step": rt.trainer.state.global_step,
        "val_wer": ev.wer,
        "val_cer": ev.cer,
        "seconds": time.perf_counter() - t0,
        "run_dir": str(tdir),
    }
    atomic_write_json(rec_path, rec)
    progress.line(f"  {name} rung {rung} trial {trial}: {res.status}, validation WER {ev.wer:.3f}")
    del rt
    release_memory(collect=True)
    return rec


def sha_result(
    seed: int,
    name: str,
    run_dir: Path,
    records: list[dict[str, Any]],
    best: dict[str, Any],
    report: dict[str, Any],
    final: dict[str, Any],
    budget: Budget,
    sizes: list[int],
    eta: int,
    wall_s: float,
    controller: str = "sha",
) -> dict[str, Any]:
    """The run's result: the survivor's judged numbers, every rung record and the best-so-far curve."""
    res = search_result(
        controller,
        seed,
        name,
        run_dir,
        records,
        best,
        Path(best["run_dir"]),
        report,
        final,
        budget.unit,
        "best validation WER so far over rung evaluations (promoted trials continue)",
        wall_s,
    )
    return {**res, "best_trial": best["trial"], "rungs": sizes, "eta": eta, "trials": records}


def _sha(cfg: Config, **_: Any) -> ShaController:
    return ShaController()


register(
    ControllerSpec(
        "sha",
        "trials",
        _sha,
        "successive halving over blocks; promoted trials continue from their checkpoints",
        color="#bcbd22",
    )
)
