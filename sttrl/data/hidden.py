"""Guarding the hidden split: its synthetic sentences need the judge key, and every open is logged outside runs.

- The synthetic hidden sentences are drawn with a salt derived from the judge key (sttrl.judge.integrity), which
  is in no config, run directory or episode state: ``generate_sentences(hidden_domain, n, seed)`` with
  public arguments gives other sentences. Hidden scores are comparable across machines only when they
  share the key (``STTRL_JUDGE_KEY``).
- Every load of the hidden split and every generation of its sentences appends a line to
  ``$STTRL_HOME/hidden-access.jsonl`` (beside the key, never in a run directory), marked ``judge`` only
  inside :func:`judge_access`. The judge fails ``hidden_split_untouched`` when a non-judge access to the
  same data happened while the run was live (from its creation to its final save), in any process.
  An entry says what the access yielded: ``text`` (sentences, audio) or ``hashes`` (the manifest's listing of ids
  and hashes, which every episode builds and which holds no text); only ``text`` accesses fail a run.
- :func:`judge_access` is bound to the run being judged: it takes that run's record, which must be signed with the
  judge key and hold a saved final model (so a live run cannot pass its own access off as the judge's), and only an
  access to that run's data (its fingerprint) inside the block is marked ``judge``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sttrl.config import DataConfig
from sttrl.errors import HiddenSplitAccessError
from sttrl.keys import derive, sttrl_home, verify_record

ACCESS_LOG = "hidden-access.jsonl"
_judging: ContextVar[tuple[str, str] | None] = ContextVar("sttrl_judging", default=None)  # (run id, fingerprint)


def hidden_salt(cfg: DataConfig) -> str:
    """The salt of the hidden domain's sentences: only the judge key's holder can compute it."""
    return derive(f"sttrl-hidden-sentences:{cfg.hidden_domain}:{cfg.seed}").hex()[:32]


@contextmanager
def judge_access(record: Mapping[str, Any], fingerprint: str) -> Iterator[None]:
    """Accesses inside this block to the data with ``fingerprint`` are the judge's own, for the run whose ``record``
    (its ``run.json``) is signed with the judge key and holds its saved final model; anything else is refused."""
    ok, why = verify_record(record)
    if not ok:
        raise HiddenSplitAccessError(f"judge access refused: {why}")
    final = record.get("final") or {}
    if not final.get("sha256"):
        raise HiddenSplitAccessError(
            f"judge access refused: run {record.get('run_id')} has no saved final model (a live run is not judged)"
        )
    token = _judging.set((str(record["run_id"]), fingerprint))
    try:
        yield
    finally:
        _judging.reset(token)


def record_access(fingerprint: str, what: str, yields: str = "text") -> None:
    """Append one access to the log beside the judge key (append-only, flushed and synced). ``yields``: ``text``
    (hidden sentences or audio) or ``hashes`` (ids and hashes only)."""
    judging = _judging.get()
    judge = judging is not None and judging[1] == fingerprint
    entry = {
        "time": time.time(),
        "pid": os.getpid(),
        "what": what,
        "yields": yields,
        "data_fingerprint": fingerprint,
        "judge": judge,
        "judge_run": judging[0] if judge else None,
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
