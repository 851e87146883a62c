"""Quiet means quiet: with ``--quiet`` no third-party progress bar reaches the output (datasets' "Creating parquet",
transformers' GGUF "Converting and de-quantizing" bar); without it, long library work still shows its bar."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from sttrl.rundir import TRAJECTORY

ROOT = Path(__file__).resolve().parent.parent
BAR = re.compile(r"\d+%\||it/s\]|s/it\]|Creating parquet|Generating .* split|de-quantizing")


# sttrl.quiet turns the bars of libraries not imported yet off through these variables; a test earlier in this
# process may have called it, and a child inherits them: each command here starts from an environment without them
BAR_VARIABLES = ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in BAR_VARIABLES}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def debug_run_dir(make_config) -> Path:
    """A real debug episode (rule policy) through SttEnv: a run directory to export."""
    from sttrl.control.registry import make_controller
    from sttrl.env.gym import SttEnv

    env = SttEnv(make_config(), progress=False)
    _, info = env.reset(seed=0)
    policy, done = make_controller("rule", env.cfg), False
    while not done:
        _, _, term, trunc, info = env.step(policy.decide(info["observation"], env.trajectory.records()))
        done = term or trunc
    env.close()
    return env.run_dir


def test_export_quiet_has_no_bars_and_loud_shows_progress(make_config, tmp_path):
    run_dir = debug_run_dir(make_config)
    loud = run("-m", "sttrl.export", str(run_dir), "--out", str(tmp_path / "loud"), cwd=ROOT)
    quiet = run("-m", "sttrl.export", str(run_dir), "--out", str(tmp_path / "quiet"), "--quiet", cwd=ROOT)
    assert loud.returncode == 0 and quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "Creating parquet" in loud.stderr  # the work shows progress when not quiet
    out = quiet.stdout + quiet.stderr
    assert not BAR.search(out), out
    assert out.strip().splitlines() == [quiet.stdout.strip()]  # one line: the summary
    assert "steps from 1 runs" in quiet.stdout


def test_quiet_episode_with_the_local_gguf_model_prints_no_bar(data_cache, tmp_path):
    """``--agent llm --model local:smollm2-135m --quiet``: transformers de-quantizes the GGUF file with a tqdm bar
    of its own (no switch in transformers); --quiet keeps it, and every other library bar, out of the output."""
    done = run(
        "-m", "graph.run", "--preset", "debug", "--max-actions", "1", "--agent", "llm",
        "--model", "local:smollm2-135m", "--quiet", "--run-dir", str(tmp_path / "run"),
        "--set", f"data.cache_dir={data_cache}", "--set", f"run.out_dir={tmp_path / 'runs'}",
        cwd=ROOT,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert not BAR.search(out), out
    records = [json.loads(line) for line in (tmp_path / "run" / TRAJECTORY).read_text().splitlines()]
    assert records and all(r["source"] == "llm" for r in records)  # the GGUF model was loaded and decided
