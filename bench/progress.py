"""The benchmark's progress display: a rich bar for the runs and one for the current run's training steps
on a terminal; plain lines for blocks, evaluations, trials and results everywhere (nothing with quiet)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class BenchProgress:
    """A rich bar for the benchmark and one for the current run's training steps on a terminal; plain
    lines for blocks, evaluations, trials and results everywhere (nothing with ``quiet``)."""

    def __init__(self, console: Console, total_runs: int, quiet: bool = False) -> None:
        self.console, self.quiet = console, quiet
        self.progress: Progress | None = None
        self.overall = self.current = None
        self.key, self.block_steps = "", 1
        self.index, self.total = 0, total_runs  # the run in progress, set by the benchmark
        if console.is_terminal and not quiet:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=console,
            )
            self.progress.start()
            self.overall = self.progress.add_task("benchmark runs", total=total_runs, info="")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def start_run(self, key: str, steps: int, block_steps: int, note: str) -> None:
        self.key, self.block_steps = key, block_steps
        self.line(f"[{self.index}/{self.total}] {key}: {note}")
        if self.progress is not None:
            if self.current is not None:
                self.progress.remove_task(self.current)
            self.current = self.progress.add_task(f"{key} training steps", total=steps, info="")

    def steps(self, done: int, info: str = "") -> None:
        if self.progress is not None and self.current is not None:
            self.progress.update(self.current, completed=done, info=info)

    def end_run(self, text: str) -> None:
        self.line(f"  {self.key}: {text}")
        if self.progress is not None and self.overall is not None:
            self.progress.advance(self.overall)

    def episode_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "setup" and ev.get("phase") == "done":
            self.line(f"  {self.key}: start WER {ev['wer']:.3f} CER {ev['cer']:.3f} ({ev['seconds']:.1f} s setup)")
        elif kind == "decision":
            self.line(f"  {self.key} step {ev['step']}: {ev['action']} ({ev['source']})")
        elif kind == "train_step":
            done = (ev["block"] - 1) * self.block_steps + ev["step_in_block"]
            self.steps(done, f"block {ev['block']} loss {ev['loss']:.3f}")
        elif kind == "eval":
            self.line(f"  {self.key} block {ev['block']}: validation WER {ev['wer']:.3f} CER {ev['cer']:.3f}")
        elif kind == "train_end" and ev.get("status") != "ok":
            self.line(f"  {self.key} block {ev['block']}: {ev['status']} ({ev.get('note', '')})")
        elif kind == "judge":
            wer, cer = (("-" if v is None else f"{v:.3f}") for v in (ev["wer"], ev["cer"]))
            self.line(f"  {self.key}: judge WER {wer} CER {cer} on the hidden split")
