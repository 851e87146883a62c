"""``python -m graph.run --fork THREAD --at STEP [--action A] [--thread-id NEW]`` and ``--tree THREAD``.

A fork is created by :mod:`graph.fork` under the new thread's lease and then run to its end like a resumed
thread. The tree lists every thread of the checkpointer whose ``parent`` chain leads to THREAD, with each
branch's actions from its fork point, its final validation WER and its judge result, and draws every
branch's validation WER against training samples into ``<THREAD's run dir>/fork-tree.png``.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.tree import Tree

from graph.checkpointer import thread_ids
from graph.fork import fork
from graph.lease import thread_lease
from graph.plot import save_figure
from graph.thread import Command, run_thread
from sttrl.errors import ForkError


def fork_main(cmd: Command, stack: ExitStack, target: str) -> int:
    """Dispatch ``--tree`` or ``--fork`` (the checkpointer is open; the new thread's lease is taken here)."""
    args, console, thread_id = cmd.args, cmd.console, cmd.thread_id
    if args.tree:
        return print_tree(console, cmd.compiled, cmd.saver, args.tree)
    if args.fork == thread_id:
        raise ForkError("--thread-id of a fork must differ from the thread it forks")
    stack.enter_context(thread_lease(target, thread_id))
    values = fork(cmd.compiled, args.fork, args.at, thread_id, action=args.action, run_dir=args.run_dir)
    p = values["parent"]
    console.print(
        f"thread {thread_id} forked from {p['thread']} after step {p['step']} (checkpoint "
        f"{p['checkpoint_sha256'][:12]}, run dir {values['run_dir']})"
        + (f", next decision {args.action}" if args.action else ""),
        highlight=False,
        markup=False,
    )
    return run_thread(cmd)


def branches(compiled: Any, saver: Any, root: str) -> dict[str, dict[str, Any]]:
    """``root`` and every thread descending from it by forks: thread id -> state values."""
    values = {tid: compiled.get_state({"configurable": {"thread_id": tid}}).values or {} for tid in thread_ids(saver)}
    if not values.get(root):
        raise ForkError(f"unknown thread {root!r}: it is not in this checkpointer (see --list)")
    keep, frontier = {root}, [root]
    while frontier:
        cur = frontier.pop()
        for tid, v in values.items():
            if tid not in keep and (v.get("parent") or {}).get("thread") == cur:
                keep.add(tid)
                frontier.append(tid)
    return {tid: values[tid] for tid in sorted(keep)}


def _label(tid: str, v: dict[str, Any], since: int) -> str:
    records = v.get("records") or []
    actions = " ".join(r["action"] for r in records[since:]) or "(none yet)"
    wer = (v.get("observation") or {}).get("wer")
    jr = v.get("judge") or {}
    judged = f"judge WER {jr['wer']:.3f} score {jr['score']:.1f}" if jr.get("wer") is not None else "not judged"
    status = "finished" if jr else f"step {v.get('step', 0)}/{v.get('max_actions', '?')}"
    return (
        f"[bold]{tid}[/bold] ({status}) steps {since + 1}..: {actions} | val WER {wer:.3f} | {judged}"
        if wer is not None
        else f"[bold]{tid}[/bold] ({status})"
    )


def print_tree(console: Console, compiled: Any, saver: Any, root: str) -> int:
    """Print the fork tree of ``root`` and write its validation curves; 0."""
    found = branches(compiled, saver, root)
    children: dict[str, list[str]] = {}
    for tid, v in found.items():
        if tid != root:
            children.setdefault(v["parent"]["thread"], []).append(tid)

    def add(node: Tree, tid: str) -> None:
        for child in sorted(children.get(tid, []), key=lambda t: (found[t]["parent"]["step"], t)):
            step = found[child]["parent"]["step"]
            add(node.add(f"fork at step {step}: " + _label(child, found[child], step)), child)

    tree = Tree(_label(root, found[root], 0))
    add(tree, root)
    console.print(tree)
    run_dir = found[root].get("run_dir")
    if run_dir:
        path = write_tree_plot(Path(run_dir) / "fork-tree.png", found)
        console.print(f"validation curves of {len(found)} branches: {path}", highlight=False, markup=False)
    return 0


def curve(v: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(training samples spent, validation WER) after each trained step of a branch, from its start."""
    xs, ys = [0.0], [float((v.get("start") or {}).get("wer", float("nan")))]
    for r in v.get("records") or []:
        if r.get("eval"):
            xs.append(float((r.get("spent") or {}).get("samples", 0)))
            ys.append(float(r["eval"]["wer"]))
    return xs, ys


def write_tree_plot(path: Path, found: dict[str, dict[str, Any]]) -> Path:
    """Every branch's validation WER against training samples, one line each, into ``path`` (PNG, atomic)."""
    from graph.plot import pyplot  # matplotlib loads only when a tree is drawn

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for tid, v in found.items():
        xs, ys = curve(v)
        parent = v.get("parent")
        label = tid if not parent else f"{tid} (fork of {parent['thread']} at step {parent['step']})"
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("training samples")
    ax.set_ylabel("validation WER")
    ax.set_title("fork tree: validation WER per branch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
