"""Experiment trackers, offline: W&B in offline mode (its files checked), MLflow against a tracking server started on
a free loopback port; a tracker that fails never fails the episode."""

from __future__ import annotations

import json
import struct
import sys
import threading
import time
from pathlib import Path

import pytest
from servers import background_server, free_port  # pytest puts tests/ on sys.path
from test_sinks import run_debug_episode

from sttrl.outward import publish
from sttrl.rundir import CONFIG_FILE, RUN_RECORD, TRAJECTORY


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    cli = Path(sys.executable).parent / "mlflow"
    cmd = [
        str(cli),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination",
        str(tmp_path / "mlartifacts"),
    ]
    url = f"http://127.0.0.1:{port}"
    with background_server(
        cmd, url + "/health", tmp_path / "mlflow.log", name="mlflow server", cwd=tmp_path, timeout=120
    ):
        yield url


def test_mlflow_tracker_logs_steps_and_artifacts(make_config, mlflow_server):
    from mlflow.tracking import MlflowClient

    run_dir, status = run_debug_episode(
        make_config, "run.tracker=mlflow", f"run.tracker_uri={mlflow_server}", "run.tracker_project=sttrl-test"
    )
    assert status["tracker"] == {"name": "mlflow", "ok": True, "error": None}
    n = len((run_dir / TRAJECTORY).read_text().splitlines())
    run_id = json.loads((run_dir / RUN_RECORD).read_text())["run_id"]
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("sttrl-test")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`sttrl.run_id` = '{run_id}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    mid = runs[0].info.run_id
    wer = client.get_metric_history(mid, "wer")
    assert sorted(m.step for m in wer) == list(range(1, n + 1)) and len(client.get_metric_history(mid, "reward")) == n
    assert client.get_metric_history(mid, "hp.lr") and runs[0].data.params["train.lr"] == "0.001"
    names = {a.path for a in client.list_artifacts(mid)}
    assert {"trajectory.jsonl", CONFIG_FILE, RUN_RECORD, "samples"} <= names, names


def test_wandb_offline_writes_its_run_files(make_config, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wdir = tmp_path / "wandb-files"
    run_dir, status = run_debug_episode(make_config, "run.tracker=wandb", f"run.tracker_uri={wdir}")
    assert status["tracker"]["ok"], status
    run_id = json.loads((run_dir / RUN_RECORD).read_text())["run_id"]
    runs = list((wdir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1, list((wdir / "wandb").iterdir())
    history, artifacts = _wandb_records(_written(runs[0] / f"run-{run_id}.wandb"))
    local = [json.loads(line) for line in (run_dir / TRAJECTORY).read_text().splitlines()]
    assert [int(h["_step"]) for h in history] == [r["step"] for r in local]
    assert [float(h["reward"]) for h in history] == pytest.approx([r["reward"] for r in local])
    assert all("wer" in h and "hp/lr" in h for h in history) and "samples/path" in history[0]
    assert artifacts[f"run-{run_id}"] >= {"trajectory.jsonl", CONFIG_FILE, RUN_RECORD}


def _written(path: Path, timeout: float = 60.0) -> Path:
    """``path`` once W&B's service has written its last record (``exit``). ``run.finish()`` can return before the
    service's writer has flushed its last block: read at once, a file was seen cut at 32768 bytes with no history;
    half a second later it held all 62,300 bytes."""
    end = time.monotonic() + timeout
    while _record_types(path)[-1:] != ["exit"]:
        assert time.monotonic() < end, f"{path}: no exit record after {timeout:.0f} s: {_record_types(path)}"
        time.sleep(0.2)
    return path


def _chunks(path: Path) -> list[bytes]:
    """The records of W&B's offline ``.wandb`` file (a LevelDB-style log: a 7-byte file header, then 32 KiB blocks
    of chunks with a 7-byte crc/length/type header)."""
    data = path.read_bytes() if path.is_file() else b""
    pos, block, chunks, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            chunks.append(buf)
            buf = b""
    return chunks


def _record_types(path: Path) -> list[str]:
    from wandb.proto import wandb_internal_pb2 as pb  # the track extra, installed by make test

    types = []
    for chunk in _chunks(path):
        rec = pb.Record()
        try:
            rec.ParseFromString(chunk)
        except Exception:  # noqa: BLE001 - a chunk cut mid-write: the file is not complete yet
            return types + ["partial"]
        types.append(rec.WhichOneof("record_type"))
    return types


def _wandb_records(path: Path) -> tuple[list[dict], dict[str, set]]:
    """History rows and artifact manifests from W&B's offline ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb  # the track extra, installed by make test

    history, artifacts = [], {}
    for chunk in _chunks(path):
        rec = pb.Record()
        rec.ParseFromString(chunk)
        if rec.WhichOneof("record_type") == "history":
            history.append({("/".join(i.nested_key) or i.key): json.loads(i.value_json) for i in rec.history.item})
        elif rec.WhichOneof("record_type") == "artifact":
            artifacts[rec.artifact.name] = {m.path for m in rec.artifact.manifest.contents}
    return history, artifacts


def test_a_failing_tracker_never_fails_the_episode(make_config, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run_dir, status = run_debug_episode(make_config, "run.tracker=mlflow", f"run.tracker_uri={dead}")
    assert (run_dir / "final").is_dir() and len((run_dir / TRAJECTORY).read_text().splitlines()) >= 1
    assert not status["tracker"]["ok"] and status["tracker"]["error"].startswith("mlflow: ")
    assert json.loads((run_dir / RUN_RECORD).read_text())["outward"]["tracker"]["ok"] is False


def test_a_tracker_still_working_at_the_deadline_is_not_reported_ok(make_config, monkeypatch):
    release = threading.Event()

    class SlowTracker:  # a real Publisher around a tracker that has not finished when the run ends
        def log_step(self, record):
            release.wait(30)

        def log_artifacts(self, run_dir):
            release.wait(30)

        def finish(self):
            pass

    monkeypatch.setattr(publish, "make_tracker", lambda *a: SlowTracker())
    run_dir, _ = run_debug_episode(make_config, "run.tracker=mlflow", publish=False)
    status = publish.publish_run(run_dir, timeout=0.2)
    release.set()
    assert status["tracker"]["ok"] is False and "tracker calls not done in time" in status["tracker"]["error"]
