"""One process per thread: a lease taken before a thread runs and released when the process ends.

- SQLite checkpointer: an exclusive ``flock`` on ``<db>.leases/<thread>.lock`` beside the database file.
  The kernel drops it when the holder dies (also on SIGKILL), so a dead holder's lease is taken over; a holder
  that lets go removes the file.
- Postgres checkpointer: a session-level advisory lock (``pg_try_advisory_lock``) keyed by the thread id,
  held on its own connection; the server drops it when that connection (its process) goes away.

A second process on the same thread gets :class:`ThreadBusyError` naming the thread and the live holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from graph.checkpointer import describe, is_postgres
from sttrl import extras
from sttrl.errors import SttrlError


class ThreadBusyError(SttrlError):
    """Another live process holds the thread."""


def _holder() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _busy(thread_id: str, holder: dict[str, object] | None) -> ThreadBusyError:
    who = (
        f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"
        if holder
        else "another process"
    )
    return ThreadBusyError(
        f"thread {thread_id} is running in {who}; wait for it to end, or stop that process "
        f"and run the same command again to resume"
    )


def _lock(path: Path, thread_id: str) -> int:
    """An open descriptor of ``path`` holding its ``flock``. A holder removes the file when it lets go: if that
    happened between this process's open and its lock, the locked file is no longer ``path``, so open it again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode() or "null")
            except ValueError:
                holder = None
            os.close(fd)
            raise _busy(thread_id, holder) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextmanager
def _file_lease(path: Path, thread_id: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(path, thread_id)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):  # removed while still held: no lease file outlives its holder
            path.unlink()
        os.close(fd)  # closing drops the flock


def _key(thread_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"sttrl-thread:{thread_id}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def _pg_lease(url: str, thread_id: str) -> Iterator[None]:
    psycopg = extras.load("psycopg", extra="postgres", what="a postgresql:// checkpointer")

    with psycopg.connect(url, autocommit=True) as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_key(thread_id),)).fetchone()[0]
        if not got:
            row = conn.execute(
                "SELECT a.pid, a.client_addr, a.backend_start FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.objid = (%s::bigint & 4294967295)::oid "
                "AND l.granted LIMIT 1",
                (_key(thread_id),),
            ).fetchone()
            holder = (
                {"pid": f"(server backend {row[0]})", "host": row[1] or describe(url), "since": row[2]} if row else None
            )
            raise _busy(thread_id, holder)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_key(thread_id),))


@contextmanager
def thread_lease(target: str, thread_id: str) -> Iterator[None]:
    """Hold ``thread_id`` for this process while the block runs (``target``: the checkpointer's file or URL)."""
    if is_postgres(target):
        with _pg_lease(target, thread_id):
            yield
    else:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in thread_id)
        with _file_lease(Path(f"{target}.leases") / f"{safe}.lock", thread_id):
            yield
