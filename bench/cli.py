"""``python -m bench``: the command line. Secrets (the HF token, an LLM's API key) are resolved here,
once, through ``graph.live``; errors are one line and a non-zero exit."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from bench.controllers import check_controllers
from bench.core import Bench
from bench.episodes import AgentFactory
from bench.suites import SUITES, Suite, get_suite, suite_controllers, tuned_files
from graph import live
from graph.agents import DEFAULT_MODEL, api_key_name
from sttrl.config import Config, add_config_arguments, load_config
from sttrl.control import registry as registry
from sttrl.errors import ConfigError, SttrlError
from sttrl.train.memory import limit_arenas

DEFAULT_CONTROLLERS = "static,random,rule,schedule,llm,tpe,sha"
EXAMPLES = """examples:
  python -m bench --suite smoke --out runs/bench-smoke                 debug preset, seconds (CI)
  python -m bench --suite cpu --set bench.schedule_file=runs/schedule.json   bench-cpu, ~80 min on 2 cores
  python -m bench --preset debug --controllers static,random,rule,tpe --seeds 3 --out runs/bench-debug
  python -m bench --preset cpu --seeds 3 --out runs/bench-cpu          all controllers (llm needs a key)
  python -m bench --preset cpu --seeds 3 --out runs/bench-cpu          again: resumes, skips finished runs
  python -m bench --suite decisive --executor pool --workers 1 --quiet   the decisive suite, resumable
  python -m bench --suite decisive --executor ray --address HEAD:6379 --checkpointer postgresql://u:pw@db/sttrl \
      --out /shared/bench-decisive --set data.cache_dir=/shared/cache    across machines (shared storage)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Compare controllers on the same training budget (steps or samples) and evaluations; the\n"
        "judge's hidden-domain WER is the outcome, paired by test instance (env.instances) or seed against a\n"
        "reference controller. Writes DIR/bench.json, DIR/bench.png and DIR/bench-paired.png and\n"
        "prints a table. Run the same command again to resume.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.set_defaults(preset=None)  # cpu, or the suite's
    p.add_argument(
        "--suite",
        metavar="NAME",
        help=f"a prepared benchmark: {', '.join(sorted(SUITES))} (preset, "
        "controllers, test instances, replicates; the estimated time is printed first; see bench/suites.py)",
    )
    p.add_argument(
        "--controllers",
        default=None,
        help=f"comma-separated, from {', '.join(registry.names())} (default: {DEFAULT_CONTROLLERS}, or the suite's)",
    )
    p.add_argument(
        "--reference",
        metavar="NAME",
        help="paired differences are taken against it (default: schedule, else static, else the first)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="seeds per controller; with env.instances, test instances (default: 3, or the suite's)",
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        metavar="S",
        help="seeds are S .. S+N-1; with env.instances, test_seeds[S : S+N] (default: 0)",
    )
    p.add_argument(
        "--replicates",
        type=int,
        metavar="R",
        help="runs per controller x instance on shared data-order seeds (bench.replicates; default: 1, or the suite's)",
    )
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="benchmark directory (default: <run.out_dir>/bench-<preset>)"
    )
    p.add_argument("--model", metavar="PROVIDER:MODEL", help="chat model of the llm controller")
    p.add_argument(
        "--learned-model", metavar="DIR", help="model directory of the learned controller (python -m sttrl.learn)"
    )
    p.add_argument(
        "--optuna-trials",
        "--trials",
        type=int,
        metavar="K",
        dest="optuna_trials",
        help="trials of a trials controller (tpe) sharing the episode's training steps (default: env.max_actions)",
    )
    _add_executor_arguments(p)
    return p


def _add_executor_arguments(p: argparse.ArgumentParser) -> None:
    """Where the runs execute (local, a process pool, Ray), what each may use, and what to print."""
    p.add_argument(
        "--executor",
        default="local",
        metavar="NAME",
        help="local (one run after another here), pool (each run in a fresh process, --workers at once) "
        "or ray (each run a Ray task; needs the ray extra)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="with --executor pool: runs at once (default: 2; on one GPU, episodes share it)",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="with --executor ray: an existing cluster across machines (default: start one here); --out and "
        "data.cache_dir must be on storage every node mounts at the same path",
    )
    p.add_argument(
        "--checkpointer",
        metavar="TARGET",
        help="the episodes' threads: a SQLite file (default: DIR/checkpoints.sqlite) or a postgresql:// URL",
    )
    p.add_argument("--cpus-per-episode", type=float, metavar="N", help="Ray CPUs per run (default: run.threads or 1)")
    p.add_argument(
        "--gpus-per-episode",
        type=float,
        default=0,
        metavar="F",
        help="Ray GPUs per run, fractional on GPU machines, e.g. 0.25 (default: 0)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan (and a suite's estimate) and exit")
    p.add_argument("--quiet", action="store_true", help="print only skipped controllers and the final table")


def plan_seeds(cfg: Config, n: int, first: int = 0) -> list[int]:
    """The runs' seeds: ``first .. first+n-1``; with ``env.instances``, the test instances
    ``test_seeds[first : first+n]`` (their seeds are the pairing key)."""
    spec = cfg.env.instances
    if spec is None:
        return list(range(first, first + n))
    if first < 0 or first + n > len(spec.test_seeds):
        raise ConfigError(
            f"--seeds {n} --first-seed {first} asks for test instances {first}..{first + n - 1}, but "
            f"env.instances.test_seeds has {len(spec.test_seeds)}"
        )
    return list(spec.test_seeds[first : first + n])


def _resolve_secrets(controllers: list[str], model: str | None, hybrid_model: str) -> None:
    """Resolve the secrets this run can need, once per process (never logged or written)."""
    live.hf_token()
    if "llm" in controllers:
        m = model or DEFAULT_MODEL
        live.resolve_once(f"api_key:{m}", api_key_name(m))
    if "hybrid" in controllers:
        live.resolve_once(f"api_key:{hybrid_model}", api_key_name(hybrid_model))


def _settings(args: argparse.Namespace) -> tuple[Suite | None, Config, list[str], list[int]]:
    """The suite (if any), the config, the controllers and the seeds the command line asks for."""
    suite = get_suite(args.suite) if args.suite else None
    if suite and args.preset and args.preset != suite.preset:
        raise ConfigError(f"--suite {suite.name} runs preset {suite.preset}; drop --preset {args.preset}")
    preset = suite.preset if suite else (args.preset or "cpu")
    overrides = [*(suite.overrides if suite else ())]
    if suite and suite.replicates > 1:
        overrides.append(f"bench.replicates={suite.replicates}")
    overrides += args.overrides
    if args.replicates is not None:
        overrides.append(f"bench.replicates={args.replicates}")
    cfg = load_config(preset, args.config, overrides)
    names = args.controllers or (",".join(suite_controllers(suite)) if suite else DEFAULT_CONTROLLERS)
    controllers = [c.strip() for c in names.split(",") if c.strip()]
    if not controllers:
        raise ConfigError(f"--controllers is empty; valid: {', '.join(registry.names())}")
    check_controllers(controllers)
    n_seeds = args.seeds if args.seeds is not None else (suite.instances if suite else 3)
    if n_seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    return suite, cfg, controllers, plan_seeds(cfg, n_seeds, args.first_seed)


def _bench(args: argparse.Namespace, agent_factory: AgentFactory | None, console: Console) -> dict | None:
    """Plan, print the suite's estimate, and run (None for a dry run)."""
    suite, cfg, controllers, seeds = _settings(args)
    model = args.model or (suite.model if suite else None)
    _resolve_secrets(controllers, model, cfg.bench.hybrid_model)

    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    if suite and not args.controllers and not args.learned_model and "learned" in controllers:
        controllers.remove("learned")  # a suite names it; asked for by name, a missing directory is an error
        say("learned: skipped (no --learned-model DIR, a model trained by python -m sttrl.learn)")
    if suite:  # before anything runs: what it will cost
        say(suite.describe(controllers, len(seeds), cfg.bench.replicates))
        say(tuned_files(cfg))
    if args.dry_run:
        say(f"dry run: seeds {seeds}, controllers {', '.join(controllers)}; nothing was run")
        return None
    out = args.out or Path(cfg.run.out_dir) / f"bench-{suite.name if suite else cfg.preset}"
    bench = Bench(
        cfg,
        controllers,
        seeds,
        out,
        model=model,
        optuna_trials=args.optuna_trials,
        agent_factory=agent_factory,
        console=console,
        quiet=args.quiet,
        reference=args.reference,
        executor=args.executor,
        address=args.address,
        cpus_per_episode=args.cpus_per_episode,
        gpus_per_episode=args.gpus_per_episode,
        learned_model=args.learned_model,
        workers=args.workers,
        checkpointer=args.checkpointer,
    )
    doc = bench.run()
    say(doc["table"])
    say(f"files: {bench.out / 'bench.json'}, {bench.out / 'bench.png'}")
    return doc


def main(argv: list[str] | None = None, agent_factory: AgentFactory | None = None) -> int:
    args = build_parser().parse_args(argv)
    limit_arenas()  # before any thread allocates: see sttrl.train.memory
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))
    try:
        doc = _bench(args, agent_factory, console)
    except SttrlError as exc:
        console.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)  # one line, never wrapped
        return 2
    except KeyboardInterrupt:
        console.print(
            "interrupted; run the same command again to resume (finished runs are skipped)",
            highlight=False,
            markup=False,
        )
        return 130
    failed = [r for r in (doc or {}).get("runs", []) if r.get("status") != "finished"]
    for r in failed:
        console.print(f"run {r['thread_id']} failed: {r.get('error')}", highlight=False, markup=False)
    return 1 if failed else 0
