"""``Bench``: one benchmark directory. Plans the runs (controllers from the registry x seeds, which with
``env.instances`` are test instances' seeds, x replicates), runs, resumes or skips each through one interface per
controller kind on the chosen executor, and writes bench.json, the figures and the table after every run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.budget import budget_of
from bench.common import config_differences, llm_unavailable
from bench.controllers import check_controllers
from bench.document import ORACLE, document, write
from bench.episodes import AgentFactory
from bench.executors import Job, check_executor, run_on_pool, run_on_ray, run_one
from bench.progress import BenchProgress
from bench.replicates import Slot, plan
from bench.results import result_line
from bench.trials import BenchContext
from graph.agents import DEFAULT_MODEL
from graph.checkpointer import describe, is_postgres, open_checkpointer
from graph.run import quiet_library_bars
from sttrl.config import Config, absolute_paths, config_from_dict
from sttrl.control import registry as registry
from sttrl.errors import ConfigError

__all__ = ["ORACLE", "Bench", "check_controllers", "default_reference", "run_bench"]


def default_reference(controllers: Sequence[str]) -> str:
    """The controller every paired difference is taken against: ``schedule`` when it runs, else ``static``,
    else the first one that is not the oracle."""
    for c in ("schedule", "static"):
        if c in controllers:
            return c
    return next((c for c in controllers if c != ORACLE), controllers[0])


def check_seeds(cfg: Config, seeds: Sequence[int]) -> None:
    """With ``env.instances`` every seed must be a test instance's: the benchmark reports test instances only."""
    if not seeds:
        raise ConfigError("at least one seed is needed")
    spec = cfg.env.instances
    bad = [s for s in seeds if spec is not None and s not in spec.test_seeds]
    if bad:
        raise ConfigError(
            f"seeds {bad} are not test instances (env.instances.test_seeds: {spec.test_seeds}); "  # type: ignore[union-attr]
            "the benchmark reports test instances only"
        )


class Bench:
    """One benchmark directory: plans the runs, runs or resumes each, and writes bench.json and bench.png.

    Paths are resolved here, once (:func:`sttrl.config.absolute_paths`): a run that executes in another working
    directory (a Ray Tune trial, a worker on another machine) reads and writes where the caller meant.
    ``checkpointer``: the episodes' LangGraph threads, ``DIR/checkpoints.sqlite`` by default or a Postgres URL
    (workers on several machines)."""

    def __init__(
        self,
        cfg: Config,
        controllers: Sequence[str],
        seeds: Sequence[int],
        out: str | Path,
        *,
        model: str | None = None,
        optuna_trials: int | None = None,
        agent_factory: AgentFactory | None = None,
        console: Console | None = None,
        quiet: bool = False,
        reference: str | None = None,
        executor: str = "local",
        address: str | None = None,
        cpus_per_episode: float | None = None,
        gpus_per_episode: float = 0,
        ray_num_cpus: int | None = None,
        learned_model: str | None = None,
        workers: int = 2,
        checkpointer: str | None = None,
    ) -> None:
        check_controllers(controllers)
        check_executor(executor)
        if executor != "local" and agent_factory is not None:
            raise ConfigError("an agent factory (tests) works only with --executor local")
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {workers}")
        if "learned" in controllers and not learned_model:
            raise ConfigError(
                "controller learned needs its model directory: --learned-model DIR (trained by python -m sttrl.learn)"
            )
        cfg = absolute_paths(cfg)
        check_seeds(cfg, seeds)
        self.executor, self.address, self.ray_num_cpus, self.workers = executor, address, ray_num_cpus, workers
        self.cpus_per_episode = cpus_per_episode if cpus_per_episode is not None else (cfg.run.threads or 1)
        self.gpus_per_episode = gpus_per_episode
        self.cfg, self.out = cfg, Path(out).resolve()
        self.checkpointer = checkpointer or str(self.out / "checkpoints.sqlite")
        self.model = model or DEFAULT_MODEL
        self.learned_model = learned_model
        self.budget = budget_of(cfg, optuna_trials)
        self.agent_factory = agent_factory
        self.console = console or Console()
        self.quiet = quiet
        self.seeds = list(dict.fromkeys(seeds))
        self.skipped: dict[str, str] = {}
        self.controllers = [c for c in dict.fromkeys(controllers) if not self._skip(c)]
        if reference is not None and reference not in controllers:
            raise ConfigError(f"--reference {reference!r} is not among --controllers ({', '.join(controllers)})")
        if reference == ORACLE:
            raise ConfigError("--reference oracle: the oracle gives regret only; choose a contestant")
        self.reference = reference or default_reference(list(controllers))
        self.ctx = BenchContext(cfg, self.out, self.budget)
        self.runs: list[dict[str, Any]] = []

    def _skip(self, controller: str) -> bool:
        """Record why ``controller`` cannot run here (a missing package or API key); True when it cannot."""
        why = None
        if controller in ("llm", "hybrid") and not self._injected(controller):
            why = llm_unavailable(self.model if controller == "llm" else self.cfg.bench.hybrid_model)
        elif registry.REGISTRY[controller].missing_packages():
            try:
                registry.get(controller)
            except ConfigError as exc:
                why = str(exc)
        if why:
            self.skipped[controller] = why
        return why is not None

    def _injected(self, controller: str) -> bool:
        return self.agent_factory is not None and self.agent_factory(controller, self.cfg) is not None

    # ----- files ----------------------------------------------------------------------------------
    @property
    def json_path(self) -> Path:
        return self.out / "bench.json"

    @property
    def plan(self) -> list[tuple[str, Slot]]:
        """Every run: controller x (instance, replicate), replicate by replicate (:func:`bench.replicates.plan`)."""
        return plan(self.controllers, self.seeds, self.cfg.bench.replicates)

    def _check_existing(self) -> None:
        """An existing benchmark directory must hold the same config and trials budget (more replicates or
        instances may be added: they only add runs)."""
        if not self.json_path.is_file():
            return
        old = json.loads(self.json_path.read_text())
        old_cfg = old.get("config", {})
        with suppress(ConfigError, ValueError):  # a field added since, absent from the old file, counts as its default
            old_cfg = config_from_dict(old_cfg).to_dict()
        diff = config_differences(old_cfg, self.cfg.to_dict())
        if diff:
            raise ConfigError(
                f"{self.out} holds a benchmark with another config (differs in {', '.join(diff[:8])}); "
                "choose another --out or the same options"
            )
        old_trials = (old.get("budget") or {}).get("optuna", {}).get("trials")
        if old_trials is not None and old_trials != self.budget.optuna_trials:
            raise ConfigError(
                f"{self.out} holds a benchmark with --optuna-trials {old_trials}, not "
                f"{self.budget.optuna_trials}; choose another --out or the same options"
            )

    def document(self) -> dict[str, Any]:
        """bench.json: the plan, the budget, every run's numbers, the summary and the paired statistics."""
        extra = {
            "skipped": self.skipped,
            "model": self.model if "llm" in self.controllers else None,
            "learned_model": self.learned_model if "learned" in self.controllers else None,
            "executor": {"name": self.executor, "address": self.address, "checkpointer": describe(self.checkpointer)},
        }
        return document(self.cfg, self.runs, self.controllers, self.seeds, self.budget, self.reference, extra)

    def write(self) -> dict[str, Any]:
        doc = self.document()
        write(self.out, doc, self.budget.unit, self.budget.total)
        return doc

    # ----- running --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or resume, or skip) every planned run; returns the bench.json document."""
        self._check_existing()
        self.out.mkdir(parents=True, exist_ok=True)
        for c, why in self.skipped.items():
            self.console.print(f"{c}: skipped ({why})", highlight=False, markup=False)
        if self.address and not is_postgres(self.checkpointer):  # SQLite's file locks over network storage
            self.console.print(
                f"note: episode threads in {self.checkpointer}; across machines prefer --checkpointer postgresql://…",
                highlight=False,
                markup=False,
            )
        self.runs = []
        self.write()
        if self.executor != "local":
            return self._run_elsewhere()
        from graph.graph import GRAPH_NAME, build_graph  # langgraph: loaded when runs start, not for a dry run

        quiet_library_bars(everything=True)  # the benchmark draws its own progress; logs get no library bars
        runs = self.plan
        progress = BenchProgress(self.console, len(runs), self.quiet)
        try:
            with ExitStack() as stack:
                saver = stack.enter_context(open_checkpointer(self.checkpointer))
                compiled = build_graph().compile(checkpointer=saver, name=GRAPH_NAME)
                for i, (controller, slot) in enumerate(runs, 1):
                    progress.index = i
                    model = self.model_for(controller)
                    res = run_one(compiled, self.ctx, controller, slot, model, progress, self.agent_factory)
                    self.runs.append(res)
                    self.write()
        finally:
            progress.close()
        return self.write()

    def model_for(self, controller: str) -> str | None:
        """The model an episode controller decides with: the chat model of ``llm``, the directory of ``learned``."""
        return {"llm": self.model, "learned": self.learned_model}.get(controller)

    def _run_elsewhere(self) -> dict[str, Any]:
        """Every run a Ray task or a pool process; bench.json is rewritten as each ends, runs kept in plan order."""
        runs = self.plan
        done: dict[int, dict[str, Any]] = {}

        def on_result(i: int, res: dict[str, Any]) -> None:
            done[i] = res
            self.runs = [done[k] for k in sorted(done)]
            if not self.quiet:
                line = result_line(res) if res.get("status") == "finished" else f"error: {res.get('error')}"
                self.console.print(
                    f"[{len(done)}/{len(runs)}] {res['thread_id']}: {line}",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )
            self.write()

        jobs = [Job(i, c, slot) for i, (c, slot) in enumerate(runs)]
        cfg, out, trials = self.cfg.to_dict(), str(self.out), self.budget.optuna_trials

        def args(j: Job) -> tuple[Any, ...]:
            model = self.model_for(j.controller)
            return (cfg, out, j.controller, j.slot.seed, j.slot.replicate, model, trials, self.checkpointer)

        if self.executor == "pool":
            run_on_pool(jobs, args, on_result, workers=self.workers)
        else:
            run_on_ray(
                jobs,
                args,
                on_result,
                address=self.address,
                num_cpus=self.ray_num_cpus,
                cpus_per_episode=self.cpus_per_episode,
                gpus_per_episode=self.gpus_per_episode,
                shared=[self.out, Path(self.cfg.data.cache_dir)],
            )
        return self.write()


def run_bench(
    cfg: Config, controllers: Sequence[str], seeds: Sequence[int], out: str | Path, **kwargs: Any
) -> dict[str, Any]:
    """Run a benchmark (see :class:`Bench`); returns the bench.json document."""
    return Bench(cfg, controllers, seeds, out, **kwargs).run()
