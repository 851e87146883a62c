"""Upload overhead of a sink: the same episode (static policy, Gymnasium path) without a sink, with a ``file://``
sink and with an ``s3://`` sink on moto's S3 server (started here on a free loopback port), in interleaved
repetitions. Reports per contestant the episode wall time (reset → last step → ``publish_run`` done), the
foreground cost of the per-step hook (``publish_step``: it only enqueues), the background upload time per object,
and the end-of-run flush; ratios are paired by round against the run without a sink. Target: no measurable change
in episode wall time on the cpu preset.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import (
    add_preset_args,
    base_parser,
    column,
    interleaved,
    machine_info,
    markdown_table,
    paired_ratio,
    report,
    summarize,
)

NAME = "sink_overhead"


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(cli), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    os.environ.update(
        AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    import boto3

    boto3.client("s3").create_bucket(Bucket="sttrl-bench")
    return proc, url


def episode(preset: str, overrides: list[str], out: Path) -> dict[str, float]:
    """One episode; returns its wall time, the hook's foreground time per step and the sink's figures."""
    import sttrl.outward.trajectory as trajectory_mod
    from sttrl.config import load_config
    from sttrl.control.registry import make_controller
    from sttrl.env.gym import SttEnv
    from sttrl.outward.publish import publish_run

    cfg = load_config(preset, overrides=[f"run.out_dir={out}", *overrides])
    hook_seconds: list[float] = []
    real_hook = trajectory_mod.publish_step

    def timed_hook(run_dir: Any, record: Any) -> None:
        t0 = time.perf_counter()
        real_hook(run_dir, record)
        hook_seconds.append(time.perf_counter() - t0)

    trajectory_mod.publish_step = timed_hook
    try:
        env = SttEnv(cfg, progress=False, source="static")
        policy = make_controller("static", cfg, seed=0)
        t0 = time.perf_counter()
        _, info = env.reset(seed=0)
        done = False
        while not done:
            decided = policy.decide(info["observation"], [])
            _, _, term, trunc, info = env.step(decided)
            done = term or trunc
        steps_done = time.perf_counter()
        env.close()
        status = publish_run(env.run_dir)
        end = time.perf_counter()
    finally:
        trajectory_mod.publish_step = real_hook
    sink = (status or {}).get("sink") or {}
    uploaded = int(sink.get("uploaded") or 0)
    return {
        "wall_s": end - t0,
        "flush_s": end - steps_done,
        "steps": float(len(hook_seconds)),
        "hook_ms_per_step": 1000 * sum(hook_seconds) / max(len(hook_seconds), 1),
        "upload_ms_per_object": 1000 * float(sink.get("upload_seconds") or 0.0) / max(uploaded, 1),
        "uploaded": float(uploaded),
        "sink_ok": float(bool(sink.get("ok"))) if sink else float("nan"),
    }


def main() -> int:
    p = base_parser(NAME, __doc__, threads=False)
    add_preset_args(p)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-s3", action="store_true", help="skip the moto s3:// contestant")
    args = p.parse_args()
    preset = args.preset or ("debug" if args.quick else "cpu")
    overrides = list(args.overrides)
    tmp = Path(tempfile.mkdtemp(prefix="sttrl-sink-bench-"))
    moto = None
    contestants = {
        "none": lambda: episode(preset, overrides, tmp / "none"),
        "file": lambda: episode(preset, [*overrides, f"run.sink={(tmp / 'store').as_uri()}"], tmp / "file"),
    }
    try:
        if not args.no_s3:
            moto, _ = start_moto()
            contestants["s3"] = lambda: episode(preset, [*overrides, "run.sink=s3://sttrl-bench/runs"], tmp / "s3")
        results = interleaved(contestants, reps=args.reps, warmup=args.warmup)
    finally:
        if moto is not None:
            os.killpg(moto.pid, signal.SIGTERM)
    rows, summary = [], {}
    for name, runs in results.items():
        s = {k: summarize(column(runs, k)) for k in ("wall_s", "flush_s", "hook_ms_per_step", "upload_ms_per_object")}
        s["wall_ratio_vs_none"] = paired_ratio(runs, results["none"], "wall_s")
        summary[name] = s
        rows.append(
            [
                name,
                s["wall_s"]["median"],
                s["wall_ratio_vs_none"]["median"],
                f"{s['wall_ratio_vs_none']['min']:.3f}-{s['wall_ratio_vs_none']['max']:.3f}",
                s["hook_ms_per_step"]["median"],
                s["upload_ms_per_object"]["median"],
                s["flush_s"]["median"],
            ]
        )
    table = markdown_table(
        [
            "sink",
            "episode wall s (median)",
            "× no sink (paired median)",
            "ratio range",
            "hook ms/step (foreground)",
            "upload ms/object (background)",
            "end flush s",
        ],
        rows,
    )
    report(
        NAME,
        args,
        {"preset": preset, "overrides": overrides, "machine": machine_info(), "results": results, "summary": summary},
        table,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
