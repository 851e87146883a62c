"""The CLI's LangGraph checkpointer: SQLite (one file, default ``<run.out_dir>/checkpoints.sqlite``,
shared by all threads) or Postgres for a ``postgresql://`` URL, so several workers share threads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver

from sttrl import extras

POSTGRES_PREFIXES = ("postgresql://", "postgres://")
# A Postgres advisory-lock key ("sttrl" in ASCII): the workers of a benchmark open the same database at once, and
# LangGraph's PostgresSaver.setup() (CREATE TABLE IF NOT EXISTS, then INSERT of each migration) is not safe run
# concurrently: two first setups collide on the migrations' keys. Setup runs under this lock, one worker at a time.
SETUP_LOCK = 0x737474726C


def _take_setup_lock(conn: Any) -> None:
    """Take :data:`SETUP_LOCK` (a session lock; the saver's connection is in autocommit). Polled, not waited for:
    a setup's CREATE INDEX CONCURRENTLY waits for every open transaction, so a worker blocked inside
    ``pg_advisory_lock`` would deadlock with the one holding the lock."""
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (SETUP_LOCK,)).fetchone()
        if row["locked"] if isinstance(row, dict) else row[0]:
            return
        time.sleep(0.05)


def is_postgres(target: str) -> bool:
    return target.startswith(POSTGRES_PREFIXES)


def describe(target: str) -> str:
    """``target`` without a password, for messages."""
    if is_postgres(target) and "@" in target:
        scheme, rest = target.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else target
    return target


@contextmanager
def open_checkpointer(target: str) -> Iterator[Any]:
    """A ready checkpointer for ``target`` (a SQLite file path or a Postgres URL); closed on exit."""
    if is_postgres(target):
        extras.require(
            "langgraph.checkpoint.postgres", "psycopg", extra="postgres", what="a postgresql:// checkpointer"
        )
        from langgraph.checkpoint.postgres import PostgresSaver  # optional: only for Postgres URLs

        with PostgresSaver.from_conn_string(target) as saver:
            _take_setup_lock(saver.conn)
            try:
                saver.setup()
            finally:
                saver.conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))
            yield saver
    else:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        with SqliteSaver.from_conn_string(str(path)) as saver:
            saver.setup()
            yield saver


def thread_ids(saver: Any) -> list[str]:
    """Every thread id the checkpointer holds."""
    query = "SELECT DISTINCT thread_id FROM checkpoints"
    conn = getattr(saver, "conn", None)
    if conn is not None:
        rows = conn.execute(query).fetchall()
        return sorted(r["thread_id"] if isinstance(r, dict) else r[0] for r in rows)
    return sorted({c.config["configurable"]["thread_id"] for c in saver.list(None)})
