"""Which model should the `cpu` preset fine-tune? Runs the same static episode (keep every step) on
each candidate and prints step time, memory, starting WER and validation WER after every block.

    .venv/bin/python benchmarks/model_choice.py                       # scratch, whisper-tiny-en, whisper-base
    .venv/bin/python benchmarks/model_choice.py --variants "whisper-tiny-en:train.freeze_layers=2"

Writes benchmarks/out/model_choice.json. Run it alone: two torch processes on 2 cores slow each other.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sttrl.config import load_config
from sttrl.env.gym import SttEnv
from sttrl.judge.scoring import judge


def run_variant(spec: str, out_dir: Path, judge_it: bool) -> dict:
    preset, _, rest = spec.partition(":")
    overrides = [o for o in rest.split(",") if o]
    cfg = load_config(preset, overrides=[f"run.out_dir={out_dir}", *overrides])
    env = SttEnv(cfg, progress=False, source="static")
    t0 = time.perf_counter()
    _, info = env.reset(seed=cfg.run.seed)
    setup_s = time.perf_counter() - t0
    row = {
        "variant": spec,
        "start_wer": info["observation"]["wer"],
        "start_cer": info["observation"]["cer"],
        "setup_seconds": setup_s,
        "blocks": [],
    }
    done = False
    while not done:
        _, r, term, trunc, info = env.step("keep")
        rec = env.last_record
        row["blocks"].append(
            {
                "wer": rec.observation["wer"],
                "cer": rec.observation["cer"],
                "loss": rec.observation["train_loss"],
                "seconds_per_step": rec.train["seconds"] / max(rec.train["steps"], 1),
                "train_seconds": rec.timings["train_seconds"],
                "eval_seconds": rec.timings["eval_seconds"],
                "memory_gb": rec.observation["memory_gb"],
                "status": rec.status,
            }
        )
        done = term or trunc
    row["episode_seconds"] = time.perf_counter() - t0
    row["rss_gb"] = env.runtime.trainer.rss_gb()
    row["parameters"] = sum(p.numel() for p in env.runtime.loaded.model.parameters())
    if judge_it:
        rep = judge(env.run_dir, progress=False)
        row["hidden_wer"], row["hidden_cer"] = rep["wer"], rep["cer"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--variants",
        default="scratch;whisper-tiny-en;whisper-tiny-en:train.freeze_layers=2;whisper-base",
        help="';'-separated list of PRESET[:override,override…]",
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    p.add_argument("--no-judge", action="store_true")
    args = p.parse_args()
    specs = [s.strip() for s in args.variants.split(";") if s.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_variant(s, args.out / "model_choice_runs", not args.no_judge) for s in specs]
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print("| variant | params | s/step | memory GB | start WER | WER per block | hidden WER | episode s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        sps = sorted(b["seconds_per_step"] for b in r["blocks"])[len(r["blocks"]) // 2]
        wers = " → ".join(f"{b['wer']:.2f}" for b in r["blocks"])
        hid = f"{r['hidden_wer']:.3f}" if r.get("hidden_wer") is not None else "-"
        print(
            f"| {r['variant']} | {r['parameters'] / 1e6:.1f} M | {sps:.2f} | "
            f"{max(b['memory_gb'] for b in r['blocks']):.2f} "
            f"| {r['start_wer']:.2f} | {wers} | {hid} | {r['episode_seconds']:.0f} |"
        )
    (args.out / "model_choice.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
