"""Sinks without a server: config checks, the memory:// and file:// sinks under a real debug episode (idempotent
re-publish, run record), a pre-signed-style HTTP PUT sink on a loopback server, sync, and export to a Dataset."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sttrl.config import load_config
from sttrl.errors import ConfigError
from sttrl.outward.sinks import Sink, redact
from sttrl.rundir import CONFIG_FILE, JUDGE_REPORT, RUN_RECORD, TRAJECTORY


def run_debug_episode(make_config, *overrides: str, publish: bool = True):
    """A debug episode through SttEnv with the rule policy, then (optionally) the run-end publish hook."""
    from sttrl.control.classical import RulePolicy
    from sttrl.env.gym import SttEnv
    from sttrl.outward.publish import publish_run

    env = SttEnv(make_config(*overrides), progress=False)
    _, info = env.reset(seed=0)
    policy, done = RulePolicy(tuple(env.actions)), False
    while not done:
        d = policy.decide(info["observation"], env.trajectory.records())
        _, _, term, trunc, info = env.step(d)
        done = term or trunc
    env.close()
    status = publish_run(env.run_dir) if publish else None
    return env.run_dir, status


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("run.sink_options={key: abc}", "must not hold secrets (key)"),
        ("run.sink_options={client_kwargs: {aws_secret_access_key: z}}", "client_kwargs.aws_secret_access_key"),
        ("run.sink=https://h/p?X-Amz-Signature=abc", "run.sink=env:STTRL_SINK_URL"),
        ("run.sink=s3://user:pw@bucket/x", "must not carry credentials"),
        ("run.sink=bucket-without-scheme", "is not a URL"),
        ("run.tracker=tensorboard", "run.tracker"),
    ],
)
def test_config_rejects_bad_or_secret_sink_settings(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config("debug", overrides=[override])
    assert (
        fragment in str(err.value) and "abc" not in str(err.value).replace("(key)", "") and "pw" not in str(err.value)
    )


def test_redact_drops_credentials_and_query():
    assert redact("https://u:p@host:9000/b/k?X-Amz-Signature=s") == "https://host:9000/b/k"
    assert redact("env:STTRL_SINK_URL") == "env:STTRL_SINK_URL"


def test_memory_sink_episode_uploads_each_step_once_and_republish_replaces(make_config):
    prefix = f"memory://sttrl-{uuid.uuid4().hex[:8]}"
    run_dir, status = run_debug_episode(make_config, f"run.sink={prefix}")
    sink = Sink(prefix)
    run_id = json.loads((run_dir / RUN_RECORD).read_text())["run_id"]
    local = [json.loads(line) for line in (run_dir / TRAJECTORY).read_text().splitlines()]
    keys = sink.list(f"{run_id}/steps")
    assert keys == [f"{run_id}/steps/{r['step']:06d}.json" for r in local]
    assert [json.loads(sink.get(k)) for k in keys] == local
    for name in (TRAJECTORY, CONFIG_FILE, RUN_RECORD):
        assert sink.exists(f"{run_id}/{name}")
    assert status["sink"]["ok"] and status["sink"]["pending"] == 0 and status["sink"]["url"] == prefix
    outward = json.loads((run_dir / RUN_RECORD).read_text())["outward"]
    assert outward["sink"]["ok"]
    assert json.loads(sink.get(f"{run_id}/run.json"))["outward"]["sink"]["ok"]
    # a second publish (what a resume does) replaces, never duplicates
    from sttrl.outward.publish import publish_run

    assert publish_run(run_dir)["sink"]["ok"]
    assert sink.list(f"{run_id}/steps") == keys


class _PutHandler(BaseHTTPRequestHandler):
    store: dict[str, bytes] = {}

    def do_PUT(self):
        n = int(self.headers["Content-Length"])
        if "sig=good" not in self.path:
            self.send_response(403)
            self.end_headers()
            return
        self.store[self.path.split("?")[0]] = self.rfile.read(n)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_http_put_sink_with_url_template_from_environment(monkeypatch):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _PutHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("STTRL_SINK_URL", f"http://127.0.0.1:{srv.server_port}/up/{{key}}?sig=good")
        cfg = load_config("debug", overrides=["run.sink=env:STTRL_SINK_URL"])
        sink = Sink(cfg.run.sink)
        sink.put("r1/steps/000001.json", b'{"a": 1}\n')
        assert _PutHandler.store["/up/r1/steps/000001.json"] == b'{"a": 1}\n'
        assert sink.safe_url == "env:STTRL_SINK_URL"
        monkeypatch.setenv("STTRL_SINK_URL", f"http://127.0.0.1:{srv.server_port}/up/{{key}}?sig=bad")
        from sttrl.errors import SinkError

        with pytest.raises(SinkError) as err:
            Sink("env:STTRL_SINK_URL").check()
        assert "403" in str(err.value) and "sig=bad" not in str(err.value) and "\n" not in str(err.value)
    finally:
        srv.shutdown()


def test_sync_and_export_file_sink(make_config, tmp_path):
    """An episode without a sink, then ``sttrl.outward.sync --sink file://…`` and ``sttrl.outward.export`` from the run
    directory and from the sink prefix; ``datasets.load_dataset`` reads both."""
    from datasets import load_dataset

    from sttrl.outward.export import EXPORT_SCHEMA
    from sttrl.outward.export import main as export_main
    from sttrl.outward.sync import main as sync_main

    run_dir, status = run_debug_episode(make_config)
    assert status is None
    from sttrl.judge.scoring import judge

    report = judge(run_dir, progress=False)
    url = (tmp_path / "store").as_uri()
    assert sync_main([str(run_dir), "--sink", url]) == 0
    run_id = json.loads((run_dir / RUN_RECORD).read_text())["run_id"]
    assert (tmp_path / "store" / run_id / JUDGE_REPORT).is_file()
    assert json.loads((run_dir / RUN_RECORD).read_text())["outward"]["sink"]["ok"]
    n = len((run_dir / TRAJECTORY).read_text().splitlines())
    for source, out in ((str(run_dir.parent), tmp_path / "ds-dir"), (url, tmp_path / "ds-sink")):
        assert export_main([source, "--out", str(out)]) == 0
        ds = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
        assert len(ds) == n and ds[0]["schema_version"] == EXPORT_SCHEMA and ds[0]["run_id"] == run_id
        assert ds[0]["preset"] == "debug" and ds[0]["seed"] == 0 and ds[0]["controller"] == "rule"
        assert ds[0]["instance"] is None and ds[0]["judge_wer"] == pytest.approx(report["wer"])
        assert ds.features["wer"].dtype == "float64" and ds[0]["lr_before"] > 0
        assert json.loads((out / "sttrl_export.json").read_text())["rows"] == n
    assert export_main([str(tmp_path / "nothing-here"), "--out", str(tmp_path / "x")]) == 2


def test_sttrl_run_cli_publishes_and_prints_the_outcome(data_cache, tmp_path, capsys):
    from sttrl.control.run import main

    store = tmp_path / "store"
    rc = main(
        [
            "--preset",
            "debug",
            "--quiet",
            "--set",
            f"data.cache_dir={data_cache}",
            "--set",
            f"run.out_dir={tmp_path / 'runs'}",
            "--set",
            f"run.sink={store.as_uri()}",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and f"sink {store.as_uri()}: " in out and "all sent" in out
    (run_id,) = [p.name for p in store.iterdir()]
    assert {p.name for p in (store / run_id).iterdir()} >= {"steps", JUDGE_REPORT, TRAJECTORY, CONFIG_FILE, "run.json"}
    assert json.loads((store / run_id / RUN_RECORD).read_text())["outward"]["sink"]["ok"]
