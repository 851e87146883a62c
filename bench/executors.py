"""Where the benchmark's runs execute: ``local`` (one after another in this process), ``pool`` (each run in a
fresh process of a local pool of ``--workers`` processes: concurrent episodes on one machine or one GPU without
Ray) or ``ray`` (each run a Ray task on a local cluster started here, or an existing one through ``--address``).

A pool process or a Ray task runs :func:`run_job`: the same code as the local executor (the episode through
the shared checkpoint database ``DIR/checkpoints.sqlite``, or the trials controller), so for the same
seeds both executors give the same numbers, and a benchmark interrupted on one continues on the other.
Each task reserves ``cpus_per_episode`` CPUs (torch uses ``run.threads``) and ``gpus_per_episode``
(fractional) GPUs. A cluster started here has node address 127.0.0.1, a temp dir of its own (removed at
shutdown), and runs without Ray 2.60's token auth (``RAY_AUTH_MODE=disabled`` unless the environment sets
it): with token auth Ray writes ``~/.ray/auth_token`` and keeps the token in the process, so removing the
file at shutdown made the next cluster started by the same process hang waiting for its GCS (the PBT test
followed by the Ray executor test in one pytest run). The cost: while the cluster lives, other local
processes of the machine could connect to it unauthenticated. A token file Ray writes anyway is still
removed, and the ``RAY_*`` variables Ray exports into the process are restored at shutdown. Workers resolve
their own secrets from the environment or .env
(nothing secret is sent as a task argument).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import thread_id
from sttrl import extras
from sttrl.errors import ConfigError, SttrlError

EXECUTORS = ("local", "pool", "ray")
AUTH_TOKEN = Path.home() / ".ray" / "auth_token"


def check_executor(name: str) -> None:
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    if name == "ray":
        extras.require("ray", extra="ray", what="--executor ray")


def error_result(controller: str, seed: int, exc: BaseException) -> dict[str, Any]:
    return {
        "controller": controller,
        "seed": seed,
        "thread_id": thread_id(controller, seed),
        "status": "error",
        "error": f"{type(exc).__name__}: {exc}",
    }


def run_job(
    cfg_data: dict[str, Any], out: str, controller: str, seed: int, model: str | None, optuna_trials: int | None
) -> dict[str, Any]:
    """One run in a fresh process (a Ray worker): build what the run needs and run or resume it."""
    from rich.console import Console

    import bench.core  # noqa: F401 - registers every controller in this process
    from bench.budget import budget_of
    from bench.episodes import run_episode
    from bench.progress import BenchProgress
    from bench.trials import BenchContext
    from graph.checkpointer import open_checkpointer
    from graph.graph import GRAPH_NAME, build_graph
    from graph.run import quiet_library_bars
    from sttrl.config import config_from_dict
    from sttrl.control import registry as registry
    from sttrl.train.memory import limit_arenas

    limit_arenas()
    quiet_library_bars(everything=True)  # a worker's output goes to logs: no bars at all
    cfg = config_from_dict(cfg_data)
    progress = BenchProgress(Console(quiet=True), 1, quiet=True)
    try:
        spec = registry.get(controller)
        if spec.kind == "trials":
            return spec.factory(cfg).run(BenchContext(cfg, Path(out), budget_of(cfg, optuna_trials)), seed, progress)
        with open_checkpointer(str(Path(out) / "checkpoints.sqlite")) as saver:
            compiled = build_graph().compile(checkpointer=saver, name=GRAPH_NAME)
            return run_episode(compiled, cfg, Path(out), controller, seed, model, None, progress)
    except (SttrlError, RuntimeError, ValueError, OSError) as exc:
        return error_result(controller, seed, exc)


@contextmanager
def ray_cluster(
    address: str | None = None, num_cpus: int | None = None, num_gpus: float | None = None
) -> Iterator[Any]:
    """``ray`` connected to ``address``, or to a local cluster started here on loopback (its temp dir and a
    token-auth file it created are removed at shutdown, and the ``RAY_*`` variables Ray exported into this
    process are restored, so another cluster can start here later)."""
    ray = extras.load("ray", extra="ray", what="a Ray cluster")
    temp_dir = None if address else tempfile.mkdtemp(prefix="sttrl-ray-")
    had_token = AUTH_TOKEN.exists()
    ray_env = {k: v for k, v in os.environ.items() if k.startswith("RAY_")}
    if not address:  # a loopback cluster of this process only: no token (see the module docstring)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    repo = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)}
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        else:
            ray.init(
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                log_to_driver=False,
                _temp_dir=temp_dir,
                _node_ip_address="127.0.0.1",
                runtime_env={"env_vars": env},
            )
        yield ray
    finally:
        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        if not had_token and AUTH_TOKEN.exists():
            AUTH_TOKEN.unlink()
        # ray.init exports settings such as RAY_AUTH_MODE=token into this process; left behind, a later cluster
        # started here would wait for the token file just removed (its GCS never starts): restore them
        for k in [k for k in os.environ if k.startswith("RAY_") and k not in ray_env]:
            del os.environ[k]
        os.environ.update(ray_env)


def run_on_ray(
    jobs: Sequence[tuple[int, str, int]],
    job_args: Callable[[str, int], tuple[Any, ...]],
    on_result: Callable[[int, dict[str, Any]], None],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_episode: float = 1,
    gpus_per_episode: float = 0,
) -> None:
    """Submit every ``(index, controller, seed)`` job as a Ray task; ``on_result(index, result)`` as each ends."""
    with ray_cluster(address, num_cpus, None) as ray:
        task = ray.remote(num_cpus=cpus_per_episode, num_gpus=gpus_per_episode, max_retries=0)(run_job)
        refs = {task.remote(*job_args(c, s)): (i, c, s) for i, c, s in jobs}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            i, c, s = refs.pop(done[0])
            try:
                res = ray.get(done[0])
            except Exception as exc:  # a worker that died or raised outside the run
                res = error_result(c, s, exc)
            on_result(i, res)


def run_on_pool(
    jobs: Sequence[tuple[int, str, int]],
    job_args: Callable[[str, int], tuple[Any, ...]],
    on_result: Callable[[int, dict[str, Any]], None],
    *,
    workers: int,
) -> None:
    """Every ``(index, controller, seed)`` job in a fresh spawned process (CUDA and torch's thread pools start
    clean; a process per run returns its memory), at most ``workers`` at once; ``on_result`` as each ends."""
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_job, *job_args(c, s)): (i, c, s) for i, c, s in jobs}
        for fut in cf.as_completed(futures):
            i, c, s = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:  # a worker that died (killed, out of memory) or raised outside the run
                res = error_result(c, s, exc)
            on_result(i, res)
