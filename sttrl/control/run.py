"""``python -m sttrl.run``: one episode through SttEnv with a classical policy, then the judge.

The LangGraph episode (``python -m graph.run``) is the main entry point; this runner is the
Gymnasium path, with no LangChain or LangGraph involved.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from sttrl.config import Config, add_config_arguments, load_config, secret
from sttrl.control.registry import make_controller, names
from sttrl.env.decision import Controller
from sttrl.errors import ConfigError, SttrlError
from sttrl.native import watch_for_native_end
from sttrl.outward.publish import publish_run, summary_line
from sttrl.quiet import quiet
from sttrl.train.memory import limit_arenas

if TYPE_CHECKING:
    from sttrl.env.gym import SttEnv

COLUMNS = ("step", "action", "lr", "batch", "frozen", "loss", "WER", "CER", "reward", "status", "s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sttrl.run", description="Run one sttrl episode with a classical policy."
    )
    add_config_arguments(p)
    p.add_argument(
        "--policy",
        default="rule",
        choices=names("episode"),
        help="a registered episode controller that needs no LangChain (default: rule)",
    )
    p.add_argument("--model", metavar="DIR", help="the model directory of --policy learned (python -m sttrl.learn)")
    p.add_argument("--seed", type=int, help="run.seed")
    p.add_argument("--instance", type=int, metavar="SEED", help="draw the starting conditions from env.instances")
    p.add_argument("--run-dir", type=Path, help="where this run writes (default run.out_dir/<run id>)")
    p.add_argument("--no-judge", action="store_true", help="skip the hidden-split judge at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _row(rec: dict[str, Any], obs: dict[str, Any], action: str, r: float) -> list[str]:
    loss = obs["train_loss"]
    return [
        str(rec["step"]),
        action,
        f"{obs['lr']:.3g}",
        str(obs["batch_size"]),
        str(obs["freeze_layers"]),
        f"{loss:.3f}" if loss is not None else "-",
        f"{obs['wer']:.3f}",
        f"{obs['cer']:.3f}",
        f"{r:+.3f}",
        obs["status"],
        f"{rec['timings']['step_seconds']:.1f}",
    ]


def _episode(env: SttEnv, policy: Controller, cfg: Config, args: argparse.Namespace, console: Console) -> None:
    """Reset, then decide and step until the episode ends, printing each step and the table at the end."""
    t0 = time.perf_counter()
    opts: dict = {"run_dir": str(args.run_dir)} if args.run_dir else {}
    if args.instance is not None:
        opts["instance"] = args.instance
    _, info = env.reset(seed=cfg.run.seed, options=opts)
    obs = info["observation"]
    console.print(f"run {info['run_id']} in {info['run_dir']}: start WER {obs['wer']:.3f} CER {obs['cer']:.3f}")
    history: list[dict] = []
    table = Table(title=f"episode ({args.policy} policy, preset {cfg.preset})")
    for col in COLUMNS:
        table.add_column(col, justify="right")
    done = False
    while not done:
        decided = policy.decide(obs, history)
        action, why = decided.action, decided.rationale
        _, r, term, trunc, info = env.step(decided)
        obs = info["observation"]
        history = env.trajectory.records()
        rec = history[-1]
        table.add_row(*_row(rec, obs, action.value, r))
        console.print(
            f"step {rec['step']}: {action.value} ({why}) -> WER {obs['wer']:.3f}, reward {r:+.3f}, {obs['status']}"
        )
        done = term or trunc
    console.print(table)
    console.print(
        f"episode wall time {time.perf_counter() - t0:.1f} s; final model {info['final']['path']} "
        f"sha256 {info['final']['sha256'][:12]}…"
    )


def _judge(run_dir: Path, quiet: bool, hf_token: str | None, console: Console) -> int:
    """Judge the run and print its checks and score; 1 when a check failed."""
    from sttrl.judge.scoring import judge  # torch: kept out of `python -m sttrl.run --help`

    report = judge(run_dir, progress=not quiet, hf_token=hf_token)
    for name, c in report["checks"].items():
        console.print(f"  {'PASS' if c['passed'] else 'FAIL'} {name}: {c['reason']}")
    if not report["scored"]:  # any failed check: the WER is not trustworthy (sttrl.judge.scoring)
        console.print("judge: not scored (a check failed)")
        return 1
    console.print(
        f"judge ({report['hidden_domain']}, hidden): WER {report['wer']:.3f} CER {report['cer']:.3f} "
        f"score {report['score']:.1f}"
    )
    return 0


def _again(argv: list[str]) -> str:
    """The command that runs the episode again as a new run (``--run-dir`` dropped): an episode of this CLI starts
    from step 0, so a run directory it left cannot be continued; ``python -m graph.run`` resumes where it stopped."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--run-dir":
            skip = True
        elif not a.startswith("--run-dir="):
            kept.append(a)
    return shlex.join(["python", "-m", "sttrl.run", *kept]) + " (python -m graph.run resumes where it stopped)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limit_arenas()  # before any thread allocates: see sttrl.train.memory
    if args.quiet:
        quiet()
    console = Console(width=max(shutil.get_terminal_size((120, 24)).columns, 120))
    rc = 0
    again, verb = _again(sys.argv[1:] if argv is None else argv), "run it again as a new run with"
    try:
        overrides = list(args.overrides) + ([f"run.seed={args.seed}"] if args.seed is not None else [])
        cfg = load_config(args.preset, args.config, overrides)
        from sttrl.env.gym import SttEnv  # torch: kept out of `python -m sttrl.run --help`

        hf_token = secret("HF_TOKEN") if "hub" in (cfg.model.source, cfg.data.source) else None  # resolved once, here
        if args.model and args.policy != "learned":
            raise ConfigError("--model is the model directory of --policy learned")
        policy = make_controller(args.policy, cfg, seed=cfg.run.seed, model=args.model)
        env = SttEnv(cfg, progress=not args.quiet, source=args.policy, hf_token=hf_token)
        # torch's backward can segfault when an allocation fails under an address-space limit (3 of 27 runs
        # of tests/test_faults.py): no Python handler sees it, so a watchdog prints the one line
        with watch_for_native_end(again, verb):
            _episode(env, policy, cfg, args, console)
            env.close()  # the judge loads the saved model from disk; free the live one first
            if not args.no_judge:
                rc = _judge(env.run_dir, args.quiet, hf_token, console)
        if line := summary_line(publish_run(env.run_dir)):  # outward: sink + tracker, outcome in run.json
            console.print(line, highlight=False, markup=False)
    except SttrlError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2
    except (MemoryError, RuntimeError) as exc:  # an allocation failure outside a training block: one line
        from sttrl.train.faults import is_allocation_failure, resume_line  # torch: kept out of --help

        if not is_allocation_failure(exc):
            raise
        print(resume_line(exc, again, verb), file=sys.stderr)
        return 3
    return rc


if __name__ == "__main__":
    sys.exit(main())
