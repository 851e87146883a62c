"""Batched greedy decoding and WER/CER with jiwer over a declared text normalizer."""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable

import jiwer
import torch

from sttrl.eval.result import EvalResult
from sttrl.train.exclusive import exclusive
from sttrl.train.features import FeatureStore

_PUNCT = re.compile(r"[^\w\s']|_")
_APOS = re.compile(r"(?<!\w)'|'(?!\w)")
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """The declared normalizer: NFKC, lowercase, punctuation -> space (apostrophes inside words such as
    ng'ombe are kept), whitespace collapsed. Applied to references and hypotheses alike."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = _PUNCT.sub(" ", text)
    text = _APOS.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus WER and CER after normalization; an empty hypothesis counts as all deletions."""
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    refs = [refs[i] for i in keep]
    hyps = [hyps[i] if hyps[i] else "" for i in keep]
    if not refs:
        raise ValueError("no non-empty reference to score")
    wer = jiwer.wer(refs, hyps)
    cer = jiwer.cer(refs, hyps)
    return float(wer), float(cer)


def utterance_errors(ids: list[str], references: list[str], hypotheses: list[str]) -> list[dict]:
    """Per utterance, after normalization: reference words and characters and the edit errors (substitutions,
    deletions, insertions) of each; utterances whose reference is empty are left out, as in :func:`error_rates`.
    Their sums give the corpus WER and CER: ``sum(word_errors) / sum(words)``."""
    out = []
    for uid, ref, hyp in zip(ids, references, hypotheses, strict=True):
        r, h = normalize_text(ref), normalize_text(hyp)
        if not r:
            continue
        w, c = jiwer.process_words(r, h), jiwer.process_characters(r, h)
        out.append(
            {
                "id": uid,
                "words": len(r.split()),
                "word_errors": w.substitutions + w.deletions + w.insertions,
                "chars": len(r),
                "char_errors": c.substitutions + c.deletions + c.insertions,
            }
        )
    return out


# A batch decoder: (log-mel features (B, mels, frames) on the CPU, max new tokens) -> token ids per utterance.
DecodeBatch = Callable[[torch.Tensor, int], list[list[int]]]


@torch.inference_mode()
def transcribe(
    store: FeatureStore,
    indices: list[int],
    batch_size: int,
    max_new_tokens: int,
    device: torch.device,
    decode: DecodeBatch | None = None,
) -> list[str]:
    """Greedy transcripts of ``store``'s utterances at ``indices`` (in that order), in batches.

    Batches are formed longest audio first, so that utterances with transcripts of similar length
    decode together and a batch stops soon after its last sequence ends. ``decode`` replaces
    transformers' ``generate`` (e.g. CTranslate2, see sttrl.eval.engines); the text is decoded the same way."""
    loaded = store.loaded
    model = loaded.model
    was_training = model.training
    model.eval()
    order = sorted(range(len(indices)), key=lambda k: -store.utterances[indices[k]].duration)
    out: list[str | None] = [None] * len(indices)
    try:
        for start in range(0, len(order), batch_size):
            ks = order[start : start + batch_size]
            feats = store.features([indices[k] for k in ks])
            if decode is not None:
                ids = decode(feats, max_new_tokens)
            else:
                ids = model.generate(
                    input_features=feats.to(device),
                    max_new_tokens=max_new_tokens,
                    num_beams=1,
                    do_sample=False,
                    **loaded.generate_kwargs,
                )
            texts = loaded.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
            for k, text in zip(ks, texts, strict=True):
                out[k] = text
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def evaluate(
    store: FeatureStore,
    device: torch.device,
    batch_size: int = 16,
    max_utterances: int | None = None,
    n_examples: int = 3,
    decode: DecodeBatch | None = None,
    engine: str = "transformers",
    convert_seconds: float = 0.0,
    per_utterance: bool = False,
) -> EvalResult:
    """WER/CER of the model on the first ``max_utterances`` of ``store`` (all by default).

    ``decode``/``engine``: another batch decoder and its name (see sttrl.eval.engines); ``convert_seconds``
    (already spent preparing it) is added to the reported time. ``per_utterance``: also each utterance's errors
    (:func:`utterance_errors`) in ``EvalResult.utterances``."""
    n = len(store) if max_utterances is None else min(max_utterances, len(store))
    indices = list(range(n))
    max_new = max_new_tokens(store)
    start = time.perf_counter() - convert_seconds
    hyps = transcribe(store, indices, batch_size, max_new, device, decode)
    seconds = time.perf_counter() - start
    refs = [store.utterances[i].text for i in indices]
    wer, cer = error_rates(refs, hyps)
    examples = [
        {"id": store.utterances[i].uid, "reference": refs[i], "hypothesis": hyps[i]} for i in indices[:n_examples]
    ]
    res = EvalResult(wer, cer, n, seconds, n / seconds if seconds > 0 else 0.0, examples, engine, convert_seconds)
    if per_utterance:
        res.utterances = utterance_errors([store.utterances[i].uid for i in indices], refs, hyps)
    return res


def max_new_tokens(store: FeatureStore) -> int:
    """The generation limit of an evaluation: 1.5x the longest label + 8, within the model's positions."""
    loaded = store.loaded
    limit = int(loaded.model.config.max_target_positions) - len(loaded.prefix_ids)
    return min(int(store.longest_label() * 1.5) + 8, store.max_tokens, limit)
