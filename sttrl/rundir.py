"""The names of the files in a run directory, in one place, and the hashes of its final model.

config.yaml            resolved config                         CONFIG_FILE
run.json               run record (ids, hashes, signature)     RUN_RECORD
trajectory.jsonl       one step record per line                TRAJECTORY
judge.json             the judge's report on the test split    JUDGE_REPORT (judge-<split>.json otherwise)
judge-utterances.json  the judge's per-utterance errors        JUDGE_UTTERANCES
plot.png               the episode's curves                    PLOT
processor/             feature extractor + tokenizer           PROCESSOR
checkpoints/block-NNNN complete training checkpoints           CHECKPOINTS, block_name()
evals/block-NNNN.json  validation result after block N         EVALS
final/                 the model the judge scores              FINAL
meta.json              metadata posted through the collect API META
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from sttrl.io import sha256_file

CONFIG_FILE = "config.yaml"
RUN_RECORD = "run.json"
TRAJECTORY = "trajectory.jsonl"
JUDGE_REPORT = "judge.json"
JUDGE_UTTERANCES = "judge-utterances.json"
PLOT = "plot.png"
PROCESSOR = "processor"
CHECKPOINTS = "checkpoints"
EVALS = "evals"
FINAL = "final"
META = "meta.json"
FINAL_FILES = ("model.safetensors", "config.json", "generation_config.json")


def block_name(block: int) -> str:
    """``block-NNNN``: the name of block ``block``'s checkpoint folder and evaluation file."""
    return f"block-{block:04d}"


def judge_report_name(split: str) -> str:
    """``judge.json`` for the test split, ``judge-<split>.json`` for another."""
    return JUDGE_REPORT if split == "test" else f"judge-{split}.json"


def final_file_hashes(final_dir: Path) -> dict[str, str]:
    """sha256 of the final model's weights, config and generation config (those present)."""
    return {name: sha256_file(final_dir / name) for name in FINAL_FILES if (final_dir / name).is_file()}


def new_run_id() -> str:
    """A new run id: the local time and six random hex digits (sortable by start)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
