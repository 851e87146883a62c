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
from sttrl.train.memory import limit_arenas

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


def build_parser() -> argparse.ArgumentParser:
    from graph.agents import DEFAULT_MODEL, agent_names

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
    p.add_argument("--max-actions", type=int, metavar="N", help="decisions per episode (env.max_actions)")
    p.add_argument("--steps-per-action", type=int, metavar="N", help="optimizer steps per block (env.steps_per_action)")
    p.add_argument("--seed", type=int, help="run.seed")
    p.add_argument(
        "--instance",
        type=int,
        metavar="SEED",
        help="draw the starting conditions from env.instances with this seed (see README: instance sets)",
    )
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="run directory (default: <run.out_dir>/<thread id>)")
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
    """``new``, ``finished`` (the judge has run) or ``unfinished (next: …)``. A thread killed after a node's
    writes were saved but before the next checkpoint has no next node yet; it is unfinished all the same."""
    if not values and not next_nodes:
        return "new"
    if values.get("judge"):
        return "finished"
    return f"unfinished (next: {', '.join(next_nodes) or 'the saved writes of the last node'})"


def setup_done(values: dict[str, Any]) -> bool:
    """Whether the thread's setup finished (a run directory with a starting checkpoint exists)."""
    return bool(values.get("run_id")) and values.get("step") is not None


def list_threads(console: Console, compiled: Any, saver: Any) -> int:
    from graph.checkpointer import thread_ids

    table = Table(title="threads")
    for col in (
        "thread",
        "status",
        "steps",
        "agent",
        "preset",
        "start WER",
        "last WER",
        "judge score",
        "updated",
        "run dir",
    ):
        table.add_column(col)
    rows = []
    for tid in thread_ids(saver):
        snap = compiled.get_state({"configurable": {"thread_id": tid}})
        v = snap.values or {}
        start, obs, jr = v.get("start") or {}, v.get("observation") or {}, v.get("judge") or {}
        rows.append(
            (
                snap.created_at or "",
                [
                    tid,
                    thread_status(v, snap.next),
                    f"{v.get('step', 0)}/{v.get('max_actions', '?')}",
                    v.get("agent", "?"),
                    (v.get("config") or {}).get("preset", v.get("preset", "?")),
                    f"{start['wer']:.3f}" if start.get("wer") is not None else "-",
                    f"{obs['wer']:.3f}" if obs.get("wer") is not None else "-",
                    f"{jr['score']:.1f}" if jr.get("score") is not None else "-",
                    (snap.created_at or "")[:19],
                    v.get("run_dir", "-"),
                ],
            )
        )
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
        console.print(
            f"files: {run_dir}/trajectory.jsonl, judge.json, plot.png, config.yaml", highlight=False, markup=False
        )
        from sttrl.outward.publish import outward_line  # sink / tracker outcome recorded in run.json

        if line := outward_line(run_dir):
            console.print(line, highlight=False, markup=False)


def quiet_library_bars(everything: bool = False) -> None:
    """Turn off the libraries' own progress bars (they would cut through a live display); ``everything``
    (``--quiet``, the benchmark's logs) also every tqdm bar a library draws directly (``sttrl.quiet``)."""
    from sttrl.quiet import library_bars_off, quiet  # datasets and transformers load with the episode anyway

    quiet() if everything else library_bars_off()


def _open(stack: ExitStack, target: str) -> Any:
    from graph.checkpointer import describe, open_checkpointer

    try:
        return stack.enter_context(open_checkpointer(target))
    except SttrlError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad path or an unreachable server: one clear line
        raise SttrlError(f"cannot open checkpointer {describe(target)}: {type(exc).__name__}: {exc}") from None


def _check_agent(name: str, cfg: Config, model: str | None) -> None:
    """Resolve the secrets this run needs (once, here at the entry point) and build the agent once, so that
    a missing API key or package fails before any training."""
    from graph import live
    from graph.agents import DEFAULT_MODEL, make_agent, resolve_api_key
    from sttrl.config import secret

    if "hub" in (cfg.model.source, cfg.data.source):
        live.set_secrets(hf_token=secret("HF_TOKEN"))
    key = None
    if name == "llm":
        model = model or DEFAULT_MODEL
        key = resolve_api_key(model)
        live.set_api_key(model, key)
    make_agent(name, cfg, model, api_key=key)


def episode_input(
    cfg: Config, agent: str, model: str | None = None, run_dir: str | Path | None = None, instance: int | None = None
) -> dict[str, Any]:
    """The graph input that starts a new thread: the resolved config, the agent's name, and optionally the
    LLM's ``provider:model``, the run directory and the instance seed."""
    inp: dict[str, Any] = {"config": cfg.to_dict(), "agent": agent}
    if instance is not None:
        inp["instance"] = instance
    if model:
        inp["model"] = model
    if run_dir:
        inp["run_dir"] = str(run_dir)
    return inp


def stream_episode(
    compiled: Any,
    thread_id: str,
    inp: dict[str, Any] | None,
    max_actions: int,
    *,
    agent: Any = None,
    progress: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run thread ``thread_id`` to its end (``inp=None`` resumes it) with every node checkpointed
    (``durability="sync"``); ``on_event`` gets each custom progress event, ``on_update`` each node's
    update. Returns the thread's final state values."""
    from graph.graph import recursion_limit
    from graph.state import EpisodeContext

    context = EpisodeContext(agent=agent, progress=progress)
    run_cfg = {"configurable": {"thread_id": thread_id}, "recursion_limit": recursion_limit(max_actions)}
    for mode, chunk in compiled.stream(
        inp, run_cfg, stream_mode=["updates", "custom"], context=context, durability="sync"
    ):
        if mode == "custom" and on_event is not None:
            on_event(chunk)
        elif mode == "updates" and on_update is not None:
            on_update(chunk)
    return compiled.get_state({"configurable": {"thread_id": thread_id}}).values


RESUME_IGNORES = (
    "--preset",
    "--config",
    "--set",
    "--agent",
    "--model",
    "--max-actions",
    "--steps-per-action",
    "--seed",
    "--run-dir",
    "--instance",
)


def ignored_options(argv: list[str]) -> list[str]:
    """The options of ``argv`` a resumed thread ignores (it keeps the config, agent and run directory it
    started with), as typed."""
    out: list[str] = []
    for i, tok in enumerate(argv):
        flag = tok.split("=", 1)[0]
        if flag in RESUME_IGNORES:
            value = tok.split("=", 1)[1] if "=" in tok else (argv[i + 1] if i + 1 < len(argv) else "")
            if flag == "--set" and value.replace(" ", "").startswith("run.out_dir="):
                continue  # used: it locates the default checkpointer
            out.append(f"{flag} {value}".strip())
    return out


def _discard_failed_setup(saver: Any, thread_id: str, run_dir: Path | None) -> None:
    """A setup that never trained leaves nothing behind: the thread is deleted, and the run directory too
    unless it holds trained blocks."""
    import shutil

    try:
        saver.delete_thread(thread_id)
    except Exception:  # noqa: BLE001 - best effort: the error that ended setup is what the user needs
        pass
    if run_dir is not None and run_dir.is_dir():
        ckpts = run_dir / "checkpoints"
        trained = [p for p in ckpts.glob("block-*") if p.name != "block-0000"] if ckpts.is_dir() else []
        if not trained:
            shutil.rmtree(run_dir, ignore_errors=True)


def run_thread(
    console: Console,
    compiled: Any,
    saver: Any,
    args: argparse.Namespace,
    cfg: Config | None,
    cfg_error: SttrlError | None,
    thread_id: str,
    agent: Any,
    argv: list[str],
) -> int:
    """Start, resume or show ``thread_id``; stream its progress; print the summary."""
    from graph.display import ProgressDisplay
    from sttrl.config import config_from_dict
    from sttrl.env import episode

    snap = compiled.get_state({"configurable": {"thread_id": thread_id}})
    values = snap.values or {}
    status = thread_status(values, snap.next)
    if status == "finished":
        console.print(f"thread {thread_id} is {status}", highlight=False)
        print_summary(console, values)
        return 0
    restart = status != "new" and not setup_done(values)
    if status == "new" or restart:
        if cfg_error is not None:
            raise cfg_error
        assert cfg is not None
        inp: dict[str, Any] | None = episode_input(cfg, args.agent, args.model, args.run_dir, args.instance)
        if agent is None:
            _check_agent(args.agent, cfg, args.model)
        max_actions = cfg.env.max_actions
        how = "its setup never finished: starting it again with this command's config" if restart else "new episode"
        console.print(f"thread {thread_id} ({how}; resume or show it with --thread-id {thread_id})", highlight=False)
        run_dir = Path(args.run_dir) if args.run_dir else Path(cfg.run.out_dir) / thread_id
    else:
        inp = None
        thread_cfg = config_from_dict(values["config"])
        if agent is None:
            _check_agent(values.get("agent") or "rule", thread_cfg, values.get("model"))
        max_actions = values.get("max_actions") or thread_cfg.env.max_actions
        console.print(
            f"thread {thread_id} resumes at {', '.join(snap.next) or 'its last saved writes'} after step "
            f"{values.get('step', 0)} of {max_actions} (with the config it started with)",
            highlight=False,
        )
        ignored = ignored_options(argv)
        if ignored:
            console.print(f"ignored on resume: {', '.join(ignored)}", highlight=False, markup=False)
        run_dir = Path(values["run_dir"])
        episode.sync_trajectory(run_dir, values.get("records") or [])  # the state is the source of truth
    quiet_library_bars(everything=args.quiet)
    try:
        with ProgressDisplay(console, quiet=args.quiet) as display:
            values = stream_episode(
                compiled,
                thread_id,
                inp,
                max_actions,
                agent=agent,
                progress=console.is_terminal and not args.quiet,
                on_event=display.event,
            )
    except SttrlError:
        if inp is not None and not setup_done(
            compiled.get_state({"configurable": {"thread_id": thread_id}}).values or {}
        ):
            _discard_failed_setup(saver, thread_id, run_dir)
        raise
    print_summary(console, values)
    return 0


def rejudge(console: Console, compiled: Any, thread_id: str, split: str) -> int:
    """The judge on a finished thread, with what the run directory cannot rewrite taken from the checkpointer."""
    from sttrl.errors import CheckpointError
    from sttrl.judge import scoring as judge_mod
    from sttrl.judge.integrity import expected_from_state

    snap = compiled.get_state({"configurable": {"thread_id": thread_id}})
    values = snap.values or {}
    if thread_status(values, snap.next) != "finished":
        raise CheckpointError(
            f"thread {thread_id} has not finished (no final model to judge); resume it first with "
            f"python -m graph.run --thread-id {thread_id}"
        )
    from graph import live

    report = judge_mod.judge(
        values["run_dir"], progress=False, expected=expected_from_state(values), split=split, hf_token=live.hf_token()
    )
    failed = [name for name, c in report["checks"].items() if not c["passed"]]
    console.print(
        f"thread {thread_id}: judge ({split} split) WER {report['wer']:.4f} CER {report['cer']:.4f} "
        f"score {report['score']:.1f} over {report['n_utterances']} utterances; "
        + (f"FAILED checks: {', '.join(failed)}" if failed else "all checks passed"),
        highlight=False,
    )
    return 0 if report["passed_all_checks"] else 1


def _out_dir(args: argparse.Namespace) -> Path:
    """``run.out_dir`` as the command line sets it, read without validating the rest of the config."""
    from sttrl.config import parse_override

    out = Path("runs")
    for item in args.overrides:
        try:
            value = parse_override(item).get("run", {}).get("out_dir")
        except SttrlError:
            continue
        if value:
            out = Path(str(value))
    return out


def main(argv: list[str] | None = None, agent: Any = None) -> int:
    """Run the CLI; ``agent`` (an object with ``decide(observation, history)``) replaces the named one."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    limit_arenas()  # before any thread allocates: see sttrl.train.memory
    if args.quiet:  # before anything loads: the agent (a local LLM's GGUF bar) is built before the episode starts
        quiet_library_bars(everything=True)
    if args.model and args.agent not in ("llm", "learned"):
        parser.error("--model chooses the chat model of --agent llm (or the model directory of --agent learned)")
    if bool(args.fork) != (args.at is not None) or (args.action and not args.fork):
        parser.error("--fork THREAD needs --at STEP (and optionally --action A); --at and --action go with --fork")
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for the summary table
        console = Console(width=max(console.width, 140))
    thread_id = args.thread_id or new_thread_id()
    hint = f"python -m graph.run --thread-id {thread_id}"
    try:
        cfg: Config | None = None
        cfg_error: SttrlError | None = None
        try:
            cfg = resolve(args)
        except SttrlError as exc:  # fatal for a new thread; ignored when resuming one (it keeps its own config)
            if not (args.thread_id or args.fork or args.tree) or args.list:
                raise
            cfg_error = exc
        from graph.graph import GRAPH_NAME, build_graph
        from graph.lease import thread_lease

        out_dir = Path(cfg.run.out_dir) if cfg is not None else _out_dir(args)
        target = args.checkpointer or str(out_dir / "checkpoints.sqlite")
        with ExitStack() as stack:
            saver = _open(stack, target)
            compiled = build_graph().compile(checkpointer=saver, name=GRAPH_NAME)
            if args.list:
                return list_threads(console, compiled, saver)
            if args.tree or args.fork:  # fork tree / fork: graph.fork_cli
                from graph.fork_cli import fork_main

                return fork_main(console, compiled, saver, stack, target, args, cfg, cfg_error, thread_id, agent, argv)
            stack.enter_context(thread_lease(target, thread_id))
            if args.judge:
                if not args.thread_id:
                    parser.error("--judge SPLIT needs --thread-id of a finished thread")
                return rejudge(console, compiled, thread_id, args.judge)
            return run_thread(console, compiled, saver, args, cfg, cfg_error, thread_id, agent, argv)
    except SttrlError as exc:
        console.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print(f"interrupted; resume with: {hint}", highlight=False)
        return 130
    except MemoryError:
        console.print(f"out of memory outside a training block; resume with: {hint}", highlight=False)
        return 3
    except Exception:
        console.print(f"unexpected error (report it with the traceback below); resume with: {hint}", highlight=False)
        raise


if __name__ == "__main__":
    sys.exit(main())
