"""``python -m graph.run``: one sttrl episode as a checkpointed LangGraph state machine.

A new episode prints its thread id. ``--thread-id T`` names the thread: a new one starts under that
id, an unfinished one resumes where it stopped (with the config it started with), a finished one
prints its summary. ``--list`` lists the threads of the checkpointer with their status.

Checkpoints go to ``<run.out_dir>/checkpoints.sqlite`` (one SQLite file shared by all threads)
unless ``--checkpointer`` names another file or a ``postgresql://`` URL. Run files go to
``<run.out_dir>/<thread id>/`` unless ``--run-dir`` says otherwise.

The options are in :mod:`graph.cli`, running one thread in :mod:`graph.thread`, forks and the fork tree in
:mod:`graph.fork_cli`.
"""

from __future__ import annotations

import sttrl.preload  # noqa: F401 - first: bounds the BLAS thread pools, loads numpy under the memory guard

# isort: split
import argparse
import shlex
import sys
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console

from graph.checkpointer import describe, open_checkpointer
from graph.cli import build_parser, new_thread_id, out_dir_of, resolve, shortcut_notes
from graph.display import list_threads
from graph.fork_cli import fork_main
from graph.graph import GRAPH_NAME, build_graph
from graph.lease import thread_lease
from graph.thread import (
    Command,
    episode_input,
    quiet_library_bars,
    rejudge,
    run_thread,
    stream_episode,
    thread_status,
)
from sttrl.config import Config
from sttrl.errors import SttrlError
from sttrl.native import (
    EPISODE_LIBRARIES,
    OUT_OF_MEMORY_EXIT,
    first_line,
    is_memory_failure,
    load_guarded,
    watch_for_native_end,
)
from sttrl.train.memory import limit_arenas

# the benchmark (bench.episodes, bench.core) drives episodes through these
__all__ = ["episode_input", "main", "quiet_library_bars", "stream_episode", "thread_status"]


def _open(stack: ExitStack, target: str) -> Any:
    try:
        return stack.enter_context(open_checkpointer(target))
    except SttrlError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad path or an unreachable server: one clear line
        raise SttrlError(f"cannot open checkpointer {describe(target)}: {type(exc).__name__}: {exc}") from None


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.model and args.agent not in ("llm", "learned"):
        parser.error("--model chooses the chat model of --agent llm (or the model directory of --agent learned)")
    if bool(args.fork) != (args.at is not None) or (args.action and not args.fork):
        parser.error("--fork THREAD needs --at STEP (and optionally --action A); --at and --action go with --fork")
    if args.judge and not args.thread_id:
        parser.error("--judge SPLIT needs --thread-id of a finished thread")


def _config(args: argparse.Namespace) -> tuple[Config | None, SttrlError | None]:
    """This command's config, or the error resolving it: fatal for a new thread, ignored when resuming one (it
    keeps its own config)."""
    try:
        return resolve(args), None
    except SttrlError as exc:
        if not (args.thread_id or args.fork or args.tree) or args.list:
            raise
        return None, exc


def _dispatch(console: Console, args: argparse.Namespace, thread_id: str, agent: Any, argv: list[str]) -> int:
    cfg, cfg_error = _config(args)
    if cfg is not None:
        for note in shortcut_notes(args):
            console.print(f"note: {note}", highlight=False, markup=False)
    out_dir = Path(cfg.run.out_dir) if cfg is not None else out_dir_of(args)
    target = args.checkpointer or str(out_dir / "checkpoints.sqlite")
    with ExitStack() as stack:
        saver = _open(stack, target)
        compiled = build_graph().compile(checkpointer=saver, name=GRAPH_NAME)
        if args.list:
            return list_threads(console, compiled, saver, thread_status)
        cmd = Command(console, compiled, saver, args, cfg, cfg_error, thread_id, agent, argv)
        if args.tree or args.fork:
            return fork_main(cmd, stack, target)
        stack.enter_context(thread_lease(target, thread_id))
        if args.judge:
            return rejudge(console, compiled, thread_id, args.judge)
        return run_thread(cmd)


def main(argv: list[str] | None = None, agent: Any = None) -> int:
    """Run the CLI; ``agent`` (an object with ``decide(observation, history)``) replaces the named one."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    limit_arenas()  # before any thread allocates: see sttrl.train.memory
    _check_args(parser, args)
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for the summary table
        console = Console(width=max(console.width, 140))
    thread_id = args.thread_id or new_thread_id()
    runs = not (args.list or args.tree or args.judge)  # an episode runs: a stop can be resumed
    hint = f"; resume with: python -m graph.run --thread-id {thread_id}" if runs else ""
    # nothing of this thread is recorded yet: the same command again, under the same thread id
    resume = shlex.join(["python", "-m", "graph.run", *argv, *([] if args.thread_id else ["--thread-id", thread_id])])
    try:
        if runs or args.judge:
            load_guarded(EPISODE_LIBRARIES, resume, "the libraries")
        if args.quiet:  # after the guarded load (it imports datasets and transformers), before the agent is built
            quiet_library_bars(everything=True)  # (a local LLM's GGUF bar)
        with watch_for_native_end(resume) if runs else nullcontext():
            return _dispatch(console, args, thread_id, agent, argv)
    except SttrlError as exc:
        console.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print(f"interrupted{hint}", highlight=False, markup=False)
        return 130
    except Exception as exc:
        if is_memory_failure(exc):  # outside a training block, where it is not a transition
            line = f"out of memory outside a training block ({first_line(exc)}){hint}"
            console.print(line, highlight=False, markup=False, soft_wrap=True)
            return OUT_OF_MEMORY_EXIT
        console.print(f"unexpected error (report it with the traceback below){hint}", highlight=False, markup=False)
        raise


if __name__ == "__main__":
    sys.exit(main())
