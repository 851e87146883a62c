"""``pbt``: Population Based Training through Ray Tune, run as a trials controller.

A population of ``bench.pbt_population`` members (member 0 the instance's start, the others drawn from the
search space) each trains ``R = bench.pbt_blocks`` blocks of ``floor(total / (population x R))`` budget units
(steps or samples), so the population together spends at most the episode's budget. After every block a
member is evaluated once on validation and reports ``val_wer`` with a checkpoint (its block's training
checkpoint: weights, optimizer and RNG state, data cursor, global step) through ``ray.tune.report``.
``ray.tune.schedulers.PopulationBasedTraining`` (``synch=True``, ``perturbation_interval=1`` block,
``time_attr="blocks_done"``) then lets the worst quantile *exploit* a better member (restart from its
checkpoint: ``tune.get_checkpoint()`` -> :meth:`sttrl.env.runtime.EpisodeRuntime.adopt`) and *explore* (lr
perturbed x1.2 / x0.8 or resampled, batch size and frozen layers moved to a neighbouring value). The member
with the lowest validation WER at its last block is rebuilt from its checkpoint in ``runs/<name>/best`` and
judged.

Files: ``runs/bench-pbt-s<seed>/tune/`` is Ray Tune's experiment directory, with PBT's replay log
(``pbt_global.txt``, ``pbt_policy_*.txt``); ``members/`` one run directory per member segment (a segment
starts at the member's start or at an exploit); ``reports/`` one JSON per block. A cluster is started here on
loopback unless Ray is already initialized (its token-auth file and temp dir are removed at the end). An
interrupted search is restored with ``Tuner.restore``. PBT is not bit-reproducible: which member exploits
which depends on the order Ray delivers results.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from bench.budget import Budget, start_params, trial_hp
from bench.cluster import ray_cluster
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
from sttrl import extras
from sttrl.config import Config, config_from_dict
from sttrl.control import registry as registry
from sttrl.control.spec import ControllerSpec, register
from sttrl.errors import SttrlError
from sttrl.io import atomic_write_json
from sttrl.rundir import RUN_RECORD, block_name
from sttrl.train.blocks import Hyperparams
from sttrl.train.memory import release_memory


def pbt_blocks(cfg: Config) -> int:
    return cfg.bench.pbt_blocks or max(2, cfg.env.max_actions // 2)


def member_config(cfg: Config, hp: Hyperparams) -> Config:
    data = cfg.to_dict()
    data["train"] = {**data["train"], "lr": hp.lr, "batch_size": hp.batch_size, "freeze_layers": hp.freeze_layers}
    return config_from_dict(data)


def pbt_member(config: dict[str, Any]) -> None:
    """A Ray Tune function trainable: one member's blocks from its start or from an exploited checkpoint."""
    from ray import tune  # heavy and optional (the ray extra): only a pbt run imports it
    from ray.tune import Checkpoint

    from sttrl.env.runtime import EpisodeRuntime  # torch: the benchmark's CLI and dry run stay torch-free

    job = config["job"]
    cfg = config_from_dict(job["cfg"])
    hp = Hyperparams(
        float(config["lr"]), int(config["batch_size"]), int(job["grad_accum"]), int(config["freeze_layers"])
    )
    root = Path(job["root"])
    trial = tune.get_context().get_trial_id()
    segments = root / "members" / trial
    seg = segments / f"seg-{len(list(segments.glob('seg-*'))) if segments.is_dir() else 0:02d}"
    rt = EpisodeRuntime(member_config(cfg, hp), seg, progress=False, run_id=f"{job['name']}-{trial}-{seg.name}")
    done, adopted = 0, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            member = json.loads((Path(d) / "member.json").read_text())
            done, adopted = int(member["blocks_done"]), member["trial"]
            rt.adopt(Path(d) / "state")
    units, blocks = int(job["units"]), int(job["blocks"])
    per_step = hp.batch_size * hp.grad_accum if job["unit"] == "samples" else 1
    steps = max(1, units // per_step)
    k = 0
    while done < blocks:
        k += 1
        t0 = time.perf_counter()
        res = rt.train_block(k, hp, steps=steps)
        ev = rt.evaluate(k)
        done += 1
        row = {
            "trial": trial,
            "segment": str(seg),
            "adopted_from": adopted if k == 1 else None,
            "blocks_done": done,
            "hp": hp.to_dict(),
            "steps": res.steps,
            "steps_attempted": res.steps_attempted,
            "samples": res.samples,
            "spent": res.steps_attempted * per_step,
            "status": res.status,
            "global_step": res.global_step,
            "val_wer": ev.wer,
            "val_cer": ev.cer,
            "seconds": time.perf_counter() - t0,
        }
        atomic_write_json(root / "reports" / f"{trial}-b{done:03d}.json", row)
        out = seg / f"report-{done:03d}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(rt.ckpt_dir / block_name(k), out / "state")
        atomic_write_json(out / "member.json", {"trial": trial, "blocks_done": done, "segment": str(seg)})
        tune.report(
            {"val_wer": ev.wer, "blocks_done": done, "samples": res.samples, "status": res.status},
            checkpoint=Checkpoint.from_directory(str(out)),
        )
        shutil.rmtree(out, ignore_errors=True)  # persisted by Tune into the experiment directory


class PbtController:
    """Population Based Training through Ray Tune; see the module docstring."""

    name = "pbt"

    def run(self, ctx: BenchContext, seed: int, progress: BenchProgress) -> dict[str, Any]:
        name = ctx.run_name(self.name, seed)
        done = finished_earlier(ctx, name, progress)
        if done is not None:
            return done
        run_dir = ctx.out / "runs" / name
        b = ctx.budget
        clock = WallClock(ctx.out / "wall" / f"{name}.json")
        cfg = ctx.seed_config(seed)
        population, blocks = cfg.bench.pbt_population, pbt_blocks(cfg)
        units = b.total // (population * blocks)
        if units < 1:
            raise SttrlError(
                f"pbt: {population} members x {blocks} blocks leave less than one {b.unit[:-1]} per block "
                f"(budget {b.total} {b.unit})"
            )
        space = fit_batches(ctx.space(), b, units)
        start = Hyperparams.from_config(cfg.train, ctx.max_freeze())
        first = trial_hp(space, start_params(cfg, space, ctx.max_freeze()))
        first = Hyperparams(first.lr, start.batch_size, start.grad_accum, start.freeze_layers)
        job = {
            "cfg": cfg.to_dict(),
            "root": str(run_dir.resolve()),
            "name": name,
            "units": units,
            "blocks": blocks,
            "unit": b.unit,
            "grad_accum": space["grad_accum"],
        }
        note = "resumes" if (run_dir / "tune").is_dir() else "new population"
        progress.start_run(
            name,
            b.train_steps,
            b.steps_per_action,
            f"{note}: {population} members x {blocks} blocks of {units} {b.unit}",
        )
        clock.start()
        try:
            best_row = _fit(cfg, run_dir, job, space, first, population, blocks, ctx.search_seed(seed))
            clock.tick(force=True)
            rows = [json.loads(p.read_text()) for p in sorted((run_dir / "reports").glob("*.json"))]
            best_dir = _rebuild_best(cfg, run_dir, best_row)
            report, final = judge_trial(best_dir)
        finally:
            clock.tick(force=True)
            release_memory(collect=True)
        res = pbt_result(
            seed, name, run_dir, rows, best_row, best_dir, report, final, b, population, blocks, units, clock.seconds
        )
        atomic_write_json(run_dir / "result.json", res)
        progress.end_run(result_line(res) + f", best member {best_row['trial']} {best_row['hp']}")
        return {**res, "resumed": note}


def _fit(
    cfg: Config,
    run_dir: Path,
    job: dict[str, Any],
    space: dict[str, Any],
    first: Hyperparams,
    population: int,
    blocks: int,
    seed: int,
) -> dict[str, Any]:
    """Run (or restore) the Tune experiment; the best member's last report row."""
    ray = extras.load("ray", extra="ray", what="the pbt controller")
    from ray import tune  # the ray extra, checked just above
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search import BasicVariantGenerator

    lo, hi = space["lr"]
    f_lo, f_hi = space["freeze_layers"]
    dims = {
        "lr": tune.loguniform(lo, hi) if hi > lo else lo,
        "batch_size": tune.choice(list(space["batch_size"])),
        "freeze_layers": tune.choice(list(range(f_lo, f_hi + 1))),
    }
    mutations = {
        "lr": tune.loguniform(lo, hi) if hi > lo else [lo],
        "batch_size": list(space["batch_size"]),
        "freeze_layers": list(range(f_lo, f_hi + 1)),
    }
    random.seed(seed)  # PBT's explore draws from Python's generator in this process
    scheduler = PopulationBasedTraining(
        time_attr="blocks_done",
        metric="val_wer",
        mode="min",
        perturbation_interval=1,
        hyperparam_mutations=mutations,
        quantile_fraction=0.25,
        synch=True,
    )
    threads = cfg.run.threads or 1
    trainable = tune.with_resources(pbt_member, {"cpu": threads})
    exp = run_dir / "tune"
    with ray_cluster() if not ray.is_initialized() else nullcontext():
        if tune.Tuner.can_restore(str(exp)):
            tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={**dims, "job": job},
                tune_config=tune.TuneConfig(
                    scheduler=scheduler,
                    num_samples=population,
                    max_concurrent_trials=cfg.bench.pbt_max_concurrent,
                    reuse_actors=True,
                    search_alg=BasicVariantGenerator(
                        points_to_evaluate=[
                            {"lr": first.lr, "batch_size": first.batch_size, "freeze_layers": first.freeze_layers}
                        ],
                        random_state=seed,
                    ),
                ),
                run_config=tune.RunConfig(
                    name="tune",
                    storage_path=str(run_dir.resolve()),
                    verbose=0,
                    stop={"blocks_done": blocks},
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=4),
                ),
            )
        grid = tuner.fit()
    errors = [str(r.error) for r in grid if r.error]
    if errors and len(errors) == len(grid):
        raise SttrlError(f"pbt: every member failed, e.g. {errors[0][:300]}")
    rows = [json.loads(p.read_text()) for p in (run_dir / "reports").glob("*.json")]
    last = [r for r in rows if r["blocks_done"] == blocks]
    if not last:
        raise SttrlError("pbt: no member finished its blocks")
    return min(last, key=lambda r: (r["val_wer"], r["trial"]))


def _rebuild_best(cfg: Config, run_dir: Path, row: dict[str, Any]) -> Path:
    """The best member's final model in ``run_dir/best`` (a run record of its own, for the judge)."""
    from sttrl.env.runtime import EpisodeRuntime  # torch: the benchmark's CLI and dry run stay torch-free

    best = run_dir / "best"
    if (best / RUN_RECORD).is_file() and json.loads((best / RUN_RECORD).read_text()).get("final"):
        return best
    shutil.rmtree(best, ignore_errors=True)
    seg = Path(row["segment"])
    k = max(int(p.name.split("-")[1]) for p in (seg / "checkpoints").glob("block-*") if (p / "state.json").is_file())
    hp = Hyperparams(**row["hp"])
    rt = EpisodeRuntime(member_config(cfg, hp), best, progress=False, run_id=f"{run_dir.name}-best")
    rt.adopt(seg / "checkpoints" / block_name(k))
    rt.save_final()
    del rt
    return best


def pbt_result(
    seed: int,
    name: str,
    run_dir: Path,
    rows: list[dict[str, Any]],
    best: dict[str, Any],
    best_dir: Path,
    report: dict[str, Any],
    final: dict[str, Any],
    budget: Budget,
    population: int,
    blocks: int,
    units: int,
    wall_s: float,
) -> dict[str, Any]:
    """The run's result: the best member's judged numbers, every block report and the best-so-far curve."""
    rows = sorted(rows, key=lambda r: (r["blocks_done"], r["trial"]))
    res = search_result(
        "pbt",
        seed,
        name,
        run_dir,
        rows,
        best,
        best_dir,
        report,
        final,
        budget.unit,
        "best validation WER so far over the population's block reports",
        wall_s,
    )
    return {
        **res,
        "best_member": best["trial"],
        "population": population,
        "blocks": blocks,
        "units_per_block": units,
        "exploits": sum(1 for r in rows if r.get("adopted_from")),
        "reports": rows,
        "replay_log": sorted(str(p) for p in (run_dir / "tune").glob("pbt_*.txt")),
    }


def _pbt(cfg: Config, **_: Any) -> PbtController:
    return PbtController()


register(
    ControllerSpec(
        "pbt",
        "trials",
        _pbt,
        "Population Based Training (Ray Tune): exploit/explore at block boundaries, weights carried by checkpoint",
        packages=("ray",),
        extra="ray",
        color="#aec7e8",
    )
)
