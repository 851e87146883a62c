"""``tpe`` (alias ``optuna``): Optuna's TPE over static settings, run as a trials controller.

``K`` trials (``--optuna-trials``, default ``env.max_actions``) share the episode's training budget: each
is a fresh model from the same starting weights (the seed), trained ``floor(total / K)`` steps or samples
(``env.budget_unit``; see :mod:`bench.budget`) with one static setting and evaluated once on validation. The
instance's start is enqueued as trial 0; the sampler is ``TPESampler(seed=s * 1000 + i,
n_startup_trials=clamp(K // 2, 1, 10))`` (``s`` the run's data-order seed: the instance's for replicate 0) for the
``i``-th
trial (a fresh seeded sampler per trial keeps a resumed study identical to an uninterrupted one); the lr
range stops at ``bench.tpe_lr_max``. The trial with the lowest validation WER (earliest on ties) is
saved and scored by the judge, which Optuna never sees.

Resume: one study per seed in ``DIR/optuna.sqlite`` plus one ``trial.json`` per finished trial; a
finished trial is never trained again, an interrupted one continues in its directory with its params.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.budget import Budget, optuna_distributions, start_params, trial_hp
from bench.common import FAULTS, WallClock
from bench.progress import BenchProgress
from bench.results import result_line
from bench.trials import BenchContext, finished_earlier, judge_trial
from sttrl import extras
from sttrl.config import Config, config_from_dict
from sttrl.control import registry as registry
from sttrl.control.spec import ControllerSpec, register
from sttrl.data import build_speech_data
from sttrl.io import atomic_write_json
from sttrl.train.memory import release_memory


class TpeController:
    """Optuna TPE over static settings; see the module docstring."""

    def __init__(self, name: str = "tpe") -> None:
        self.name = name

    def run(self, ctx: BenchContext, seed: int, progress: BenchProgress) -> dict[str, Any]:
        optuna = extras.load("optuna", extra="bench", what="the tpe controller")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        name = ctx.run_name(self.name, seed)
        done = finished_earlier(ctx, name, progress)
        if done is not None:
            return done
        run_dir = ctx.out / "runs" / name
        result_path = run_dir / "result.json"
        b = ctx.budget
        cfg = ctx.seed_config(seed)
        space = ctx.space()
        dists = optuna_distributions(space)
        storage = f"sqlite:///{(ctx.out / 'optuna.sqlite').resolve()}"
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
        first = start_params(cfg, space, ctx.max_freeze())
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(first)  # trial 0 is the instance's start
        done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        note = f"resumes after {len(done)} of {b.optuna_trials} trials" if done else "new study"
        progress.start_run(name, b.steps_per_trial * b.optuna_trials, b.steps_per_trial, note)
        clock = WallClock(ctx.out / "wall" / f"{name}.json")
        clock.start()
        data: list[Any] = []  # built once, shared by the trials
        try:
            while True:
                trials = study.get_trials(deepcopy=False)
                complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
                if len(complete) >= b.optuna_trials:
                    break
                running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
                if running and set(running[0].params) != set(dists):  # killed while asking: ask again
                    study.tell(running[0].number, state=optuna.trial.TrialState.FAIL)
                    continue
                if running:
                    number, params = running[0].number, dict(running[0].params)
                else:
                    study.sampler = optuna.samplers.TPESampler(
                        seed=(ctx.search_seed(seed) * 1000 + len(complete)) % 2**32,
                        n_startup_trials=b.n_startup_trials,
                    )
                    trial = study.ask(dists)
                    number, params = trial.number, dict(trial.params)
                rec = _trial(cfg, b, run_dir, name, number, len(complete), params, space, data, progress, clock)
                study.tell(number, rec["val_wer"])
                clock.tick(force=True)
                _prune_trial_files(run_dir)
            numbers = sorted(
                t.number for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
            )
            records = [json.loads((run_dir / f"trial-{n:03d}" / "trial.json").read_text()) for n in numbers]
            best = min(records, key=lambda t: (t["val_wer"], t["number"]))
            report, final = judge_trial(Path(best["run_dir"]))
        finally:
            clock.tick(force=True)
            data.clear()
            release_memory(collect=True)
        res = tpe_result(self.name, seed, name, run_dir, records, best, report, final, space, b, first, clock.seconds)
        atomic_write_json(result_path, res)
        progress.end_run(result_line(res) + f", best trial {best['number']} {best['hp']}")
        return {**res, "resumed": note}


def _trial(
    cfg: Config,
    b: Budget,
    run_dir: Path,
    name: str,
    number: int,
    index: int,
    params: dict[str, Any],
    space: dict[str, Any],
    data: list[Any],
    progress: BenchProgress,
    clock: WallClock,
) -> dict[str, Any]:
    """Train and evaluate one trial in ``run_dir/trial-NNN`` (resumes there); writes ``trial.json``."""
    from sttrl.env.runtime import EpisodeRuntime  # torch: the benchmark's CLI and dry run stay torch-free

    tdir = run_dir / f"trial-{number:03d}"
    rec_path = tdir / "trial.json"
    if rec_path.is_file():
        return json.loads(rec_path.read_text())
    hp = trial_hp(space, params)
    data_cfg = cfg.to_dict()
    data_cfg["train"] = {
        **data_cfg["train"],
        "lr": hp.lr,
        "batch_size": hp.batch_size,
        "freeze_layers": hp.freeze_layers,
    }
    tcfg = config_from_dict(data_cfg)
    t0 = time.perf_counter()
    if not data:
        data.append(build_speech_data(tcfg.data, progress=False))
    rt = EpisodeRuntime(tcfg, tdir, progress=False, data=data[0], run_id=f"{name}-trial-{number:03d}")
    base = index * b.steps_per_trial

    def on_step(info: Any) -> None:
        clock.tick()
        progress.steps(base + info.step_in_block, f"trial {number} loss {info.loss:.3f}")

    steps = b.steps_for(b.units_per_trial, hp)
    progress.line(
        f"  {name} trial {number}: lr {hp.lr:.3g} batch {hp.batch_size} frozen {hp.freeze_layers}, {steps} steps"
    )
    res = rt.train_block(1, rt.initial_hp(), steps=steps, on_step=on_step)
    ev = rt.evaluate(1)
    earlier = [json.loads(p.read_text())["val_wer"] for p in run_dir.glob("trial-*/trial.json")]
    if not earlier or ev.wer < min(earlier):
        rt.save_final()  # only the best trial so far keeps a model for the judge
    rec = {
        "number": number,
        "index": index,
        "params": params,
        "hp": rt.initial_hp().to_dict(),
        "status": res.status,
        "note": res.note,
        "steps": res.steps,
        "steps_attempted": res.steps_attempted,
        "samples": res.samples,
        "spent": b.spent(res.steps_attempted, hp),
        "mean_loss": res.mean_loss,
        "val_wer": ev.wer,
        "val_cer": ev.cer,
        "train_seconds": res.seconds,
        "eval_seconds": ev.seconds,
        "seconds": time.perf_counter() - t0,
        "run_dir": str(tdir),
    }
    atomic_write_json(rec_path, rec)
    progress.line(f"  {name} trial {number}: {res.status}, validation WER {ev.wer:.3f} CER {ev.cer:.3f}")
    del rt
    return rec


def _prune_trial_files(run_dir: Path) -> None:
    """Finished trials keep their records, evaluations and (the best one only) the final model; their
    training checkpoints are removed to save disk."""
    recs = [json.loads(p.read_text()) for p in sorted(run_dir.glob("trial-*/trial.json"))]
    if not recs:
        return
    best = min(recs, key=lambda t: (t["val_wer"], t["number"]))
    for r in recs:
        tdir = Path(r["run_dir"])
        shutil.rmtree(tdir / "checkpoints", ignore_errors=True)
        if r["number"] != best["number"]:
            shutil.rmtree(tdir / "final", ignore_errors=True)


def tpe_result(
    controller: str,
    seed: int,
    name: str,
    run_dir: Path,
    trials: list[dict[str, Any]],
    best: dict[str, Any],
    report: dict[str, Any],
    final: dict[str, Any],
    space: dict[str, Any],
    budget: Budget,
    first: dict[str, Any],
    wall_s: float,
) -> dict[str, Any]:
    """The run's result: the best trial's judged numbers, every trial, and the best-so-far curve."""
    x, y, spent, best_so_far = [], [], 0, math.inf
    for t in trials:
        spent += t.get("spent", t["steps_attempted"])
        best_so_far = min(best_so_far, t["val_wer"])
        x.append(spent)
        y.append(best_so_far)
    faults = Counter(t["status"] for t in trials if t["status"] in FAULTS)
    return {
        "controller": controller,
        "seed": seed,
        "thread_id": name,
        "optuna_study": name,
        "run_dir": str(run_dir),
        "judged_run_dir": best["run_dir"],
        "status": "finished",
        "hidden_wer": report.get("wer"),
        "hidden_cer": report.get("cer"),
        "score": report.get("score"),
        "judge_passed_all_checks": report.get("passed_all_checks"),
        "start_val_wer": None,
        "best_val_wer": best["val_wer"],
        "final_val_wer": best["val_wer"],
        "train_steps": sum(t["steps_attempted"] for t in trials),
        "train_samples": sum(t.get("samples", 0) for t in trials),
        "train_steps_kept": sum(t["steps"] for t in trials),
        "evaluations": len(trials),
        "decisions": len(trials),
        "end_reason": "budget",
        "best_trial": best["number"],
        "trials": trials,
        "space": {
            "lr_log_uniform": list(space["lr"]),
            "batch_size": list(space["batch_size"]),
            "freeze_layers": list(space["freeze_layers"]),
            "grad_accum": space["grad_accum"],
        },
        "sampler": {
            "name": "TPESampler",
            "seed": f"{seed} * 1000 + trial index",
            "n_startup_trials": budget.n_startup_trials,
            "enqueued_start": first,
        },
        "faults": {k: faults.get(k, 0) for k in FAULTS},
        "final_sha256": final.get("sha256"),
        "wall_s": wall_s,
        "curve": {
            "x": x,
            "y": y,
            "trial_wer": [t["val_wer"] for t in trials],
            "unit": budget.unit,
            "kind": "best validation WER so far over trials, in trial order (each trial starts from the "
            "starting weights)",
        },
    }


def _tpe(cfg: Config, **_: Any) -> TpeController:
    return TpeController("tpe")


def _optuna_alias(cfg: Config, **_: Any) -> TpeController:
    return TpeController("optuna")


register(
    ControllerSpec(
        "tpe",
        "trials",
        _tpe,
        "Optuna TPE over static settings on the same training steps (trials restart)",
        packages=("optuna",),
        extra="bench",
        color="#8c564b",
    )
)
register(
    ControllerSpec(
        "optuna",
        "trials",
        _optuna_alias,
        "alias of tpe (runs are named bench-optuna-s<seed>)",
        packages=("optuna",),
        extra="bench",
        color="#17becf",
    )
)
