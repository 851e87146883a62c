"""``python -m graph.run``: one sttrl episode as a checkpointed LangGraph state machine.

A new episode prints its thread id. ``--thread-id T`` names the thread: a new one starts under that
id, an unfinished one resumes where it stopped (with the config it started with), a finished one
prints its summary. ``--list`` lists the threads of the checkpointer with their status.

Checkpoints go to ``<run.out_dir>/checkpoints.sqlite`` (one SQLite file shared by all threads)
unless ``--checkpointer`` names another file or a ``postgresql://`` URL. Run files go to
``<run.out_dir>/<thread id>/`` unless ``--run-dir`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sttrl.config import Config, add_config_arguments, load_config
from sttrl.errors import SttrlError
from sttrl.memory import limit_arenas

EXAMPLES = """examples:
  python -m graph.run                                  offline default: cpu preset, rule-based agent
  python -m graph.run --preset debug --max-actions 3   a small episode in about a minute
  python -m graph.run --agent llm                      an LLM decides (GROQ_API_KEY in the environment or .env)
  python -m graph.run --agent llm --model openai:gpt-4o-mini
  python -m graph.run --thread-id 20261122-101500-ab12cd   resume an unfinished thread, or show a finished one
  python -m graph.run --list                           threads in the checkpointer and their status
  python -m graph.run --checkpointer postgresql://user:pw@127.0.0.1:5432/sttrl   share threads between workers
"""


def build_parser() -> argparse.ArgumentParser:
    from graph.agents import AGENTS, DEFAULT_MODEL

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
    p.add_argument("--agent", default="rule", choices=AGENTS, help="who decides each step (default: rule, offline)")
    p.add_argument("--model", metavar="PROVIDER:MODEL",
                   help=f"chat model for --agent llm, via init_chat_model (default: {DEFAULT_MODEL})")
    p.add_argument("--max-actions", type=int, metavar="N", help="decisions per episode (env.max_actions)")
    p.add_argument("--steps-per-action", type=int, metavar="N", help="optimizer steps per block (env.steps_per_action)")
    p.add_argument("--seed", type=int, help="run.seed")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="run directory (default: <run.out_dir>/<thread id>)")
    p.add_argument("--thread-id", metavar="ID", help="start a new thread with this id, resume it, or show it if finished")
    p.add_argument("--checkpointer", metavar="PATH|URL",
                   help="SQLite file or postgresql:// URL (default: <run.out_dir>/checkpoints.sqlite)")
    p.add_argument("--list", action="store_true", help="list the checkpointer's threads with their status and exit")
    p.add_argument("--quiet", action="store_true", help="print only the thread id, the summary and the judge result")
    return p


def new_thread_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def resolve(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.max_actions is not None:
        overrides.append(f"env.max_actions={args.max_actions}")
    if args.steps_per_action is not None:
        overrides.append(f"env.steps_per_action={args.steps_per_action}")
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    return load_config(args.preset, args.config, overrides)


def thread_status(values: dict[str, Any], next_nodes: tuple[str, ...]) -> str:
    if not values and not next_nodes:
        return "new"
    if not next_nodes:
        return "finished" if values.get("judge") else "ended"
    return f"unfinished (next: {', '.join(next_nodes)})"


def list_threads(console: Console, compiled: Any, saver: Any) -> int:
    from graph.checkpointer import thread_ids

    table = Table(title="threads")
    for col in ("thread", "status", "steps", "agent", "preset", "start WER", "last WER", "judge score", "updated",
                "run dir"):
        table.add_column(col)
    rows = []
    for tid in thread_ids(saver):
        snap = compiled.get_state({"configurable": {"thread_id": tid}})
        v = snap.values or {}
        start, obs, jr = v.get("start") or {}, v.get("observation") or {}, v.get("judge") or {}
        rows.append((snap.created_at or "", [
            tid, thread_status(v, snap.next), f"{v.get('step', 0)}/{v.get('max_actions', '?')}", v.get("agent", "?"),
            (v.get("config") or {}).get("preset", v.get("preset", "?")),
            f"{start['wer']:.3f}" if start.get("wer") is not None else "-",
            f"{obs['wer']:.3f}" if obs.get("wer") is not None else "-",
            f"{jr['score']:.1f}" if jr.get("score") is not None else "-",
            (snap.created_at or "")[:19], v.get("run_dir", "-"),
        ]))
    for _, row in sorted(rows, key=lambda x: x[0]):
        table.add_row(*[str(c) for c in row])
    console.print(table if rows else "no threads yet")
    return 0


def print_summary(console: Console, values: dict[str, Any]) -> None:
    from graph.display import judge_lines, summary_table

    console.print(summary_table(values))
    for line in judge_lines(values.get("judge")):
        console.print(line, highlight=False, markup=False)
    run_dir = values.get("run_dir")
    if run_dir:
        console.print(f"files: {run_dir}/trajectory.jsonl, judge.json, plot.png, config.yaml", highlight=False,
                      markup=False)
        from sttrl.publish import outward_line  # sink / tracker outcome recorded in run.json

        if line := outward_line(run_dir):
            console.print(line, highlight=False, markup=False)


def quiet_library_bars() -> None:
    """Turn off transformers' tqdm bars (weights written/loaded): they would cut through a live display."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _open(stack: ExitStack, target: str) -> Any:
    from graph.checkpointer import describe, open_checkpointer

    try:
        return stack.enter_context(open_checkpointer(target))
    except Exception as exc:  # noqa: BLE001 - a bad path or an unreachable server: one clear line
        raise SttrlError(f"cannot open checkpointer {describe(target)}: {type(exc).__name__}: {exc}") from None


def _check_agent(name: str, cfg: Config, model: str | None) -> None:
    """Build the agent once so that a missing API key or package fails before any training."""
    from graph.agents import make_agent

    make_agent(name, cfg, model)


def episode_input(cfg: Config, agent: str, model: str | None = None, run_dir: str | Path | None = None) -> dict[str, Any]:
    """The graph input that starts a new thread: the resolved config, the agent's name, and optionally the
    LLM's ``provider:model`` and the run directory."""
    inp: dict[str, Any] = {"config": cfg.to_dict(), "agent": agent}
    if model:
        inp["model"] = model
    if run_dir:
        inp["run_dir"] = str(run_dir)
    return inp


def stream_episode(compiled: Any, thread_id: str, inp: dict[str, Any] | None, max_actions: int, *, agent: Any = None,
                   progress: bool = False, on_event: Callable[[dict[str, Any]], None] | None = None,
                   on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run thread ``thread_id`` to its end (``inp=None`` resumes it) with every node checkpointed
    (``durability="sync"``); ``on_event`` gets each custom progress event, ``on_update`` each node's
    update. Returns the thread's final state values."""
    from graph.graph import recursion_limit
    from graph.state import EpisodeContext

    context = EpisodeContext(agent=agent, progress=progress)
    run_cfg = {"configurable": {"thread_id": thread_id}, "recursion_limit": recursion_limit(max_actions)}
    for mode, chunk in compiled.stream(inp, run_cfg, stream_mode=["updates", "custom"], context=context,
                                       durability="sync"):
        if mode == "custom" and on_event is not None:
            on_event(chunk)
        elif mode == "updates" and on_update is not None:
            on_update(chunk)
    return compiled.get_state({"configurable": {"thread_id": thread_id}}).values


def run_thread(console: Console, compiled: Any, args: argparse.Namespace, cfg: Config, thread_id: str,
               agent: Any) -> int:
    """Start, resume or show ``thread_id``; stream its progress; print the summary."""
    from graph.display import ProgressDisplay
    from sttrl.config import config_from_dict

    snap = compiled.get_state({"configurable": {"thread_id": thread_id}})
    values = snap.values or {}
    status = thread_status(values, snap.next)
    if status in ("finished", "ended"):
        console.print(f"thread {thread_id} is {status}", highlight=False)
        print_summary(console, values)
        return 0
    if status == "new":
        inp: dict[str, Any] | None = episode_input(cfg, args.agent, args.model, args.run_dir)
        if agent is None:
            _check_agent(args.agent, cfg, args.model)
        max_actions = cfg.env.max_actions
        console.print(f"thread {thread_id} (new episode; resume or show it with --thread-id {thread_id})",
                      highlight=False)
    else:
        inp = None
        if agent is None and values.get("config"):
            _check_agent(values.get("agent") or "rule", config_from_dict(values["config"]), values.get("model"))
        max_actions = values.get("max_actions") or cfg.env.max_actions
        console.print(f"thread {thread_id} resumes at {', '.join(snap.next)} after step {values.get('step', 0)} of "
                      f"{max_actions} (with the config it started with)", highlight=False)
    quiet_library_bars()
    with ProgressDisplay(console, quiet=args.quiet) as display:
        values = stream_episode(compiled, thread_id, inp, max_actions, agent=agent,
                                progress=console.is_terminal and not args.quiet, on_event=display.event)
    print_summary(console, values)
    return 0


def main(argv: list[str] | None = None, agent: Any = None) -> int:
    """Run the CLI; ``agent`` (an object with ``decide(observation, history)``) replaces the named one."""
    parser = build_parser()
    args = parser.parse_args(argv)
    limit_arenas()  # before any thread allocates: see sttrl.memory
    if args.model and args.agent != "llm":
        parser.error("--model chooses the chat model of --agent llm; add --agent llm")
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for the summary table
        console = Console(width=max(console.width, 140))
    thread_id = args.thread_id or new_thread_id()
    hint = f"python -m graph.run --thread-id {thread_id}"
    try:
        cfg = resolve(args)
        from graph.graph import GRAPH_NAME, build_graph

        with ExitStack() as stack:
            saver = _open(stack, args.checkpointer or str(Path(cfg.run.out_dir) / "checkpoints.sqlite"))
            compiled = build_graph().compile(checkpointer=saver, name=GRAPH_NAME)
            if args.list:
                return list_threads(console, compiled, saver)
            return run_thread(console, compiled, args, cfg, thread_id, agent)
    except SttrlError as exc:
        console.print(f"error: {exc}", highlight=False, markup=False)
        return 2
    except KeyboardInterrupt:
        console.print(f"interrupted; resume with: {hint}", highlight=False)
        return 130
    except Exception:
        console.print(f"unexpected error (report it with the traceback below); resume with: {hint}", highlight=False)
        raise


if __name__ == "__main__":
    sys.exit(main())
