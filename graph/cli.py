"""The command line of ``python -m graph.run``: its options, and the config they resolve to.

Precedence, lowest first: the preset, ``--config FILE``, each ``--set KEY=VALUE`` in order, then the shortcuts
``--max-actions``, ``--steps-per-action`` and ``--seed``, which win over ``env.max_actions``,
``env.steps_per_action`` and ``run.seed`` from any of the others (a note says so when both were given).
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

from graph.agents import DEFAULT_MODEL, agent_names
from sttrl.config import Config, add_config_arguments, load_config, parse_override
from sttrl.errors import SttrlError

EXAMPLES = """examples:
  python -m graph.run                                  offline default: cpu preset, rule-based agent
  python -m graph.run --preset debug --max-actions 3   a small episode in about a minute
  python -m graph.run --agent llm                      an LLM decides (GROQ_API_KEY in the environment or .env)
  python -m graph.run --agent llm --model openai:gpt-4o-mini
  python -m graph.run --agent learned --model runs/policy-rloo   a controller trained by python -m sttrl.learn
  python -m graph.run --thread-id 20261122-101500-ab12cd   resume an unfinished thread, or show a finished one
  python -m graph.run --list                           threads in the checkpointer and their status
  python -m graph.run --checkpointer postgresql://user:pw@127.0.0.1:5432/sttrl   share threads between workers
"""

# shortcut option -> the config field it sets (it wins over the preset, --config and --set)
SHORTCUTS = {"max_actions": "env.max_actions", "steps_per_action": "env.steps_per_action", "seed": "run.seed"}


def _episode_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--agent",
        default="rule",
        choices=agent_names(),
        help="who decides each step: a registered controller (default: rule, offline)",
    )
    p.add_argument(
        "--model",
        metavar="PROVIDER:MODEL",
        help=f"chat model for --agent llm, via init_chat_model (default: {DEFAULT_MODEL}); for --agent "
        "learned, the model directory written by python -m sttrl.learn",
    )
    p.add_argument(
        "--max-actions", type=int, metavar="N", help="decisions per episode (wins over --set env.max_actions)"
    )
    p.add_argument(
        "--steps-per-action",
        type=int,
        metavar="N",
        help="optimizer steps per block (wins over --set env.steps_per_action)",
    )
    p.add_argument("--seed", type=int, help="run.seed (wins over --set run.seed)")
    p.add_argument(
        "--instance",
        type=int,
        metavar="SEED",
        help="draw the starting conditions from env.instances with this seed (see README: instance sets)",
    )
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="run directory (default: <run.out_dir>/<thread id>)")


def _thread_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--thread-id", metavar="ID", help="start a new thread with this id, resume it, or show it if finished"
    )
    p.add_argument(
        "--checkpointer",
        metavar="PATH|URL",
        help="SQLite file or postgresql:// URL (default: <run.out_dir>/checkpoints.sqlite)",
    )
    p.add_argument("--list", action="store_true", help="list the checkpointer's threads with their status and exit")
    p.add_argument(
        "--fork",
        metavar="THREAD",
        help="start a new thread (--thread-id, or a new id) from THREAD after "
        "step --at, its training resumed from that block's checkpoint (see README: forks)",
    )
    p.add_argument("--at", type=int, metavar="STEP", help="with --fork: the step after which the fork starts")
    p.add_argument("--action", metavar="A", help="with --fork: the fork's next decision (default: its agent's own)")
    p.add_argument("--tree", metavar="THREAD", help="print THREAD's fork tree and write fork-tree.png, then exit")
    p.add_argument(
        "--judge",
        choices=("test", "dev"),
        metavar="SPLIT",
        help="re-score finished --thread-id's final model on the hidden SPLIT (test|dev), checking the run "
        "directory against the thread's checkpointed state (hashes, step records, rewards); exit 1 "
        "if a check fails",
    )
    p.add_argument("--quiet", action="store_true", help="print only the thread id, the summary and the judge result")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m graph.run",
        description="Run one sttrl episode as a LangGraph state machine: an agent chooses a hyperparameter\n"
        "action per step, a real Whisper training block and a validation evaluation follow, and a judge\n"
        "scores the final model on a hidden domain. Every step is checkpointed; a killed run resumes\n"
        "from its thread id.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    _episode_options(p)
    _thread_options(p)
    return p


def new_thread_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _set_by_overrides(overrides: list[str], dotted: str) -> object | None:
    """The last value ``--set`` gives the dotted field, or None."""
    section, field = dotted.split(".")
    found = None
    for item in overrides:
        try:
            value = parse_override(item).get(section, {})
        except SttrlError:
            continue
        if isinstance(value, dict) and field in value:
            found = value[field]
    return found


def shortcut_notes(args: argparse.Namespace) -> list[str]:
    """One note per shortcut option that overrides a different ``--set`` value of the same field."""
    notes = []
    for opt, dotted in SHORTCUTS.items():
        mine, theirs = getattr(args, opt), _set_by_overrides(list(args.overrides), dotted)
        if mine is not None and theirs is not None and str(theirs) != str(mine):
            notes.append(f"--{opt.replace('_', '-')} {mine} wins over --set {dotted}={theirs}")
    return notes


def resolve(args: argparse.Namespace) -> Config:
    """The config of a new thread: preset, ``--config``, ``--set``, then the shortcut options (they win)."""
    overrides = list(args.overrides)
    for opt, dotted in SHORTCUTS.items():
        if getattr(args, opt) is not None:
            overrides.append(f"{dotted}={getattr(args, opt)}")
    return load_config(args.preset, args.config, overrides)


def out_dir_of(args: argparse.Namespace) -> Path:
    """``run.out_dir`` as the command line sets it, read without validating the rest of the config."""
    value = _set_by_overrides(list(args.overrides), "run.out_dir")
    return Path(str(value)) if value else Path("runs")
