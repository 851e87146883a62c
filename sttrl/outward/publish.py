"""Publishing a run outward without ever blocking or failing it: one background thread per run directory uploads
step records and artifacts to the configured sink (sttrl.outward.sinks) and logs them to the tracker
(sttrl.outward.tracking).

The episode calls two hooks: :func:`publish_step` after a step record is appended, :func:`publish_run` after the
judge wrote ``judge.json``. A bounded queue feeds the thread; each upload is retried with exponential back-off;
errors a retry cannot fix (credentials, a missing bucket) are not retried. ``publish_run`` re-sends every step and
artifact (uploads replace, so nothing is duplicated), waits up to ``run.sink_flush_seconds`` and writes the outcome
to ``run.json`` under ``"outward"``. A sink that stayed down is caught up by the next resume or
``python -m sttrl.sync``.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sttrl.io import atomic_write_json
from sttrl.outward.sinks import ARTIFACTS, Sink, describe_error, is_permanent, redact, step_key
from sttrl.outward.tracking import make_tracker
from sttrl.rundir import RUN_RECORD, TRAJECTORY

log = logging.getLogger(__name__)
_REGISTRY: dict[str, Publisher | None] = {}
_LOCK = threading.Lock()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def local_steps(run_dir: Path) -> list[dict[str, Any]]:
    """The step records of ``trajectory.jsonl`` (complete lines only)."""
    path = run_dir / TRAJECTORY
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line; Trajectory repairs it
    return out


class Publisher:
    """The upload and tracking thread of one run directory."""

    def __init__(
        self,
        run_dir: Path,
        run_cfg: dict[str, Any],
        run_id: str,
        queue_size: int = 1000,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
    ) -> None:
        self.run_dir, self.run_id, self.run_cfg = run_dir, run_id, run_cfg
        self.url: str | None = run_cfg.get("sink")
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.sink: Sink | None = None
        self.tracker: Any = None
        self.q: queue.Queue[tuple[str, Callable[[], None]] | None] = queue.Queue(maxsize=queue_size)
        self.uploaded: set[str] = set()
        self.failed: dict[str, Callable[[], None]] = {}  # key -> the upload to try again
        self.down = False
        self.last_error: str | None = None
        self.tracker_error: str | None = None
        self.tracker_name: str = run_cfg.get("tracker") or "none"
        self.seconds = 0.0
        self._idle = threading.Condition()
        self._busy = 0
        self._tracking = 0  # tracker jobs queued or running
        self._thread = threading.Thread(target=self._work, name=f"sttrl-publish-{run_id}", daemon=True)
        self._thread.start()

    # ----- queueing ---------------------------------------------------------------------------------------------
    def _submit(self, key: str, job: Callable[[], None]) -> None:
        with self._idle:
            self._busy += 1
            self._tracking += key.startswith("tracker/")
        try:
            self.q.put_nowait((key, job))
        except queue.Full:  # never block the episode: the run's end or sync sends it
            with self._idle:
                self._busy -= 1
                self._tracking -= key.startswith("tracker/")
                self.failed[key] = job
            self.last_error = self.last_error or "upload queue full"

    def step(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record) + "\n").encode("utf-8")
        if self.url:
            key = step_key(self.run_id, int(record["step"]))
            self._submit(key, lambda: self._sink().put(key, data))
        if self.tracker_name != "none":
            self._submit(f"tracker/step/{record['step']}", lambda: self._track("log_step", record))

    def catch_up(self) -> None:
        """Send every local step (a resume or a run end: the sink may have missed some while it was down)."""
        for rec in local_steps(self.run_dir):
            if self.url:
                key, data = step_key(self.run_id, int(rec["step"])), (json.dumps(rec) + "\n").encode("utf-8")
                self._submit(key, lambda key=key, data=data: self._sink().put(key, data))

    def artifacts(self) -> None:
        for name in ARTIFACTS:
            path = self.run_dir / name
            if self.url and path.is_file():
                key = f"{self.run_id}/{name}"
                self._submit(key, lambda key=key, path=path: self._sink().put(key, path.read_bytes()))
        if self.tracker_name != "none":
            self._submit("tracker/artifacts", lambda: self._track("log_artifacts", self.run_dir))

    # ----- the thread -------------------------------------------------------------------------------------------
    def _sink(self) -> Sink:
        if self.sink is None:
            self.sink = Sink(self.url or "", self.run_cfg.get("sink_options") or {})
        return self.sink

    def _track(self, method: str, arg: Any) -> None:
        if self.tracker is None:
            self.tracker = make_tracker(self.run_cfg, self.run_id, self.run_dir)
        getattr(self.tracker, method)(arg)

    def _work(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            key, job = item
            try:
                self._attempt(key, job)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._tracking -= key.startswith("tracker/")
                    self._idle.notify_all()

    def _attempt(self, key: str, job: Callable[[], None]) -> None:
        tries = 1 if self.down else self.retries
        delay = self.backoff
        for attempt in range(tries):
            t0 = time.perf_counter()
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - an upload or tracker must never fail the episode
                self.seconds += time.perf_counter() - t0
                if key.startswith("tracker/"):
                    self.tracker_error = f"{self.tracker_name}: {type(exc).__name__}: {exc}".replace("\n", " ")[:300]
                    return
                self.last_error = describe_error(exc, self.url or "")
                if is_permanent(exc) or attempt == tries - 1:
                    break
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            self.seconds += time.perf_counter() - t0
            if key.startswith("tracker/"):
                return
            self.uploaded.add(key)
            self.failed.pop(key, None)
            if self.down:  # the sink is back: send what it missed
                self.down = False
                for k, j in list(self.failed.items()):
                    self._submit(k, j)
            return
        self.failed[key] = job
        self.down = True
        log.warning("%s (%s); the run goes on, python -m sttrl.sync %s catches up", self.last_error, key, self.run_dir)

    # ----- the end ----------------------------------------------------------------------------------------------
    def flush(self, timeout: float) -> bool:
        """Wait until every queued upload finished (True) or ``timeout`` seconds passed (False)."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def status(self, flushed: bool) -> dict[str, Any]:
        with self._idle:
            queued, tracking = self._busy, self._tracking
        pending = sorted(self.failed)
        sink = None
        if self.url:
            sink = {
                "url": redact(self.url),
                "ok": flushed and not self.failed,
                "uploaded": len(self.uploaded),
                "pending": len(self.failed) + queued,
                "pending_keys": pending[:20],
                "last_error": self.last_error,
                "upload_seconds": round(self.seconds, 3),
                "time": time.time(),
            }
        tracker = None
        if self.tracker_name != "none":
            error = self.tracker_error or (f"{tracking} tracker calls not done in time" if tracking else None)
            tracker = {"name": self.tracker_name, "ok": error is None, "error": error}
        return {"sink": sink, "tracker": tracker}

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        if self.tracker is not None:
            try:
                self.tracker.finish()
            except Exception as exc:  # noqa: BLE001 - an upload or tracker must never fail the episode
                self.tracker_error = f"{self.tracker_name}: {type(exc).__name__}: {exc}"[:300]
        self.q.put(None)


def _publisher(run_dir: str | Path) -> Publisher | None:
    run_dir = Path(run_dir).resolve()
    key = str(run_dir)
    with _LOCK:
        if key in _REGISTRY:
            return _REGISTRY[key]
        record = _read_json(run_dir / RUN_RECORD)
        if record is None:
            return None  # not a run directory (yet): nothing to publish
        run_cfg = (record.get("config") or {}).get("run") or {}
        pub = None
        if run_cfg.get("sink") or (run_cfg.get("tracker") or "none") != "none":
            pub = Publisher(run_dir, run_cfg, record["run_id"])
            pub.catch_up()  # a resumed run sends what an earlier process could not
        _REGISTRY[key] = pub
        return pub


def publish_step(run_dir: str | Path, record: Any) -> None:
    """Hook: a step record was appended to ``run_dir/trajectory.jsonl``. Returns at once; never raises."""
    try:
        pub = _publisher(run_dir)
        if pub is not None:
            data = record if isinstance(record, dict) else record.model_dump(mode="json", by_alias=True)
            pub.step(data)
    except Exception as exc:  # noqa: BLE001 - an upload or tracker must never fail the episode
        log.warning("publishing step of %s failed: %s: %s", run_dir, type(exc).__name__, exc)


def publish_run(run_dir: str | Path, timeout: float | None = None) -> dict[str, Any] | None:
    """Hook: the run ended (``judge.json`` written). Sends every step and artifact, waits up to
    ``run.sink_flush_seconds``, records the outcome in ``run.json`` and returns it (None when nothing is configured).
    Never raises."""
    try:
        pub = _publisher(run_dir)
        if pub is None:
            return None
        timeout = float(pub.run_cfg.get("sink_flush_seconds", 60.0)) if timeout is None else timeout
        pub.catch_up()
        pub.artifacts()
        flushed = pub.flush(timeout)
        status = pub.status(flushed)
        write_status(pub.run_dir, status)
        if pub.url and flushed:  # the run record with the outcome goes last
            path = pub.run_dir / RUN_RECORD
            pub._submit(f"{pub.run_id}/run.json", lambda: pub._sink().put(f"{pub.run_id}/run.json", path.read_bytes()))
            pub.flush(min(timeout, 10.0))
        pub.close(min(timeout, 30.0))
        with _LOCK:
            _REGISTRY.pop(str(pub.run_dir), None)
        return status
    except Exception as exc:  # noqa: BLE001 - an upload or tracker must never fail the episode
        log.warning("publishing run %s failed: %s: %s", run_dir, type(exc).__name__, exc)
        return {"sink": {"ok": False, "last_error": f"{type(exc).__name__}: {exc}"[:300]}, "tracker": None}


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    """Record the outward status in ``run.json`` (read, update, atomic replace)."""
    record = _read_json(run_dir / RUN_RECORD)
    if record is not None:
        record["outward"] = status
        atomic_write_json(run_dir / RUN_RECORD, record)


def summary_line(status: dict[str, Any] | None) -> str | None:
    """One line for the run's summary, or None when nothing was configured."""
    if not status:
        return None
    parts = []
    sink = status.get("sink")
    if sink:
        if sink.get("ok"):
            parts.append(f"sink {sink.get('url')}: {sink.get('uploaded', 0)} uploads, all sent")
        else:
            why = str(sink.get("last_error") or "not sent in time").removeprefix(f"sink {sink.get('url')}: ")
            parts.append(
                f"sink {sink.get('url')}: {sink.get('pending', '?')} uploads pending ({why}); "
                "run python -m sttrl.sync RUN_DIR to catch up"
            )
    tr = status.get("tracker")
    if tr:
        parts.append(f"tracker {tr['name']}: " + ("ok" if tr.get("ok") else f"failed ({tr.get('error')})"))
    return "; ".join(parts) or None


def outward_line(run_dir: str | Path) -> str | None:
    """The summary line of the outcome recorded in ``run_dir/run.json`` (None when nothing was configured)."""
    record = _read_json(Path(run_dir) / RUN_RECORD) or {}
    return summary_line(record.get("outward"))


@atexit.register
def _drain() -> None:
    """At interpreter exit, give queued uploads a few seconds (the rest is caught up by resume or sync)."""
    for pub in list(_REGISTRY.values()):
        if pub is not None:
            pub.flush(5.0)
