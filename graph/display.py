"""Terminal output of ``python -m graph.run``: a live rich display of the stream's custom events
(training steps, evaluations, decisions), then a summary table and the judge result; the table of ``--list``.

On a terminal, each training block is a live progress bar; elsewhere (pipes, logs, tests) every
event is one plain line, e.g. ``train block 2 step 3/10 loss 2.314 lr 0.001 41.2 samples/s``.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from graph.checkpointer import thread_ids
from sttrl.outward.publish import outward_line
from sttrl.rundir import CONFIG_FILE, JUDGE_REPORT, PLOT, TRAJECTORY


def _f(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


class ProgressDisplay:
    """Turns ``{"type": ...}`` events from the graph's stream writer into terminal output."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self.progress: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop()

    def _start(self, description: str, total: int) -> None:
        """A live bar for one training block only, so sttrl's own progress bars (data synthesis, model
        conversion during setup) never meet a second live display."""
        self._stop()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[speed]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(description, total=total, loss="-", speed="")

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.progress, self.task = None, None

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "setup" and ev.get("phase") == "start":
            self.line(f"setup: building data and model for run dir {ev['run_dir']} (preset {ev['preset']})")
        elif kind == "setup":
            self.line(
                f"setup: start WER {_f(ev['wer'])} CER {_f(ev['cer'])} loss {_f(ev['loss'])} "
                f"on {ev['device']} ({ev['seconds']:.1f} s); budget {ev['max_actions']} decisions"
            )
        elif kind == "decision":
            extra = f" [{ev['note']}]" if ev.get("note") and ev["note"] not in ("unchanged", "stop") else ""
            self.line(f"step {ev['step']} decide: {ev['action']} ({ev['source']}){extra}: {ev['rationale']}")
        elif kind == "train_start":
            hp = ev["hp"]
            self.line(
                f"train block {ev['block']}: {ev['steps']} steps, lr {hp['lr']:.3g} batch {hp['batch_size']}"
                f"x{hp['grad_accum']} frozen {hp['freeze_layers']}"
            )
            if self.live:
                self._start(f"train block {ev['block']}", ev["steps"])
        elif kind == "train_step":
            if self.progress is not None and self.task is not None:
                self.progress.update(
                    self.task,
                    completed=ev["step_in_block"],
                    loss=f"{ev['loss']:.3f}",
                    speed=f"{ev['samples_per_s']:.1f} samples/s",
                )
            else:
                self.line(
                    f"train block {ev['block']} step {ev['step_in_block']}/{ev['steps_in_block']} "
                    f"loss {ev['loss']:.3f} lr {ev['lr']:.3g} {ev['samples_per_s']:.1f} samples/s"
                )
        elif kind == "train_end":
            self._stop()
            note = f" ({ev['note']})" if ev.get("note") else ""
            self.line(
                f"train block {ev['block']}: {ev['status']}{note}, mean loss {_f(ev['mean_loss'])}, "
                f"{ev['seconds']:.1f} s, {ev['samples_per_s']:.1f} samples/s, global step {ev['global_step']}"
            )
        elif kind == "eval_start":
            self.line(f"evaluate block {ev['block']} on the validation split")
        elif kind == "eval":
            self.line(
                f"evaluate block {ev['block']}: WER {_f(ev['wer'])} CER {_f(ev['cer'])} "
                f"({ev['n']} utterances, {ev['seconds']:.1f} s)"
            )
        elif kind == "reward":
            self.line(
                f"step {ev['step']} reward {ev['reward']:+.3f} (WER {_f(ev['wer'])}, best {_f(ev['best_wer'])}, "
                f"{ev['status']})"
            )
        elif kind == "judge_start":
            self.line(f"judge: episode ended ({ev['end_reason']}) after {ev['step']} steps; scoring the hidden split")
        elif kind == "judge":
            self.line(f"judge: WER {_f(ev['wer'])} CER {_f(ev['cer'])} score {ev['score']:.1f}")
        elif kind == "warning":
            self.line(f"warning: {ev['message']}")
        elif kind == "outward":
            self.line(ev["message"])


def summary_table(values: dict[str, Any]) -> Table:
    """One row per step: step, action, source, lr, batch, frozen, loss, WER, reward, status."""
    title = (
        f"thread {values.get('thread_id', '?')} (agent {values.get('agent', 'rule')}, "
        f"preset {values.get('config', {}).get('preset', '?')})"
    )
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    for col in ("step", "action", "source", "lr", "batch", "frozen", "loss", "WER", "reward", "status"):
        table.add_column(
            col, justify="left" if col in ("action", "source", "status") else "right", no_wrap=True, min_width=len(col)
        )
    start = values.get("start")
    if start:
        hp = values["records"][0]["hp_before"] if values.get("records") else values.get("hp", {})
        table.add_row(
            "0",
            "(start)",
            "",
            _f(hp.get("lr"), ".3g"),
            str(hp.get("batch_size", "")),
            str(hp.get("freeze_layers", "")),
            _f(start.get("loss")),
            _f(start.get("wer")),
            "",
            "",
        )
    for r in values.get("records", []):
        o = r["observation"]
        table.add_row(
            str(r["step"]),
            r["action"],
            r["source"],
            _f(o.get("lr"), ".3g"),
            str(o.get("batch_size")),
            str(o.get("freeze_layers")),
            _f(o.get("train_loss")) if r.get("train") else "-",
            _f(o.get("wer")),
            f"{r['reward']:+.3f}",
            r["status"],
        )
    return table


def judge_lines(report: dict[str, Any] | None) -> list[str]:
    if not report:
        return ["judge: no result (the episode has not finished)"]
    lines = [
        f"  {'PASS' if c['passed'] else 'FAIL'} {name}: {c['reason']}"
        for name, c in (report.get("checks") or {}).items()
    ]
    if report.get("scored"):
        lines.append(
            f"judge (hidden domain {report.get('hidden_domain')}): WER {_f(report['wer'])} "
            f"CER {_f(report['cer'])} score {report['score']:.1f}"
        )
    else:
        failed = [name for name, c in (report.get("checks") or {}).items() if not c["passed"]]
        measured = f", WER {_f(report['wer'])} measured but not trustworthy" if report.get("wer") is not None else ""
        lines.append(f"judge: not scored (failed: {', '.join(failed) or 'unknown'}{measured})")
    return lines


def print_summary(console: Console, values: dict[str, Any]) -> None:
    """The summary table, the judge's lines, the run's files and the outward (sink, tracker) outcome."""
    console.print(summary_table(values))
    for line in judge_lines(values.get("judge")):
        console.print(line, highlight=False, markup=False)
    run_dir = values.get("run_dir")
    if run_dir:
        files = ", ".join((TRAJECTORY, JUDGE_REPORT, PLOT, CONFIG_FILE))
        console.print(f"files: {run_dir}/{files}", highlight=False, markup=False)
        if line := outward_line(run_dir):  # sink / tracker outcome recorded in run.json
            console.print(line, highlight=False, markup=False)


LIST_COLUMNS = ("thread", "status", "steps", "agent", "preset", "start WER", "last WER", "judge score", "updated")


def list_threads(console: Console, compiled: Any, saver: Any, status: Any) -> int:
    """``--list``: one row per thread of the checkpointer, oldest first (``status(values, next)`` names its state)."""
    table = Table(title="threads")
    for col in (*LIST_COLUMNS, "run dir"):
        table.add_column(col)
    rows = []
    for tid in thread_ids(saver):
        snap = compiled.get_state({"configurable": {"thread_id": tid}})
        v = snap.values or {}
        start, obs, jr = v.get("start") or {}, v.get("observation") or {}, v.get("judge") or {}
        row = [
            tid,
            status(v, snap.next),
            f"{v.get('step', 0)}/{v.get('max_actions', '?')}",
            v.get("agent", "?"),
            (v.get("config") or {}).get("preset", v.get("preset", "?")),
            _f(start.get("wer")),
            _f(obs.get("wer")),
            _f(jr.get("score"), ".1f"),
            (snap.created_at or "")[:19],
            v.get("run_dir", "-"),
        ]
        rows.append((snap.created_at or "", row))
    for _, row in sorted(rows, key=lambda x: x[0]):
        table.add_row(*[str(c) for c in row])
    console.print(table if rows else "no threads yet")
    return 0
