"""``python -m sttrl.sync RUN_DIR…``: upload run directories to their sink now, synchronously.

Catches up what a run could not send while its sink was down (every step record and artifact is sent again;
uploads replace, so nothing is duplicated) and records the outcome in ``run.json``. ``--sink URL`` sends to
another sink than the one in the run's config. Exit status 0 when everything was sent, 2 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sttrl.errors import SinkError, SttrlError
from sttrl.outward.publish import local_steps, write_status
from sttrl.outward.sinks import ARTIFACTS, Sink, check_sink_settings, describe_error, is_permanent, redact, step_key
from sttrl.rundir import RUN_RECORD


def _put(sink: Sink, key: str, data: bytes, retries: int = 3) -> None:
    for attempt in range(retries):
        try:
            sink.put(key, data)
            return
        except Exception as exc:  # noqa: BLE001 - turned into one line
            if is_permanent(exc) or attempt == retries - 1:
                raise SinkError(describe_error(exc, sink.url)) from None
            time.sleep(0.5 * 2**attempt)


def sync_run(run_dir: str | Path, url: str | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Upload one run directory; returns the sink status written to ``run.json``. Raises SinkError on failure."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_RECORD
    if not path.is_file():
        raise SttrlError(f"{run_dir} is not a run directory: run.json is missing")
    record = json.loads(path.read_text())
    run_cfg = (record.get("config") or {}).get("run") or {}
    url = url or run_cfg.get("sink")
    if not url:
        raise SttrlError(f"{run_dir}: run.sink is not set in its config; pass --sink URL")
    options = (run_cfg.get("sink_options") or {}) if options is None else options
    try:
        check_sink_settings(url, options)
    except ValueError as exc:
        raise SttrlError(str(exc)) from None
    sink = Sink(url, options)
    run_id = record["run_id"]
    t0, n = time.perf_counter(), 0
    for rec in local_steps(run_dir):
        _put(sink, step_key(run_id, int(rec["step"])), (json.dumps(rec) + "\n").encode("utf-8"))
        n += 1
    for name in ARTIFACTS:
        if name != RUN_RECORD and (run_dir / name).is_file():
            _put(sink, f"{run_id}/{name}", (run_dir / name).read_bytes())
            n += 1
    status = {
        "url": redact(url),
        "ok": True,
        "uploaded": n + 1,
        "pending": 0,
        "pending_keys": [],
        "last_error": None,
        "upload_seconds": round(time.perf_counter() - t0, 3),
        "time": time.time(),
        "by": "sttrl.sync",
    }
    outward = dict(record.get("outward") or {})
    outward["sink"] = status
    write_status(run_dir, outward)
    _put(sink, f"{run_id}/run.json", path.read_bytes())
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sttrl.sync", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--sink", help="sink URL (default: run.sink of each run's config)")
    args = p.parse_args(argv)
    code = 0
    for run_dir in args.run_dirs:
        try:
            st = sync_run(run_dir, args.sink)
            print(f"{run_dir}: {st['uploaded']} objects sent to {st['url']} in {st['upload_seconds']:.2f} s")
        except SttrlError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 2
    return code


if __name__ == "__main__":
    sys.exit(main())
