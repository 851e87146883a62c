"""An episode's numbers depend only on (config, instance, seed, decisions), never on what the process ran before
(issue 25, item 1: ``run.deterministic``).

The same short episode (two decisions) runs (a) alone in a fresh process and (b) in a process that first ran an
episode with other hyperparameters; its observations, per-step training losses, rewards and final weights must be
bit-identical. Two CPU threads and batches big enough that torch would take its parallel (atomic-add) kernel for
the backward of the positional embedding's index, the drift ``run.deterministic`` removes (sttrl/train/device.py).
The two processes run one after the other, never at once. ``tests/test_reproducible.py`` runs the ``debug``
version; the ``cpu`` version (real Whisper tiny.en, short blocks, a small corpus: it synthesizes a corpus and
converts the model first, about 15 minutes on 2 cores) is this script's default:

    python benchmarks/reproducible.py --preset cpu --work runs/reproducible
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
from pathlib import Path
from sttrl.config import load_config
from sttrl.env.gym import SttEnv

mode, out, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]

def episode(extra, name, actions):
    env = SttEnv(load_config(overrides[0], overrides=overrides[1:] + extra), out / name)
    obs, info = env.reset(seed=7)
    rows = [{k: float(v[0]).hex() for k, v in obs.items() if hasattr(v, "shape")}]
    for a in actions:
        obs, reward, _, _, info = env.step(a)
        rows.append({
            "observation": {k: float(v).hex() if isinstance(v, float) else v for k, v in info["observation"].items()},
            "losses": [float(x).hex() for x in info["losses"]],
            "reward": float(reward).hex(),
        })
    rows.append(info["final"]["sha256"])
    env.close()
    return rows

if mode == "after":  # other hyperparameters first: another lr, batch, frozen layers and other actions
    episode(["train.lr=3e-4", "train.batch_size=4", "train.freeze_layers=1"], "other", ["lr_up", "batch_down"])
print("RESULT " + json.dumps(episode([], "target", ["keep", "lr_down"])))
"""


def episode_rows(mode: str, out: Path, overrides: list[str]) -> list:
    """The target episode's rows (observations, losses, rewards as float hex; then the final sha256), run in a
    fresh process ``alone`` or ``after`` an episode with other hyperparameters."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(out), *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the {mode} episode failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def same_alone_and_after(preset: str, data_cache: Path, work: Path, extra: list[str]) -> tuple[list, list]:
    """The target episode's rows alone and after other work (compare them for equality)."""
    common = [preset, f"data.cache_dir={data_cache}", "run.threads=2", "env.max_actions=2", *extra]
    alone = episode_rows("alone", work / "alone", common)  # one process after the other: never two at once
    after = episode_rows("after", work / "after", common)
    return alone, after


PRESET_EXTRA = {
    # batch 16 of 64-wide embeddings: the gradient of the positional embedding's index has > 32,768 elements
    "debug": ["env.steps_per_action=2", "train.batch_size=16", "train.max_eval_utterances=4"],
    "cpu": [
        "env.steps_per_action=3",
        "data.sentences_per_domain=40",
        "data.max_hidden_utterances=20",
        "train.max_eval_utterances=8",
    ],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESET_EXTRA), default="cpu")
    ap.add_argument("--work", type=Path, default=Path("runs/reproducible"))
    ap.add_argument("--cache-dir", default=".cache/sttrl")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    alone, after = same_alone_and_after(args.preset, Path(args.cache_dir), args.work, PRESET_EXTRA[args.preset])
    same = alone == after
    print(
        f"preset {args.preset}: {len(alone) - 2} decisions, final sha256 {alone[-1][:12]} alone, "
        f"{after[-1][:12]} after other work; bit-identical: {same} ({time.perf_counter() - t0:.0f} s)"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
