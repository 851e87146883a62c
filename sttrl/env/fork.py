"""A run directory forked from another at block ``step``: what ``python -m graph.run --fork`` writes.

The child shares every file that neither run rewrites with its parent through hard links (a copy when
the filesystem refuses them): ``config.yaml``, ``processor/``, the evaluations of blocks ``0..step`` and the
training checkpoint ``checkpoints/block-{step}``, from which the child's training continues. Every writer
in sttrl replaces files atomically (temp file + rename), so a linked file is never modified in place.
The trajectory holds the parent's first ``step`` records; ``run.json`` gets a new run id, a ``parent``
record (run, thread, step, checkpoint hash) and a new signature (sttrl.judge.integrity).

The child is assembled under a hidden temporary name and renamed into place: on any error nothing is left.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sttrl.errors import CheckpointError, ForkError
from sttrl.io import atomic_write_json
from sttrl.keys import sign_record
from sttrl.rundir import CONFIG_FILE, RUN_RECORD, TRAJECTORY, block_name, new_run_id
from sttrl.train.checkpoint import read_checkpoint_record

SHARED_FILES = (CONFIG_FILE,)
SHARED_DIRS = ("processor",)
DROPPED_RECORD_KEYS = ("final", "signature", "outward", "parent")


def link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link ``src`` to ``dst`` (``"link"``), or copy it when the filesystem refuses (``"copy"``)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
        return "link"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"


def link_tree(src: Path, dst: Path) -> dict[str, int]:
    """Share every file under ``src`` at the same place under ``dst``; counts of files linked and copied."""
    counts = {"link": 0, "copy": 0}
    for path in sorted(src.rglob("*")):
        if path.is_file():
            counts[link_or_copy(path, dst / path.relative_to(src))] += 1
    return counts


def block_checkpoint(run_dir: Path, step: int, keep: int | None = None) -> Path:
    """The complete checkpoint of block ``step`` in ``run_dir``, or a CheckpointError naming it."""
    path = run_dir / "checkpoints" / block_name(step)
    if not (path / "state.json").is_file():
        kept = f"env.keep_checkpoints={keep} keeps only the last {keep} blocks; " if keep else ""
        raise CheckpointError(
            f"cannot fork at step {step}: checkpoint {path} was not kept ({kept}run with "
            "env.keep_checkpoints=0 to keep every block)"
        )
    return path


def fork_run_dir(
    parent_dir: str | Path,
    child_dir: str | Path,
    step: int,
    records: Sequence[Mapping[str, Any]],
    parent: Mapping[str, Any],
    run_id: str | None = None,
) -> dict[str, Any]:
    """Create ``child_dir`` as the fork of ``parent_dir`` after block ``step``; ``records`` are the parent's
    first ``step`` trajectory records and ``parent`` what to record about the parent (thread, step…).
    Returns ``{run_id, checkpoint: {block, path, sha256}, parent, linked, copied, bytes_new}``."""
    parent_dir, child_dir = Path(parent_dir), Path(child_dir)
    record_path = parent_dir / RUN_RECORD
    if not record_path.is_file():
        raise ForkError(f"parent run directory {parent_dir} has no {RUN_RECORD}")
    record = json.loads(record_path.read_text())
    keep = (record.get("config") or {}).get("env", {}).get("keep_checkpoints")
    ckpt = block_checkpoint(parent_dir, step, keep)
    if child_dir.exists():
        raise ForkError(f"run directory {child_dir} already exists: choose another --thread-id or --run-dir")
    if len(records) != step or [r.get("step") for r in records] != list(range(1, step + 1)):
        raise ForkError(f"fork at step {step} needs the parent's records 1..{step}, got {len(records)}")
    sha = read_checkpoint_record(ckpt)["hashes"]["model.safetensors"]
    run_id = run_id or new_run_id()
    tmp = child_dir.parent / f".{child_dir.name}.fork-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {"link": 0, "copy": 0}
    try:
        tmp.mkdir(parents=True)
        for name in SHARED_FILES:
            if (parent_dir / name).is_file():
                counts[link_or_copy(parent_dir / name, tmp / name)] += 1
        for name in SHARED_DIRS:
            if (parent_dir / name).is_dir():
                for k, v in link_tree(parent_dir / name, tmp / name).items():
                    counts[k] += v
        for k, v in link_tree(ckpt, tmp / "checkpoints" / ckpt.name).items():
            counts[k] += v
        for block in range(step + 1):
            ev = parent_dir / "evals" / f"{block_name(block)}.json"
            if ev.is_file():
                counts[link_or_copy(ev, tmp / "evals" / ev.name)] += 1
        lines = "".join(json.dumps(dict(r), sort_keys=False) + "\n" for r in records)
        (tmp / TRAJECTORY).write_text(lines, encoding="utf-8")
        parent_rec = {
            **dict(parent),
            "run_id": record["run_id"],
            "run_dir": str(parent_dir),
            "step": step,
            "checkpoint_sha256": sha,
        }
        child = {k: v for k, v in record.items() if k not in DROPPED_RECORD_KEYS}
        child.update(run_id=run_id, created=time.time(), final=None, parent=parent_rec)
        child["signature"] = sign_record(child)
        atomic_write_json(tmp / RUN_RECORD, child)
        child_dir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, child_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    new_bytes = sum(p.stat().st_size for p in child_dir.rglob("*") if p.is_file() and p.stat().st_nlink == 1)
    return {
        "run_id": run_id,
        "parent": parent_rec,
        "linked": counts["link"],
        "copied": counts["copy"],
        "bytes_new": new_bytes,
        "checkpoint": {"block": step, "path": str(child_dir / "checkpoints" / ckpt.name), "sha256": sha},
    }
