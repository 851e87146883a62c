"""Validation noise: how much of a validation WER is measurement, and how many utterances a benchmark preset needs.

For one *train* instance of the preset (tuning choices are made on train instances), ``--seeds`` runs of the
instance's start (different ``run.seed``: data order, dropout) each train the same ``--samples`` as one block;
then every validation utterance is transcribed once with the episode's decoder (greedy, sttrl.eval.decode) and
scored per utterance (word errors and reference words after sttrl's normalizer). From those:

- **measurement SD at n**: for each model, the SD of corpus WER over random n-utterance subsets of the
  validation set (``--draws`` draws without replacement), averaged over the models: the noise an
  evaluation of n utterances adds to a comparison of two settings;
- **seed SD at n**: the SD across the seeds' models of the WER on the first n utterances (what an episode
  scores with ``train.max_eval_utterances = n``): measurement plus real differences between runs;
- **rank agreement at n**: Kendall's tau between the models' WER on the first n utterances and on all of them;
- **seconds per evaluation at n**: measured decoding time per utterance x n.

    .venv/bin/python benchmarks/val_noise.py --preset bench-cpu --instance 0 --seeds 3 --samples 256
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

NAME = "val_noise"


def parse_args(argv: list[str] | None = None):
    p = common.base_parser(NAME, __doc__)
    common.add_preset_args(p, default="bench-cpu")
    p.add_argument("--instance", type=int, default=None, help="train instance seed (default: the first train seed)")
    p.add_argument("--seeds", type=int, default=3, help="runs (run.seed 0..N-1) of the instance's start (default 3)")
    p.add_argument("--samples", type=int, default=256, help="training samples before the measurement (default 256)")
    p.add_argument("--sizes", default="32,64,128", help="validation sizes to report, comma-separated (all is added)")
    p.add_argument("--draws", type=int, default=2000, help="random subsets per size and model (default 2000)")
    args = p.parse_args(argv)
    args.preset = args.preset or ("debug" if args.quick else "bench-cpu")
    if args.quick:
        args.seeds, args.samples, args.sizes, args.draws = 2, 8, "2,4", 200
    return args


def per_utterance(refs: list[str], hyps: list[str]) -> list[tuple[int, int]]:
    """(word errors, reference words) per utterance after sttrl's normalizer (empty references dropped)."""
    import jiwer

    from sttrl.eval.decode import normalize_text

    out = []
    for r, h in zip(refs, hyps, strict=True):
        r, h = normalize_text(r), normalize_text(h)
        if not r:
            continue
        m = jiwer.process_words(r, h)
        out.append((m.substitutions + m.deletions + m.insertions, len(r.split())))
    return out


def corpus_wer(rows: list[tuple[int, int]]) -> float:
    return sum(e for e, _ in rows) / max(1, sum(w for _, w in rows))


def kendall_tau(a: list[float], b: list[float]) -> float | None:
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    if not pairs:
        return None
    s = sum(
        (1 if (a[i] - a[j]) * (b[i] - b[j]) > 0 else -1 if (a[i] - a[j]) * (b[i] - b[j]) < 0 else 0) for i, j in pairs
    )
    return s / len(pairs)


def one_model(preset: str, overrides: list[str], instance: int, seed: int, samples: int, work: Path) -> dict[str, Any]:
    """Train the instance's start for ``samples`` with ``run.seed=seed``; transcribe every validation utterance."""
    from sttrl.config import load_config
    from sttrl.env.instances import apply
    from sttrl.env.runtime import EpisodeRuntime
    from sttrl.eval.decode import max_new_tokens, transcribe

    cfg = load_config(
        preset,
        overrides=[
            *overrides,
            f"run.seed={seed}",
            "env.budget_unit=samples",
            f"env.samples_per_action={samples}",
            "env.max_actions=1",
            "train.max_eval_utterances=null",
        ],
    )
    if cfg.env.instances is not None:
        cfg = apply(cfg, instance)
    rt = EpisodeRuntime(cfg, work / f"seed{seed}", progress=False, run_id=f"valnoise-{seed}")
    t0 = time.perf_counter()
    res = rt.train_block(1, rt.initial_hp())
    train_s = time.perf_counter() - t0
    store = rt.val_store
    idx = list(range(len(store)))
    t0 = time.perf_counter()
    hyps = transcribe(store, idx, cfg.train.eval_batch_size, max_new_tokens(store), rt.device)
    eval_s = time.perf_counter() - t0
    rows = per_utterance([store.utterances[i].text for i in idx], hyps)
    return {
        "seed": seed,
        "status": res.status,
        "samples": res.samples,
        "train_s": train_s,
        "eval_s": eval_s,
        "utterances": len(idx),
        "rows": rows,
        "wer_all": corpus_wer(rows),
    }


def main(argv: list[str] | None = None) -> int:
    import random

    args = parse_args(argv)
    overrides = list(args.overrides) + ([f"run.device={args.device}"] if args.device else [])
    common.set_threads(args.threads)
    from sttrl.config import load_config

    cfg = load_config(args.preset, overrides=overrides)
    spec = cfg.env.instances
    instance = args.instance if args.instance is not None else (spec.train_seeds[0] if spec else 0)
    if spec is not None and instance not in spec.train_seeds:
        print(f"error: --instance {instance} is not a train instance ({spec.train_seeds}); measure on train instances")
        return 2
    models = []
    with tempfile.TemporaryDirectory(prefix="sttrl-valnoise-") as tmp:
        for seed in range(args.seeds):
            m = one_model(args.preset, overrides, instance, seed, args.samples, Path(tmp))
            print(
                f"seed {seed}: {m['status']}, {m['samples']} samples in {m['train_s']:.1f} s; "
                f"{m['utterances']} validation utterances in {m['eval_s']:.1f} s; WER {m['wer_all']:.4f}",
                flush=True,
            )
            models.append(m)
    n_all = min(len(m["rows"]) for m in models)
    sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip() and int(x) < n_all} | {n_all})
    per_utt_s = statistics.fmean(m["eval_s"] / m["utterances"] for m in models)
    rng = random.Random(0)
    table, rows_out = [], []
    for n in sizes:
        meas = []
        for m in models:
            draws = [corpus_wer(rng.sample(m["rows"][:n_all], n)) for _ in range(args.draws if n < n_all else 1)]
            meas.append(statistics.pstdev(draws) if len(draws) > 1 else 0.0)
        first_n = [corpus_wer(m["rows"][:n]) for m in models]
        all_w = [m["wer_all"] for m in models]
        row = {
            "n": n,
            "measurement_sd": statistics.fmean(meas),
            "seed_sd": statistics.stdev(first_n) if len(first_n) > 1 else None,
            "wer_first_n": first_n,
            "kendall_tau_vs_all": kendall_tau(first_n, all_w),
            "eval_s": per_utt_s * n,
        }
        rows_out.append(row)
        table.append(
            [
                n,
                f"{row['measurement_sd']:.4f}",
                "-" if row["seed_sd"] is None else f"{row['seed_sd']:.4f}",
                ", ".join(f"{w:.3f}" for w in first_n),
                "-" if row["kendall_tau_vs_all"] is None else f"{row['kendall_tau_vs_all']:+.2f}",
                f"{row['eval_s']:.1f}",
            ]
        )
    md = common.markdown_table(
        [
            "validation utterances n",
            "measurement SD (random n-subsets)",
            "SD across seeds (first n)",
            "WER per seed (first n)",
            "Kendall tau vs all",
            "s per evaluation",
        ],
        table,
    )
    payload = {
        "preset": args.preset,
        "instance": instance,
        "seeds": args.seeds,
        "samples": args.samples,
        "draws": args.draws,
        "models": [{k: v for k, v in m.items() if k != "rows"} for m in models],
        "per_utterance": {m["seed"]: m["rows"] for m in models},
        "sizes": rows_out,
    }
    common.report(NAME, args, payload, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
