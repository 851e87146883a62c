"""Where the benchmark's runs execute: ``local`` (one after another in this process), ``pool`` (each run in a fresh
process of a local pool of ``--workers`` processes: concurrent episodes on one machine or one GPU without Ray) or
``ray`` (each run a Ray task on a local cluster started here, or on an existing cluster across machines through
``--address``; see :mod:`bench.cluster`).

A pool process or a Ray task runs :func:`run_job`: the same code as the local executor (the episode through the
shared checkpointer, ``DIR/checkpoints.sqlite`` or a Postgres URL, or the trials controller), so for the same
seeds every executor gives the same numbers, and a benchmark interrupted on one continues on another. Each Ray
task reserves ``cpus_per_episode`` CPUs (torch uses ``run.threads``) and ``gpus_per_episode`` (fractional) GPUs.
Workers resolve their own secrets from the environment or .env (nothing secret is sent as a task argument).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

import bench.controllers  # noqa: F401 - registers every controller in this process (a worker's too)
from bench.budget import budget_of
from bench.cluster import check_judge_key, check_shared, ray_cluster
from bench.episodes import run_episode
from bench.progress import BenchProgress
from bench.replicates import Slot
from bench.trials import BenchContext
from graph.checkpointer import open_checkpointer
from graph.run import quiet_library_bars
from sttrl import extras
from sttrl.config import config_from_dict
from sttrl.control import registry as registry
from sttrl.errors import ConfigError, SttrlError
from sttrl.train.memory import limit_arenas

EXECUTORS = ("local", "pool", "ray")
RUN_ERRORS = (SttrlError, RuntimeError, ValueError, OSError)  # a run that fails this way is recorded, not raised


@dataclass(frozen=True)
class Job:
    """One run: its place in the plan, its controller and its (instance, replicate)."""

    index: int
    controller: str
    slot: Slot


# what a job needs, as plain arguments a spawned process or a Ray task can receive
JobArgs = Callable[[Job], tuple[Any, ...]]
OnResult = Callable[[int, dict[str, Any]], None]


def check_executor(name: str) -> None:
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    if name == "ray":
        extras.require("ray", extra="ray", what="--executor ray")


def error_result(controller: str, slot: Slot, exc: BaseException) -> dict[str, Any]:
    """The record of a run that failed: its keys and the error in one line."""
    return {
        **slot_fields(slot),
        "controller": controller,
        "seed": slot.seed,
        "thread_id": slot.name(controller),
        "status": "error",
        "error": f"{type(exc).__name__}: {exc}",
    }


def slot_fields(slot: Slot) -> dict[str, Any]:
    """What every run's result records of its slot: the replicate and its data-order seed."""
    return {"replicate": slot.replicate, "data_seed": slot.data_seed}


def run_one(
    compiled: Any,
    ctx: BenchContext,
    controller: str,
    slot: Slot,
    model: str | None,
    progress: BenchProgress,
    agent_factory: Any = None,
) -> dict[str, Any]:
    """Run (or resume, or read back) one run with any controller kind; a failure is recorded, not raised."""
    try:
        spec = registry.REGISTRY[controller]
        if spec.kind == "trials":
            injected = agent_factory(controller, ctx.cfg) if agent_factory else None  # a test's chat model (hybrid)
            opts = {"chat_model": injected} if injected is not None else {}
            res = spec.factory(ctx.cfg, **opts).run(ctx.for_replicate(slot.replicate), slot.seed, progress)
        else:
            res = run_episode(compiled, ctx.cfg, ctx.out, controller, slot, model, agent_factory, progress)
    except RUN_ERRORS as exc:
        res = error_result(controller, slot, exc)
        progress.end_run(f"error: {res['error']}")
    return {**res, **slot_fields(slot)}


def run_job(
    cfg_data: dict[str, Any],
    out: str,
    controller: str,
    seed: int,
    replicate: int,
    model: str | None,
    optuna_trials: int | None,
    checkpointer: str,
) -> dict[str, Any]:
    """One run in a fresh process (a pool process or a Ray worker): build what the run needs and run or resume it."""
    from graph.graph import GRAPH_NAME, build_graph  # langgraph: loaded in workers, not by the CLI's dry run

    limit_arenas()
    quiet_library_bars(everything=True)  # a worker's output goes to logs: no bars at all
    cfg = config_from_dict(cfg_data)
    ctx = BenchContext(cfg, Path(out), budget_of(cfg, optuna_trials))
    progress = BenchProgress(Console(quiet=True), 1, quiet=True)
    slot = Slot(seed, replicate)
    try:
        with open_checkpointer(checkpointer) as saver:
            compiled = build_graph().compile(checkpointer=saver, name=GRAPH_NAME)
            return run_one(compiled, ctx, controller, slot, model, progress)
    except RUN_ERRORS as exc:  # the checkpointer could not be opened
        return error_result(controller, slot, exc)


def run_on_ray(
    jobs: Sequence[Job],
    job_args: JobArgs,
    on_result: OnResult,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_episode: float = 1,
    gpus_per_episode: float = 0,
    shared: Sequence[Path] = (),
) -> None:
    """Submit every job as a Ray task; ``on_result(index, result)`` as each ends. On an existing cluster
    (``address``) every node must first see the ``shared`` directories (:func:`bench.cluster.check_shared`) and
    judge with this machine's key (:func:`bench.cluster.check_judge_key`)."""
    with ray_cluster(address, num_cpus, None) as ray:
        if address:
            check_shared(ray, shared)
            check_judge_key(ray)
        task = ray.remote(num_cpus=cpus_per_episode, num_gpus=gpus_per_episode, max_retries=0)(run_job)
        refs = {task.remote(*job_args(j)): j for j in jobs}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            j = refs.pop(done[0])
            try:
                res = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - a worker that died or raised outside the run is recorded
                res = error_result(j.controller, j.slot, exc)
            on_result(j.index, res)


def run_on_pool(jobs: Sequence[Job], job_args: JobArgs, on_result: OnResult, *, workers: int) -> None:
    """Every job in a fresh spawned process (torch's thread pools, allocator and caches start clean, CUDA too;
    a process per run returns its memory), at most ``workers`` at once; ``on_result`` as each ends."""
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_job, *job_args(j)): j for j in jobs}
        for fut in cf.as_completed(futures):
            j = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory) is recorded
                res = error_result(j.controller, j.slot, exc)
            on_result(j.index, res)
