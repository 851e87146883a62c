"""``python -m sttrl.export SOURCES… --out DIR|URL``: runs as a ``datasets`` Dataset in Parquet, one row per step.

A source is a run directory, a folder of run directories, or a sink prefix URL (``s3://bucket/prefix``,
``file:///…``, ``memory://…``) holding ``<run_id>/steps/*.json`` (sttrl.outward.sinks' layout). Each row carries
the step record flattened into typed columns plus the run's metadata (preset, instance, controller, seed, judge result).
The output is ``DIR/data/train-00000-of-00001.parquet`` and ``DIR/sttrl_export.json`` (schema version, rows, runs);
read it with ``datasets.load_dataset("parquet", data_files="DIR/data/*.parquet")``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from sttrl.errors import SttrlError
from sttrl.io import atomic_write_bytes
from sttrl.outward.publish import local_steps
from sttrl.outward.sinks import Sink
from sttrl.rundir import CONFIG_FILE, JUDGE_REPORT, META, RUN_RECORD, TRAJECTORY

EXPORT_SCHEMA = "sttrl.export/1"
DATA_FILE = "data/train-00000-of-00001.parquet"
HP = ("lr", "batch_size", "grad_accum", "freeze_layers")


def features() -> Any:
    """The dataset's declared columns (nullable where a run or a step may lack the value)."""
    from datasets import Features, Value  # about 3 s to import (pyarrow): --help and the row readers do without

    cols: dict[str, Any] = {
        "schema_version": Value("string"),
        "record_schema": Value("string"),
        "run_id": Value("string"),
        "step": Value("int32"),
        "action": Value("string"),
        "source": Value("string"),
        "rationale": Value("string"),
        "clamped": Value("bool"),
        "status": Value("string"),
        "reward": Value("float64"),
    }
    for when in ("before", "after"):
        for k in HP:
            cols[f"{k}_{when}"] = Value("float64") if k == "lr" else Value("int32")
    cols.update(
        {
            "train_loss": Value("float64"),
            "wer": Value("float64"),
            "cer": Value("float64"),
            "step_seconds": Value("float64"),
            "time": Value("float64"),
            "observation": Value("string"),
            "train": Value("string"),
            "eval": Value("string"),
            "timings": Value("string"),
            "preset": Value("string"),
            "instance": Value("string"),
            "controller": Value("string"),
            "seed": Value("int64"),
            "model": Value("string"),
            "hidden_domain": Value("string"),
            "max_actions": Value("int32"),
            "judge_scored": Value("bool"),
            "judge_wer": Value("float64"),
            "judge_cer": Value("float64"),
            "judge_score": Value("float64"),
            "judge_passed": Value("bool"),
        }
    )
    return Features(cols)


def run_metadata(
    run_record: dict[str, Any] | None,
    judge: dict[str, Any] | None,
    meta: dict[str, Any] | None,
    steps: list[dict[str, Any]],
) -> dict[str, Any]:
    """The per-run columns from ``run.json``, ``judge.json`` and collected ``meta.json`` (each may be missing)."""
    cfg = (run_record or {}).get("config") or {}
    meta = meta or {}
    sources = Counter(s.get("source") for s in steps if s.get("action") != "stop")
    model = cfg.get("model") or {}
    judge = judge or meta.get("judge") or {}
    inst = meta.get("instance")
    return {
        "preset": meta.get("preset", cfg.get("preset")),
        "instance": inst if inst is None or isinstance(inst, str) else json.dumps(inst),  # instance sets: nullable
        "controller": meta.get("controller") or (sources.most_common(1)[0][0] if sources else None),
        "seed": meta.get("seed", (cfg.get("run") or {}).get("seed")),
        "model": meta.get("model") or (f"{model.get('source')}:{model.get('name') or 'builtin'}" if model else None),
        "hidden_domain": judge.get("hidden_domain") or (cfg.get("data") or {}).get("hidden_domain"),
        "max_actions": meta.get("max_actions", (cfg.get("env") or {}).get("max_actions")),
        "judge_scored": judge.get("scored"),
        "judge_wer": judge.get("wer"),
        "judge_cer": judge.get("cer"),
        "judge_score": judge.get("score"),
        "judge_passed": judge.get("passed_all_checks"),
    }


def step_row(rec: dict[str, Any], run_meta: dict[str, Any]) -> dict[str, Any]:
    obs, tr, ev = rec.get("observation") or {}, rec.get("train"), rec.get("eval")
    row: dict[str, Any] = {
        "schema_version": EXPORT_SCHEMA,
        "record_schema": rec.get("schema"),
        "run_id": rec["run_id"],
        "step": rec["step"],
        "action": rec["action"],
        "source": rec.get("source"),
        "rationale": rec.get("rationale"),
        "clamped": rec.get("clamped"),
        "status": rec.get("status"),
        "reward": rec.get("reward"),
    }
    for when in ("before", "after"):
        hp = rec.get(f"hp_{when}") or {}
        for k in HP:
            row[f"{k}_{when}"] = hp.get(k)
    row.update(
        {
            "train_loss": (tr or {}).get("mean_loss", obs.get("train_loss")),
            "wer": (ev or {}).get("wer", obs.get("wer")),
            "cer": (ev or {}).get("cer", obs.get("cer")),
            "step_seconds": (rec.get("timings") or {}).get("step_seconds"),
            "time": rec.get("time"),
            "observation": json.dumps(obs),
            "train": json.dumps(tr) if tr is not None else None,
            "eval": json.dumps(ev) if ev is not None else None,
            "timings": json.dumps(rec.get("timings") or {}),
        }
    )
    row.update(run_meta)
    return row


def _json(data: bytes | None) -> dict[str, Any] | None:
    return json.loads(data) if data else None


def rows_from_run_dir(run_dir: Path) -> list[dict[str, Any]]:
    def read(name: str) -> dict[str, Any] | None:
        p = run_dir / name
        return json.loads(p.read_text()) if p.is_file() else None

    steps = local_steps(run_dir)
    if not steps:
        return []
    record = read(RUN_RECORD)
    if record is None and (run_dir / CONFIG_FILE).is_file():
        record = {"config": yaml.safe_load((run_dir / CONFIG_FILE).read_text())}
    meta = run_metadata(record, read(JUDGE_REPORT), read(META), steps)
    return [step_row(s, meta) for s in steps]


def rows_from_sink(url: str) -> tuple[list[dict[str, Any]], int]:
    sink = Sink(url)
    rows, runs = [], 0
    for run_id in sink.list():
        keys = [k for k in sink.list(f"{run_id}/steps") if k.endswith(".json")]
        if not keys:
            continue
        steps = sorted((json.loads(sink.get(k)) for k in keys), key=lambda r: r["step"])
        have = set(sink.list(run_id))

        def get(name: str, run_id: str = run_id, have: set[str] = have) -> dict[str, Any] | None:
            return _json(sink.get(f"{run_id}/{name}")) if f"{run_id}/{name}" in have else None

        meta = run_metadata(get(RUN_RECORD), get(JUDGE_REPORT), get(META), steps)
        rows += [step_row(s, meta) for s in steps]
        runs += 1
    return rows, runs


def collect_rows(sources: list[str]) -> tuple[list[dict[str, Any]], int]:
    rows: list[dict[str, Any]] = []
    runs = 0
    for src in sources:
        if "://" in src:
            r, n = rows_from_sink(src)
            rows, runs = rows + r, runs + n
            continue
        path = Path(src)
        if not path.is_dir():
            raise SttrlError(f"export source {src} is neither a directory nor a sink URL (s3://…, file://…)")
        dirs = (
            [path] if (path / TRAJECTORY).is_file() else sorted(p for p in path.iterdir() if (p / TRAJECTORY).is_file())
        )
        if not dirs:
            raise SttrlError(f"export source {src} holds no run directory (no trajectory.jsonl in it or its folders)")
        for d in dirs:
            r = rows_from_run_dir(d)
            rows, runs = rows + r, runs + (1 if r else 0)
    return rows, runs


def export(sources: list[str], out: str) -> dict[str, Any]:
    """Write the Parquet dataset and its description to ``out`` (a directory or a URL); returns the description."""
    from datasets import Dataset  # about 3 s to import (pyarrow): --help and the row readers do without

    rows, runs = collect_rows(sources)
    if not rows:
        raise SttrlError(f"no step records found in {', '.join(sources)}")
    rows.sort(key=lambda r: (r["run_id"], r["step"]))
    ds = Dataset.from_list(rows, features=features())
    buf = io.BytesIO()
    ds.to_parquet(buf)
    info = {
        "schema_version": EXPORT_SCHEMA,
        "rows": len(rows),
        "runs": runs,
        "data_files": [DATA_FILE],
        "columns": list(ds.column_names),
    }
    blob = (json.dumps(info, indent=2) + "\n").encode()
    if "://" in out and not out.startswith("file://"):
        sink = Sink(out)
        sink.put(DATA_FILE, buf.getvalue())
        sink.put("sttrl_export.json", blob)
    else:
        base = Path(out.removeprefix("file://"))
        atomic_write_bytes(base / DATA_FILE, buf.getvalue())
        atomic_write_bytes(base / "sttrl_export.json", blob)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sttrl.export", description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="run directory, folder of runs, or sink URL")
    p.add_argument("--out", required=True, metavar="DIR|URL")
    p.add_argument("--quiet", action="store_true", help="no progress bars (datasets' own bars show otherwise)")
    args = p.parse_args(argv)
    if args.quiet:
        from sttrl.quiet import quiet  # keeps `--help` free of library imports

        quiet()
    try:
        info = export(args.sources, args.out)
    except SttrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{info['rows']} steps from {info['runs']} runs -> {args.out}/{DATA_FILE} ({info['schema_version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
