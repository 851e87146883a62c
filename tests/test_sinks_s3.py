"""A real S3-protocol server: moto's server started on a free loopback port, reached through s3fs.

An episode with an ``s3://`` sink survives the server being stopped mid-episode and restarted (every step
stored exactly once); a sink that stays down is recorded in run.json and ``python -m sttrl.sync`` catches up;
wrong credentials give one clear line and never fail the episode."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_sinks import run_debug_episode  # pytest puts tests/ on sys.path

from sttrl.outward.sinks import Sink
from sttrl.rundir import CONFIG_FILE, RUN_RECORD, TRAJECTORY

BUCKET = "sttrl-test"
FAST = ("run.sink_options={config_kwargs: {connect_timeout: 1, read_timeout: 5, retries: {max_attempts: 1}}}",)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``moto_server -H 127.0.0.1 -p PORT`` as a child process group; ``auth`` turns on IAM checks of access keys."""

    def __init__(self, log: Path, auth: bool = False) -> None:
        self.port, self.log, self.auth, self.proc = _free_port(), log, auth, None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        env = dict(os.environ)
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"  # the IAM user and key below, and the bucket
        cli = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen(
            [str(cli), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=open(self.log, "a"),  # noqa: SIM115 - the server's log, open while it runs
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        end = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise AssertionError(f"moto_server did not start:\n{self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the process group we started
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def setup(self) -> dict[str, str]:
        """Create the bucket; with auth, an IAM user whose key is returned as AWS_* variables."""
        import boto3

        kw = {"endpoint_url": self.url, "region_name": "us-east-1"}
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        if self.auth:
            iam = boto3.client("iam", **kw, **creds)
            iam.create_user(UserName="sttrl")
            key = iam.create_access_key(UserName="sttrl")["AccessKey"]
            iam.put_user_policy(
                UserName="sttrl",
                PolicyName="all",
                PolicyDocument=json.dumps(
                    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
                ),
            )
            creds = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
        boto3.client("s3", **kw, **creds).create_bucket(Bucket=BUCKET)
        return {
            "AWS_ACCESS_KEY_ID": creds["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
        }


@pytest.fixture
def moto(tmp_path, monkeypatch):
    servers: list[MotoServer] = []

    def _start(auth: bool = False) -> MotoServer:
        srv = MotoServer(tmp_path / f"moto-{len(servers)}.log", auth).start()
        servers.append(srv)
        monkeypatch.setenv("AWS_ENDPOINT_URL", srv.url)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for k, v in srv.setup().items():
            monkeypatch.setenv(k, v)
        return srv

    yield _start
    for srv in servers:
        srv.stop()


def _wait_for(pred, seconds: float = 20.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.2)
    return False


def test_s3_sink_survives_server_restart_and_sync_catches_up(make_config, moto, tmp_path):
    from sttrl.control.classical import RulePolicy
    from sttrl.env.gym import SttEnv
    from sttrl.outward.publish import publish_run
    from sttrl.outward.sync import main as sync_main

    srv = moto()
    url = f"s3://{BUCKET}/runs"
    env = SttEnv(make_config(f"run.sink={url}", *FAST), progress=False)
    _, info = env.reset(seed=0)
    policy = RulePolicy(tuple(env.actions))
    sink = Sink(url)

    def step() -> bool:
        d = policy.decide(info["observation"], env.trajectory.records())
        _, _, term, trunc, out = env.step(d)
        info.update(out)
        return term or trunc

    run_id = json.loads((env.run_dir / RUN_RECORD).read_text())["run_id"]
    step()
    assert _wait_for(lambda: Sink(url).exists(f"{run_id}/steps/000001.json")), "step 1 never reached the sink"
    srv.stop()  # down mid-episode: step 2's upload fails and is retried in the background
    t0 = time.perf_counter()
    step()
    step_seconds_down = time.perf_counter() - t0
    srv.start()
    srv.setup()  # moto keeps objects in memory: the restarted server is empty, the catch-up refills it
    done = False
    while not done:
        done = step()
    env.close()
    status = publish_run(env.run_dir)
    local = [json.loads(line) for line in (env.run_dir / TRAJECTORY).read_text().splitlines()]
    sink = Sink(url)
    assert status["sink"]["ok"], status
    assert sink.list(f"{run_id}/steps") == [f"{run_id}/steps/{r['step']:06d}.json" for r in local]
    assert [json.loads(sink.get(f"{run_id}/steps/{r['step']:06d}.json")) for r in local] == local
    assert json.loads(sink.get(f"{run_id}/run.json"))["outward"]["sink"]["ok"]

    # a sink that stays down at the end: recorded in run.json, the episode unharmed; sync catches up
    srv.stop()
    t0 = time.perf_counter()
    status = publish_run(env.run_dir, timeout=3.0)
    assert time.perf_counter() - t0 < 45
    assert not status["sink"]["ok"] and status["sink"]["pending"] > 0
    recorded = json.loads((env.run_dir / RUN_RECORD).read_text())["outward"]["sink"]
    assert not recorded["ok"] and "testing" not in json.dumps(recorded)
    srv.start()
    srv.setup()
    assert sync_main([str(env.run_dir)]) == 0
    sink = Sink(url)
    assert len(sink.list(f"{run_id}/steps")) == len(local)
    assert {k.rsplit("/", 1)[1] for k in sink.list(run_id)} >= {"trajectory.jsonl", CONFIG_FILE, RUN_RECORD, "steps"}
    assert json.loads((env.run_dir / RUN_RECORD).read_text())["outward"]["sink"]["ok"]
    print(f"\nstep with the sink down: {step_seconds_down:.2f} s (the upload retries in the background)")


def test_wrong_credentials_one_clear_line_and_episode_unharmed(make_config, moto, monkeypatch, tmp_path):
    moto(auth=True)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    run_dir, status = run_debug_episode(make_config, f"run.sink=s3://{BUCKET}/runs", *FAST)
    assert (run_dir / "final").is_dir() and not status["sink"]["ok"]
    err = status["sink"]["last_error"]
    assert "does not exist in our records" in err and "\n" not in err and "wrong-secret-value" not in err
    proc = subprocess.run(
        [sys.executable, "-m", "sttrl.sync", str(run_dir)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env=dict(os.environ),
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: sink s3://sttrl-test/runs: ") and "records" in lines[0]
    assert "wrong-secret-value" not in proc.stderr + proc.stdout
