"""``Bench``: one benchmark directory. Plans the runs (controllers from the registry x seeds, which with
``env.instances`` are test instances' seeds), runs, resumes or skips each through one interface per
controller kind, and writes bench.json, the figures and the table."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

import bench.hybrid
import bench.lookahead
import bench.oracle
import bench.pbt
import bench.sha
import bench.tpe  # noqa: F401 - registers tpe (and its alias optuna)
import graph.agents  # noqa: F401 - registers llm
from bench.budget import budget_of
from bench.common import SCHEMA, config_differences, llm_unavailable
from bench.episodes import AgentFactory, run_episode
from bench.executors import check_executor, error_result, run_on_pool, run_on_ray
from bench.plot import write_action_raster, write_bench_plot, write_paired_plot
from bench.progress import BenchProgress
from bench.results import markdown_table, paired_stats, summarize
from bench.trials import BenchContext
from sttrl.config import Config, config_from_dict
from sttrl.control import registry as registry
from sttrl.env.instances import draw
from sttrl.errors import ConfigError, SttrlError
from sttrl.io import atomic_write_json

ORACLE = "oracle"  # regret only: never a contestant in the summary or the paired tests


def check_controllers(controllers: Sequence[str]) -> None:
    """A one-line ConfigError for names that are not registered, listing the registered ones."""
    unknown = [c for c in controllers if c not in registry.names()]
    if unknown:
        raise ConfigError(f"unknown controllers {unknown}; valid: {', '.join(registry.names())}")


def default_reference(controllers: Sequence[str]) -> str:
    """The controller every paired difference is taken against: ``schedule`` when it runs, else ``static``,
    else the first one that is not the oracle."""
    for c in ("schedule", "static"):
        if c in controllers:
            return c
    return next((c for c in controllers if c != ORACLE), controllers[0])


class Bench:
    """One benchmark directory: plans the runs, runs or resumes each, and writes bench.json and bench.png."""

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
    ) -> None:
        from graph.agents import DEFAULT_MODEL

        check_controllers(controllers)
        check_executor(executor)
        if executor != "local" and agent_factory is not None:
            raise ConfigError("an agent factory (tests) works only with --executor local")
        self.executor, self.address, self.ray_num_cpus = executor, address, ray_num_cpus
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {workers}")
        self.workers = workers
        self.cpus_per_episode = cpus_per_episode if cpus_per_episode is not None else (cfg.run.threads or 1)
        self.gpus_per_episode = gpus_per_episode
        if not seeds:
            raise ConfigError("at least one seed is needed")
        spec = cfg.env.instances
        if spec is not None:  # every run is drawn from a test instance; its seed is the pairing key
            bad = [s for s in seeds if s not in spec.test_seeds]
            if bad:
                raise ConfigError(
                    f"seeds {bad} are not test instances (env.instances.test_seeds: "
                    f"{spec.test_seeds}); the benchmark reports test instances only"
                )
        self.cfg, self.out = cfg, Path(out)
        self.model = model or DEFAULT_MODEL
        self.learned_model = learned_model
        if "learned" in controllers and not learned_model:
            raise ConfigError(
                "controller learned needs its model directory: --learned-model DIR (trained by python -m sttrl.learn)"
            )
        self.budget = budget_of(cfg, optuna_trials)
        self.agent_factory = agent_factory
        self.console = console or Console()
        self.quiet = quiet
        self.seeds = list(dict.fromkeys(seeds))
        self.skipped: dict[str, str] = {}
        self.controllers: list[str] = []
        for c in dict.fromkeys(controllers):
            why = None
            if c in ("llm", "hybrid") and not self._injected(c):
                why = llm_unavailable(self.model if c == "llm" else cfg.bench.hybrid_model)
            elif registry.REGISTRY[c].missing_packages():
                try:
                    registry.get(c)
                except ConfigError as exc:
                    why = str(exc)
            if why:
                self.skipped[c] = why
            else:
                self.controllers.append(c)
        if reference is not None and reference not in controllers:
            raise ConfigError(f"--reference {reference!r} is not among --controllers ({', '.join(controllers)})")
        if reference == ORACLE:
            raise ConfigError("--reference oracle: the oracle gives regret only; choose a contestant")
        self.reference = reference or default_reference(list(controllers))
        self.ctx = BenchContext(cfg, self.out, self.budget)
        self.runs: list[dict[str, Any]] = []

    def _injected(self, controller: str) -> bool:
        return self.agent_factory is not None and self.agent_factory(controller, self.cfg) is not None

    # ----- files ----------------------------------------------------------------------------------
    @property
    def json_path(self) -> Path:
        return self.out / "bench.json"

    def _check_existing(self) -> None:
        """An existing benchmark directory must hold the same config and trials budget."""
        if not self.json_path.is_file():
            return
        old = json.loads(self.json_path.read_text())
        old_cfg = old.get("config", {})
        with contextlib.suppress(ConfigError, ValueError):  # a field added since, absent from the old file: default
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
        import torch

        contestants = [c for c in self.controllers if c != ORACLE]
        summary = summarize(self.runs, contestants, self.budget.total)
        paired = paired_stats(
            self.runs,
            summary,
            self.reference,
            seed=self.seeds[0],
            oracle=ORACLE if ORACLE in self.controllers else None,
        )
        spec = self.cfg.env.instances
        return {
            "schema": SCHEMA,
            "preset": self.cfg.preset,
            "controllers": self.controllers,
            "seeds": self.seeds,
            "pairing": "instance" if spec is not None else "seed",
            "instances": {str(s): draw(spec, s) for s in self.seeds} if spec is not None else None,
            "skipped": self.skipped,
            "model": self.model if "llm" in self.controllers else None,
            "learned_model": self.learned_model if "learned" in self.controllers else None,
            "budget": self.budget.to_dict(),
            "config": self.cfg.to_dict(),
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "logical_cores": os.cpu_count(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "cuda": torch.cuda.is_available(),
            },
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "schedule_tuning": self._schedule_tuning(),
            "runs": self.runs,
            "summary": summary,
            "paired": paired,
            "table": markdown_table(summary, paired),
        }

    def _schedule_tuning(self) -> dict[str, Any] | None:
        """The schedule controller's tuned setting and what tuning it cost (reported next to it), or why untuned."""
        if "schedule" not in self.controllers:
            return None
        path = self.cfg.bench.schedule_file
        if path is None:
            return {"tuned": False, "note": "no bench.schedule_file: the config's bench.schedule_* values"}
        from sttrl.control.schedule import load_tuned

        doc = load_tuned(path)
        return {
            "tuned": True,
            "file": str(path),
            **{
                k: doc[k]
                for k in ("peak_lr", "shape", "warmup_fraction", "final_fraction", "dev_wer", "train_instances", "cost")
            },
        }

    def write(self) -> dict[str, Any]:
        doc = self.document()
        atomic_write_json(self.json_path, doc)
        if doc["summary"]:
            unit = self.budget.unit
            write_bench_plot(
                self.out / "bench.png",
                doc["summary"],
                f"sttrl controllers, preset {self.cfg.preset}: validation WER over training {unit} "
                f"(budget {self.budget.total} {unit})",
                unit=unit,
            )
            write_paired_plot(
                self.out / "bench-paired.png",
                self.runs,
                doc["paired"],
                f"sttrl controllers, preset {self.cfg.preset}: hidden WER paired by {doc['pairing']} "
                f"against {self.reference}",
            )
            write_action_raster(
                self.out / "bench-actions.png",
                self.runs,
                f"sttrl controllers, preset {self.cfg.preset}: action per block (rows: controller · {doc['pairing']})",
            )
        return doc

    # ----- running --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or resume, or skip) every planned run; returns the bench.json document."""
        from graph.checkpointer import open_checkpointer
        from graph.graph import GRAPH_NAME, build_graph
        from graph.run import quiet_library_bars

        self._check_existing()
        self.out.mkdir(parents=True, exist_ok=True)
        for c, why in self.skipped.items():
            self.console.print(f"{c}: skipped ({why})", highlight=False, markup=False)
        plan = [(c, s) for s in self.seeds for c in self.controllers]
        self.runs = []
        self.write()
        if self.executor != "local":
            return self._run_elsewhere(plan)
        quiet_library_bars(everything=True)  # the benchmark draws its own progress; logs get no library bars
        progress = BenchProgress(self.console, len(plan), self.quiet)
        try:
            with ExitStack() as stack:
                saver = stack.enter_context(open_checkpointer(str(self.out / "checkpoints.sqlite")))
                compiled = build_graph().compile(checkpointer=saver, name=GRAPH_NAME)
                for i, (controller, seed) in enumerate(plan, 1):
                    progress.index = i
                    try:
                        spec = registry.REGISTRY[controller]
                        if spec.kind == "trials":
                            injected = self.agent_factory(controller, self.cfg) if self.agent_factory else None
                            opts = {"chat_model": injected} if injected is not None else {}
                            res = spec.factory(self.cfg, **opts).run(self.ctx, seed, progress)
                        else:
                            res = run_episode(
                                compiled,
                                self.cfg,
                                self.out,
                                controller,
                                seed,
                                self.model_for(controller),
                                self.agent_factory,
                                progress,
                            )
                    except (SttrlError, RuntimeError, ValueError, OSError) as exc:
                        res = error_result(controller, seed, exc)
                        progress.end_run(f"error: {res['error']}")
                    self.runs.append(res)
                    self.write()
        finally:
            progress.close()
        return self.write()

    def model_for(self, controller: str) -> str | None:
        """The model an episode controller decides with: the chat model of ``llm``, the directory of ``learned``."""
        return {"llm": self.model, "learned": self.learned_model}.get(controller)

    def _run_elsewhere(self, plan: list[tuple[str, int]]) -> dict[str, Any]:
        """Every run a Ray task or a pool process; bench.json is rewritten as each ends, runs kept in plan order."""
        from bench.results import result_line

        done: dict[int, dict[str, Any]] = {}
        out = str(self.out.resolve())

        def on_result(i: int, res: dict[str, Any]) -> None:
            done[i] = res
            self.runs = [done[k] for k in sorted(done)]
            if not self.quiet:
                line = result_line(res) if res.get("status") == "finished" else f"error: {res.get('error')}"
                self.console.print(
                    f"[{len(done)}/{len(plan)}] {res['thread_id']}: {line}",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )
            self.write()

        jobs = [(i, c, s) for i, (c, s) in enumerate(plan)]
        args = lambda c, s: (self.cfg.to_dict(), out, c, s, self.model_for(c), self.budget.optuna_trials)
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
            )
        return self.write()


def run_bench(
    cfg: Config, controllers: Sequence[str], seeds: Sequence[int], out: str | Path, **kwargs: Any
) -> dict[str, Any]:
    """Run a benchmark (see :class:`Bench`); returns the bench.json document."""
    return Bench(cfg, controllers, seeds, out, **kwargs).run()
