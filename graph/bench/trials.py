"""Controllers that run their own trials (kind ``trials`` in ``sttrl.controllers``): the interface the
benchmark calls, and the context it hands them.

A trials controller gets the same training budget (steps or samples) as an episode (see :mod:`graph.bench.budget`),
keeps its own files under ``ctx.out/runs/<run name>``, resumes from them when run again, and returns one
result dict with the fields of an episode's result (``hidden_wer``, ``curve``, ``train_steps``, …).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from graph.bench.budget import Budget, encoder_layers, search_space
from graph.bench.common import run_config
from sttrl.config import Config

if TYPE_CHECKING:
    from graph.bench.progress import BenchProgress


@dataclass
class BenchContext:
    """What a trials controller may use: the benchmark's config, directory and budget, and the search space."""

    cfg: Config
    out: Path
    budget: Budget
    _space: dict[str, Any] | None = field(default=None, repr=False)
    _max_freeze: int | None = field(default=None, repr=False)

    def max_freeze(self) -> int:
        if self._max_freeze is None:
            self._max_freeze = encoder_layers(self.cfg)
        return self._max_freeze

    def space(self) -> dict[str, Any]:
        """The static search space (computed once), with ``bench.tpe_lr_max`` applied; in samples, batch sizes
        above a trial's samples are left out."""
        if self._space is None:
            space = search_space(self.cfg, self.max_freeze(), self.cfg.bench.tpe_lr_max)
            if self.budget.unit == "samples":  # a trial cannot train fewer samples than one batch
                per = self.budget.units_per_trial // space["grad_accum"]
                space["batch_size"] = [b for b in space["batch_size"] if b <= per] or space["batch_size"][:1]
            self._space = space
        return self._space

    def seed_config(self, seed: int) -> Config:
        """The run's config: ``run.seed = seed`` and, with ``env.instances``, the instance of ``seed`` drawn in."""
        return run_config(self.cfg, seed, self.out)


class TrialsController(Protocol):
    """Runs (or resumes, or reads back) its trials for one seed and returns the run's result dict."""

    name: str

    def run(self, ctx: BenchContext, seed: int, progress: "BenchProgress") -> dict[str, Any]: ...


def judge_trial(tdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Judge a trial's saved final model on the hidden test split (read back when judged before); returns the
    report and the run record's ``final``."""
    import json

    from sttrl.errors import SttrlError
    from sttrl.judge import judge

    record = json.loads((tdir / "run.json").read_text())
    if not record.get("final") or not (tdir / "final" / "model.safetensors").is_file():
        raise SttrlError(f"the best trial {tdir} has no saved final model")
    path = tdir / "judge.json"
    report = json.loads(path.read_text()) if path.is_file() else judge(tdir, progress=False)
    return report, record["final"]
