"""Crash-safe file writes and hashing (write to a temp file in the same folder, fsync, rename), and the one JSONL
reader."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``path`` only when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_writer(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_replace_dir(tmp_dir: Path, final_dir: Path) -> Path:
    """Move a fully written ``tmp_dir`` to ``final_dir``; an existing ``final_dir`` is replaced whole."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
    return final_dir


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_jsonl(
    path: str | Path, *, torn: Literal["raise", "skip", "empty"] = "skip", error: type[Exception] = ValueError
) -> list[dict[str, Any]]:
    """The records of a JSONL file, one per non-empty line; ``[]`` when the file does not exist.

    A line that is not valid JSON (a torn last line after a crash, or an edited file) is skipped (``torn="skip"``),
    kept as ``{}`` so that positions still count (``"empty"``: what an integrity check reports), or raised as
    ``error`` naming the file and the line (``"raise"``)."""
    path = Path(path)
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            if torn == "empty":
                out.append({})
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if torn == "raise":
                raise error(f"{path}: line {n} is not valid JSON") from None
            if torn == "empty":
                out.append({})
    return out
