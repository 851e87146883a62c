"""Append-only JSONL trajectory: exactly one record per step, flushed per line, idempotent on re-append.
Publishing a written step to sinks and trackers is the episode's append phase (:func:`sttrl.env.episode.append`),
not the writer's."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sttrl.errors import IntegrityError
from sttrl.io import read_jsonl

SCHEMA = "sttrl.step/1"


class StepRecord(BaseModel):
    """One environment step: the decision, what training and evaluation measured, and the reward."""

    model_config = ConfigDict(extra="forbid")

    schema_: str = Field(SCHEMA, alias="schema")
    run_id: str
    step: int = Field(ge=1)
    action: str
    source: str = Field("policy", description="Who decided: rule, random, static, llm, llm-parser, fallback-rule…")
    rationale: str = ""
    clamped: bool = False
    hp_before: dict[str, float | int]
    hp_after: dict[str, float | int]
    status: str
    reward: float
    observation: dict[str, Any]
    train: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    instance: dict[str, Any] | None = Field(None, description="The instance the episode was drawn for (env.instances).")
    spent: dict[str, float] | None = Field(
        None,
        description="Budget spent by the episode up to and including this step: training samples and "
        "optimizer steps attempted (rolled-back ones included), validation WER evaluations (decodes, the start's "
        "included; env.eval_every skips some, the loss is measured every block); wall time is in timings.",
    )
    time: float = Field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=False)


class Trajectory:
    """``trajectory.jsonl`` of one run. Appending a step already present is a no-op (crash-safe retries)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()

    def _repair(self) -> None:
        """Drop a torn last line left by a crash mid-write (never a complete record)."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path, torn="raise", error=IntegrityError)

    def steps(self) -> list[int]:
        return [r["step"] for r in self.records()]

    def append(self, record: StepRecord) -> bool:
        """Append ``record`` unless its step is already written; returns True when written."""
        if record.step in self.steps():
            return False
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(record.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return True
