"""One thread of ``python -m graph.run``: start it, resume it, show it, or judge it again.

A thread's status comes from its checkpointed state: ``new`` (nothing saved), ``finished`` (the judge has run) or
``unfinished``. A new thread's input (the resolved config, the agent, the run directory, the instance) is the first
thing the checkpointer saves, before setup runs: a thread whose setup never finished resumes with that input, never
with the config of the command that resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from graph import live
from graph.agents import DEFAULT_MODEL, make_agent, resolve_api_key
from graph.display import ProgressDisplay, print_summary
from graph.graph import recursion_limit
from graph.state import EpisodeContext
from sttrl.config import Config, config_from_dict, secret
from sttrl.env import episode
from sttrl.errors import CheckpointError, SttrlError
from sttrl.judge.integrity import expected_from_state

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


def quiet_library_bars(everything: bool = False) -> None:
    """Turn off the libraries' own progress bars (they would cut through a live display); ``everything``
    (``--quiet``, the benchmark's logs) also every tqdm bar a library draws directly (``sttrl.quiet``)."""
    from sttrl.quiet import library_bars_off, quiet  # datasets and transformers load with the episode anyway

    quiet() if everything else library_bars_off()


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


def discard_failed_setup(saver: Any, thread_id: str, run_dir: Path | None) -> None:
    """A setup that never trained leaves nothing behind: the thread is deleted, and the run directory too
    unless it holds trained blocks."""
    with contextlib.suppress(Exception):  # best effort: the error that ended setup is what the user needs
        saver.delete_thread(thread_id)
    if run_dir is not None and run_dir.is_dir():
        ckpts = run_dir / "checkpoints"
        trained = [p for p in ckpts.glob("block-*") if p.name != "block-0000"] if ckpts.is_dir() else []
        if not trained:
            shutil.rmtree(run_dir, ignore_errors=True)


def check_agent(name: str, cfg: Config, model: str | None) -> None:
    """Resolve the secrets this run needs (once, here at the entry point) and build the agent once, so that
    a missing API key or package fails before any training."""
    if "hub" in (cfg.model.source, cfg.data.source):
        live.set_secrets(hf_token=secret("HF_TOKEN"))
    key = None
    if name == "llm":
        model = model or DEFAULT_MODEL
        key = resolve_api_key(model)
        live.set_api_key(model, key)
    make_agent(name, cfg, model, api_key=key)


@dataclass
class Plan:
    """How a thread will run: its input (None resumes from the checkpoint), budget and run directory."""

    inp: dict[str, Any] | None
    max_actions: int
    run_dir: Path | None
    first_setup: bool  # setup has not finished yet: a failure in it discards the thread


def plan_new(console: Console, args: argparse.Namespace, cfg: Config, thread_id: str, agent: Any) -> Plan:
    """A new thread: this command's config, agent and run directory."""
    inp = episode_input(cfg, args.agent, args.model, args.run_dir, args.instance)
    if agent is None:
        check_agent(args.agent, cfg, args.model)
    console.print(f"thread {thread_id} (new episode; resume or show it with --thread-id {thread_id})", highlight=False)
    run_dir = Path(args.run_dir) if args.run_dir else Path(cfg.run.out_dir) / thread_id
    return Plan(inp, cfg.env.max_actions, run_dir, first_setup=True)


def plan_resume(console: Console, snap: Any, thread_id: str, agent: Any, argv: list[str]) -> Plan:
    """An unfinished thread: the config, agent and run directory it was started with (also when its setup never
    finished: the input it was started with is in its first checkpoint)."""
    values = snap.values or {}
    if not values.get("config"):
        raise CheckpointError(
            f"thread {thread_id} holds no config (it was not started by python -m graph.run or the server's "
            "episode input); start a new thread"
        )
    thread_cfg = config_from_dict(values["config"])
    if agent is None:
        check_agent(values.get("agent") or "rule", thread_cfg, values.get("model"))
    max_actions = values.get("max_actions") or thread_cfg.env.max_actions
    done = setup_done(values)
    where = (
        f"at {', '.join(snap.next) or 'its last saved writes'} after step {values.get('step', 0)} of {max_actions}"
        if done
        else "at setup, which never finished"
    )
    console.print(f"thread {thread_id} resumes {where} (with the config it started with)", highlight=False)
    if ignored := ignored_options(argv):
        console.print(f"ignored on resume: {', '.join(ignored)}", highlight=False, markup=False)
    run_dir = values.get("run_dir") or (None if done else str(Path(thread_cfg.run.out_dir) / thread_id))
    if done:
        episode.sync_trajectory(run_dir, values.get("records") or [])  # the state is the source of truth
    return Plan(None, max_actions, Path(run_dir) if run_dir else None, first_setup=not done)


@dataclass
class Command:
    """What one invocation of ``python -m graph.run`` works with: its console, the compiled graph and its checkpointer,
    the parsed options, this command's config (or the error resolving it), the thread, an injected agent, argv."""

    console: Console
    compiled: Any
    saver: Any
    args: argparse.Namespace
    cfg: Config | None
    cfg_error: SttrlError | None
    thread_id: str
    agent: Any
    argv: list[str]


def run_thread(cmd: Command) -> int:
    """Start, resume or show the command's thread; stream its progress; print the summary."""
    console, compiled, thread_id = cmd.console, cmd.compiled, cmd.thread_id
    snap = compiled.get_state({"configurable": {"thread_id": thread_id}})
    status = thread_status(snap.values or {}, snap.next)
    if status == "finished":
        console.print(f"thread {thread_id} is {status}", highlight=False)
        print_summary(console, snap.values)
        return 0
    if status == "new":
        if cmd.cfg_error is not None:
            raise cmd.cfg_error
        assert cmd.cfg is not None
        plan = plan_new(console, cmd.args, cmd.cfg, thread_id, cmd.agent)
    else:
        plan = plan_resume(console, snap, thread_id, cmd.agent, cmd.argv)
    quiet_library_bars(everything=cmd.args.quiet)
    try:
        with ProgressDisplay(console, quiet=cmd.args.quiet) as display:
            values = stream_episode(
                compiled,
                thread_id,
                plan.inp,
                plan.max_actions,
                agent=cmd.agent,
                progress=console.is_terminal and not cmd.args.quiet,
                on_event=display.event,
            )
    except SttrlError:
        if plan.first_setup and not setup_done(
            compiled.get_state({"configurable": {"thread_id": thread_id}}).values or {}
        ):
            discard_failed_setup(cmd.saver, thread_id, plan.run_dir)
        raise
    print_summary(console, values)
    return 0


def rejudge(console: Console, compiled: Any, thread_id: str, split: str) -> int:
    """The judge on a finished thread, with what the run directory cannot rewrite taken from the checkpointer:
    0 when every check passed, 1 (the failed checks printed) otherwise."""
    # torch and transformers: the judge loads the model; the rest of the CLI stays light
    from sttrl.judge import scoring as judge_mod

    snap = compiled.get_state({"configurable": {"thread_id": thread_id}})
    values = snap.values or {}
    if thread_status(values, snap.next) != "finished":
        raise CheckpointError(
            f"thread {thread_id} has not finished (no final model to judge); resume it first with "
            f"python -m graph.run --thread-id {thread_id}"
        )
    report = judge_mod.judge(
        values["run_dir"], progress=False, expected=expected_from_state(values), split=split, hf_token=live.hf_token()
    )
    failed = {name: c["reason"] for name, c in report["checks"].items() if not c["passed"]}
    if report.get("wer") is None:
        measured = "not measured"
    else:
        measured = (
            f"WER {report['wer']:.4f} CER {report['cer']:.4f} score {report['score']:.1f} over "
            f"{report['n_utterances']} utterances"
        )
    verdict = f"FAILED checks: {', '.join(failed)}" if failed else "all checks passed"
    console.print(f"thread {thread_id}: judge ({split} split) {measured}; {verdict}", highlight=False, markup=False)
    for name, reason in failed.items():
        console.print(f"  FAIL {name}: {reason}", highlight=False, markup=False)
    return 0 if report["passed_all_checks"] else 1
