"""Guarding the hidden split: its synthetic sentences need the judge key, and every open is logged outside runs.

- The synthetic hidden sentences are drawn with a salt derived from the judge key (sttrl.judge.integrity), which
  is in no config, run directory or episode state: ``generate_sentences(hidden_domain, n, seed)`` with
  public arguments gives other sentences. Hidden scores are comparable across machines only when they
  share the key (``STTRL_JUDGE_KEY``).
- Every load of the hidden split and every generation of its sentences appends a line to
  ``$STTRL_HOME/hidden-access.jsonl`` (beside the key, never in a run directory), marked ``judge`` only
  inside :func:`judge_access`. The judge fails ``hidden_split_untouched`` when a non-judge access to the
  same data happened while the run was live (from its creation to its final save), in any process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sttrl.config import DataConfig
from sttrl.keys import derive, sttrl_home

ACCESS_LOG = "hidden-access.jsonl"
_judging: ContextVar[str | None] = ContextVar("sttrl_judging", default=None)


def hidden_salt(cfg: DataConfig) -> str:
    """The salt of the hidden domain's sentences: only the judge key's holder can compute it."""
    return derive(f"sttrl-hidden-sentences:{cfg.hidden_domain}:{cfg.seed}").hex()[:32]


@contextmanager
def judge_access(run_id: str) -> Iterator[None]:
    """Hidden-split accesses inside this block are the judge's own (for run ``run_id``)."""
    token = _judging.set(run_id)
    try:
        yield
    finally:
        _judging.reset(token)


def record_access(fingerprint: str, what: str) -> None:
    """Append one access to the log beside the judge key (append-only, flushed and synced)."""
    entry = {
        "time": time.time(),
        "pid": os.getpid(),
        "what": what,
        "data_fingerprint": fingerprint,
        "judge": _judging.get() is not None,
        "judge_run": _judging.get(),
        "argv": sys.argv[:4],
    }
    path = sttrl_home() / ACCESS_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def accesses() -> list[dict[str, Any]]:
    """Every logged access (a torn last line is skipped)."""
    path = sttrl_home() / ACCESS_LOG
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
