"""A finished run's final model scored on a hidden split *per utterance*, as the judge scores it.

The judge (``sttrl.judge.scoring``) reports one corpus WER; a bootstrap over utterances needs each utterance's
word errors. :func:`score_run` loads ``RUN_DIR/final`` from disk, opens the hidden split inside
``judge_access`` (a judge's access: it does not fail other runs' ``hidden_split_untouched``), decodes with the
run's engine, batch size and token limit, and returns the word errors and reference words of every utterance
(sttrl's normalizer) with the corpus WER computed exactly as the judge does. Benchmarks score the *dev* split
(tuning); the test split is only for reported results.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from val_noise import corpus_wer, per_utterance

from sttrl.config import config_from_dict
from sttrl.data import load_hidden_split
from sttrl.data.dataset import data_fingerprint
from sttrl.data.hidden import judge_access
from sttrl.eval.decode import error_rates, max_new_tokens, transcribe
from sttrl.eval.engines.ct2 import load_ct2
from sttrl.rundir import RUN_RECORD
from sttrl.train.device import resolve_device
from sttrl.train.features import FeatureStore, feature_cache_dir
from sttrl.train.model import load_for_inference

# What --quick adds to the debug preset (which has no instance set): train/test instances and a hidden domain large
# enough for a dev split of a few utterances (as tests/test_hidden_splits.py's headroom run).
QUICK_OVERRIDES = (
    "env.instances.lr=[1e-4, 1e-2]",
    "env.instances.batch_sizes=[2, 4]",
    "data.max_hidden_utterances=32",
    "data.hidden_sentences=48",
    "data.hidden_dev_fraction=0.5",
)


def score_run(run_dir: str | Path, split: str = "dev") -> dict[str, Any]:
    """``{wer, n, errors, words, seconds, cpu_s}`` of ``run_dir``'s final model on the hidden ``split``: per
    utterance, the word errors (substitutions + deletions + insertions) and the reference's words."""
    run_dir = Path(run_dir)
    cpu0, t0 = time.process_time(), time.perf_counter()
    record = json.loads((run_dir / RUN_RECORD).read_text())
    cfg = config_from_dict(record["config"])
    device = resolve_device(cfg.run.device)
    loaded = load_for_inference(run_dir / record["final"]["path"], run_dir / "processor", cfg.model, device)
    with judge_access(record, data_fingerprint(cfg.data)):
        hidden = load_hidden_split(cfg.data, progress=False, split=split)
    hidden = hidden[: cfg.data.max_hidden_utterances] if cfg.data.max_hidden_utterances else hidden  # as the judge
    store = FeatureStore(loaded, hidden, cfg.model.max_target_tokens, feature_cache_dir(cfg))
    decode = None
    if cfg.train.eval_engine == "ct2":
        decode = load_ct2(loaded, device, cfg.train.eval_compute_type, cfg.run.threads).decode
    idx = list(range(len(store)))
    hyps = transcribe(store, idx, cfg.train.eval_batch_size, max_new_tokens(store), device, decode)
    refs = [u.text for u in hidden]
    rows = per_utterance(refs, hyps)
    wer = error_rates(refs, hyps)[0]
    if abs(corpus_wer(rows) - wer) > 1e-9:  # the per-utterance rows must add up to the judge's corpus WER
        raise RuntimeError(f"{run_dir}: per-utterance WER {corpus_wer(rows)} differs from the corpus WER {wer}")
    return {
        "wer": wer,
        "n": len(rows),
        "errors": [e for e, _ in rows],
        "words": [w for _, w in rows],
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - cpu0,
    }


def hidden_sizes(run_dir: str | Path) -> dict[str, int]:
    """Utterances the judge scores on each hidden part (``dev``, ``test``) of ``run_dir``'s data, from the hidden
    domain's record that loading the split writes beside the data manifest (call after :func:`score_run`)."""
    record = json.loads((Path(run_dir) / RUN_RECORD).read_text())
    cfg = config_from_dict(record["config"])
    hidden = json.loads(Path(record["data_manifest"]).with_suffix(".hidden.json").read_text())
    parts = [u["part"] for u in hidden["utterances"]]
    cap = cfg.data.max_hidden_utterances
    return {p: min(parts.count(p), cap) if cap else parts.count(p) for p in ("dev", "test")}
