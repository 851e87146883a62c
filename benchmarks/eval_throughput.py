"""Evaluation throughput: sttrl's evaluator against transformers' ASR pipeline on the same model.

Both decode the episode's validation utterances (the first ``train.max_eval_utterances``) greedily with
the same batch size (``train.eval_batch_size``), the same ``max_new_tokens`` (what ``sttrl.eval.decode``
derives from the longest label) and the same language/task (multilingual models), and both end with a
WER (jiwer over sttrl's normalizer), so the work is the same:

- ``sttrl_cold``: a new ``FeatureStore`` over an empty feature cache directory every round, so audio
  loading, log-mel extraction and writing the cache files are timed, then ``sttrl.eval.decode.evaluate``:
  an episode's first evaluation on data it has never seen.
- ``sttrl_cached``: a new store over the filled cache (features read from disk), which is what every
  later evaluation of an episode, and the first one of any later episode on the same data, costs.
- ``pipeline``: audio loading (the same ``sttrl.data.load_audio``) + ``pipeline("automatic-speech-recognition",
  model=..., tokenizer=..., feature_extractor=..., batch_size=B)`` fed ``{"raw": array, "sampling_rate":
  16000}`` (no ffmpeg) + the same WER computation.

- ``ct2_cold`` / ``ct2_cached``: the same evaluation with ``train.eval_engine=ct2`` (CTranslate2 float32,
  sttrl.eval.engines): every round converts the current weights in memory again (the cache of converted models
  is cleared), as an episode must after each training block, so conversion is included.
- ``ct2_int8_cached``: the same with ``train.eval_compute_type=int8``.

The comparable pairs are ``sttrl_cold`` / ``ct2_cold`` vs ``pipeline`` (all start from audio files); the
cached rows show what the feature cache buys. Also reported: how many transcripts are identical between
sttrl and the pipeline, and between each CTranslate2 compute type and transformers, with the WER difference.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

NAME = "eval_throughput"


def parse_args(argv: list[str] | None = None):
    p = common.base_parser(NAME, __doc__)
    common.add_preset_args(p)
    p.add_argument("--reps", type=int, default=None, help="measured rounds (default 5; 2 with --quick)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds, excluded (default 1)")
    p.add_argument(
        "--utterances",
        type=int,
        default=None,
        help="validation utterances decoded per round (default: train.max_eval_utterances)",
    )
    p.add_argument("--batch", type=int, default=None, help="decoding batch size (default: train.eval_batch_size)")
    p.add_argument("--no-ct2", action="store_true", help="leave out the CTranslate2 contestants")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="DIR",
        help="load DIR/model.safetensors into the preset's model first, e.g. a run's final/ "
        "(a fine-tuned model decodes transcripts of varied length; the start model mostly "
        "runs to max_new_tokens)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers import pipeline

    from sttrl.data import load_audio
    from sttrl.eval.decode import error_rates, evaluate, normalize_text, transcribe
    from sttrl.train.features import FeatureStore

    quick = args.quick
    reps = args.reps or (2 if quick else 5)
    st = common.load_stack(args, splits=("validation",))
    cfg, device, loaded = st["cfg"], st["device"], st["loaded"]
    if args.weights:
        from safetensors.torch import load_model as load_safetensors_model

        load_safetensors_model(loaded.model, str(args.weights / "model.safetensors"), device=str(device))
    utts = st["data"].split("validation")
    n = args.utterances or cfg.train.max_eval_utterances or len(utts)
    utts = utts[:n]
    n = len(utts)
    batch = args.batch or cfg.train.eval_batch_size
    max_tokens = cfg.model.max_target_tokens
    work = Path(tempfile.mkdtemp(prefix="sttrl-bench-eval-"))
    cached_dir = work / "cached"
    warm_store = FeatureStore(loaded, utts, max_tokens, cached_dir)
    common.warm_features(warm_store)
    cold_rounds = iter(range(10**6))
    limit = int(loaded.model.config.max_target_positions) - len(loaded.prefix_ids)
    max_new = min(int(warm_store.longest_label() * 1.5) + 8, warm_store.max_tokens, limit)
    info = common.machine_info(device)
    print(f"{NAME}: preset {st['preset']}, {common.describe_machine(info)}")
    print(
        f"  {n} validation utterances, batch {batch}, max_new_tokens {max_new}, generate kwargs "
        f"{loaded.generate_kwargs or '{}'}, {reps} rounds + {args.warmup} warm-up, device {device}"
    )

    fe = loaded.processor.feature_extractor
    pipe = pipeline(
        "automatic-speech-recognition",
        model=loaded.model,
        tokenizer=loaded.processor.tokenizer,
        feature_extractor=fe,
        device=device,
    )
    gen_kwargs = {"max_new_tokens": max_new, "num_beams": 1, "do_sample": False, **loaded.generate_kwargs}
    refs = [u.text for u in utts]

    def run_pipeline() -> list[str]:
        audio = [{"raw": load_audio(u.audio_path), "sampling_rate": fe.sampling_rate} for u in utts]
        out = pipe(audio, batch_size=batch, generate_kwargs=dict(gen_kwargs))
        return [o["text"] for o in out]

    def sttrl_cold() -> dict[str, float]:
        store = FeatureStore(loaded, utts, max_tokens, work / f"cold-{next(cold_rounds)}")
        wall, res = common.timed(lambda: evaluate(store, device, batch_size=batch), device)
        return {"wall_s": wall, "utterances_per_s": n / wall, "wer": res.wer}

    def sttrl_cached() -> dict[str, float]:
        store = FeatureStore(loaded, utts, max_tokens, cached_dir)
        wall, res = common.timed(lambda: evaluate(store, device, batch_size=batch), device)
        return {"wall_s": wall, "utterances_per_s": n / wall, "wer": res.wer}

    def hf_pipeline() -> dict[str, float]:
        def go() -> float:
            hyps = run_pipeline()
            return error_rates(refs, hyps)[0]

        wall, wer = common.timed(go, device)
        return {"wall_s": wall, "utterances_per_s": n / wall, "wer": wer}

    contestants = {"sttrl_cold": sttrl_cold, "sttrl_cached": sttrl_cached, "pipeline": hf_pipeline}
    if not args.no_ct2:
        from sttrl.eval import engines
        from sttrl.eval.engines import ct2 as ct2_engine

        def ct2_round(cache_dir: Path, compute: str) -> dict[str, float]:
            ct2_engine._CACHE.clear()  # convert again, as after every training block
            store = FeatureStore(loaded, utts, max_tokens, cache_dir)
            over = cfg.model_copy(
                update={
                    "train": cfg.train.model_copy(
                        update={"eval_engine": "ct2", "eval_compute_type": compute, "eval_batch_size": batch}
                    )
                }
            )
            wall, res = common.timed(lambda: engines.evaluate_with(over, store, device), device)
            return {"wall_s": wall, "utterances_per_s": n / wall, "wer": res.wer, "convert_s": res.convert_seconds}

        contestants |= {
            "ct2_cold": lambda: ct2_round(work / f"cold-{next(cold_rounds)}", "auto"),
            "ct2_cached": lambda: ct2_round(cached_dir, "auto"),
            "ct2_int8_cached": lambda: ct2_round(cached_dir, "int8"),
        }
    results = common.interleaved(contestants, reps, args.warmup)

    # Same transcripts? (outside the timings)
    ours = transcribe(warm_store, list(range(n)), batch, max_new, device)
    theirs = run_pipeline()
    exact = sum(a == b for a, b in zip(ours, theirs, strict=True))
    stripped = sum(a.strip() == b.strip() for a, b in zip(ours, theirs, strict=True))
    normalized = sum(normalize_text(a) == normalize_text(b) for a, b in zip(ours, theirs, strict=True))
    diffs = [
        {"id": utts[i].uid, "sttrl": a, "pipeline": b}
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
        if a.strip() != b.strip()
    ][:5]
    agreement: dict[str, dict] = {}
    if not args.no_ct2:
        from sttrl.eval.engines.ct2 import load_ct2

        wer_hf = error_rates(refs, ours)[0]
        for compute in ("float32", "int8"):
            ct = load_ct2(loaded, device, compute, st["threads"])
            hyps = transcribe(warm_store, list(range(n)), batch, max_new, device, ct.decode)
            wer_ct = error_rates(refs, hyps)[0]
            agreement[compute] = {
                "identical": sum(a == b for a, b in zip(ours, hyps, strict=True)),
                "n": n,
                "wer_transformers": wer_hf,
                "wer_ct2": wer_ct,
                "delta_wer": wer_ct - wer_hf,
                "convert_s": ct.convert_seconds,
                "differences": [
                    {"id": utts[i].uid, "transformers": a, "ct2": b}
                    for i, (a, b) in enumerate(zip(ours, hyps, strict=True))
                    if a != b
                ][:5],
            }

    summary = {name: {k: common.summarize(common.column(rows, k)) for k in rows[0]} for name, rows in results.items()}
    ratios = {
        "sttrl_cold/pipeline": common.paired_ratio(results["sttrl_cold"], results["pipeline"], "utterances_per_s"),
        "sttrl_cached/pipeline": common.paired_ratio(results["sttrl_cached"], results["pipeline"], "utterances_per_s"),
    }
    for name in results:
        if name.startswith("ct2"):
            ratios[f"{name}/pipeline"] = common.paired_ratio(results[name], results["pipeline"], "utterances_per_s")
    rows = []
    for name in results:
        s = summary[name]
        r = ratios.get(f"{name}/pipeline")
        rows.append(
            [
                name,
                s["utterances_per_s"]["median"],
                s["wall_s"]["median"],
                s["wer"]["median"],
                f"{r['median']:.3f}" if r else "-",
                {"sttrl_cold": "≥ 1.0", "ct2_cold": "≥ 2.0"}.get(name, "-"),
            ]
        )
    table = common.markdown_table(
        ["contestant", "utterances/s", "s per evaluation", "WER", "÷ pipeline", "target"], rows
    )
    table += (
        f"\n\nidentical transcripts sttrl vs pipeline: {exact}/{n} exact, {stripped}/{n} after strip(), "
        f"{normalized}/{n} after sttrl's normalizer."
    )
    for compute, a in agreement.items():
        table += (
            f"\nct2 {compute} vs transformers: {a['identical']}/{n} identical transcripts, WER {a['wer_ct2']:.4f} "
            f"vs {a['wer_transformers']:.4f} (ΔWER {a['delta_wer']:+.4f}), conversion {a['convert_s']:.2f} s."
        )
    table += (
        f"\n\n{'QUICK (noisy) — ' if quick else ''}preset {st['preset']}"
        f"{f', weights {args.weights}' if args.weights else ', start weights'}, {n} utterances, batch {batch}, "
        f"max_new_tokens {max_new}, median of {reps} interleaved rounds after {args.warmup} warm-up; "
        f"{common.describe_machine(info)}."
    )
    payload = {
        "machine": info,
        "preset": st["preset"],
        "weights": str(args.weights) if args.weights else None,
        "device": str(device),
        "utterances": n,
        "batch": batch,
        "max_new_tokens": max_new,
        "generate_kwargs": loaded.generate_kwargs,
        "reps": reps,
        "warmup": args.warmup,
        "summary": summary,
        "ratios": ratios,
        "target": {"sttrl_cold/pipeline": 1.0},
        "identical": {"exact": exact, "stripped": stripped, "normalized": normalized, "n": n},
        "differences": diffs,
        "ct2_agreement": agreement,
        "rounds": results,
    }
    if diffs:
        print("first differing transcripts:")
        for d in diffs:
            print(f"  {d['id']}: sttrl={d['sttrl']!r} pipeline={d['pipeline']!r}")
    common.report(NAME, args, payload, table)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
