"""The ``ct2`` engine: CTranslate2 decoding of the model's current weights.

With ``train.eval_engine=ct2`` the model's *current* weights are converted in memory to the CTranslate2
Whisper format (sttrl.train.ct2_format's mapping, float32, no file written) and loaded with
``ctranslate2.models.Whisper(..., files=...)``; decoding is greedy with the same forced prompt
(``LoadedModel.prefix_ids``), the same token limit (``max_new_tokens``), the same suppressed tokens
(the generation config's ``suppress_tokens``; ``begin_suppress_tokens`` go in the CT2 config as
``suppress_ids_begin``), and the text goes through the same tokenizer and normalizer, so WER and CER
are computed exactly as with transformers.

The converted model is cached while the weights are unchanged (a digest of their bytes is the key,
with the device and compute type), so evaluating the same weights twice converts once.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sttrl import extras
from sttrl.config import Config
from sttrl.errors import ConfigError
from sttrl.eval.decode import evaluate
from sttrl.eval.engines import Engine
from sttrl.eval.result import EvalResult
from sttrl.train.ct2_format import Ct2Model, dump_ct2
from sttrl.train.ct2_whisper import hf_to_ct2
from sttrl.train.features import FeatureStore
from sttrl.train.model import LoadedModel

if TYPE_CHECKING:  # the optional extra sttrl[ct2]: imported by import_ctranslate2 when the engine is used
    import ctranslate2

WHISPER_SPEC = ("WhisperSpec", 3)  # spec name and revision of ctranslate2 4.x


def ct2_compute_type(requested: str, device: torch.device) -> str:
    """The CTranslate2 compute type for ``train.eval_compute_type`` on ``device``; ConfigError if unsupported."""
    ct2 = import_ctranslate2()
    kind = "cuda" if device.type == "cuda" else "cpu"
    compute = ("float16" if kind == "cuda" else "float32") if requested == "auto" else requested
    supported = sorted(ct2.get_supported_compute_types(kind))
    if compute not in supported:
        raise ConfigError(
            f"train.eval_compute_type={requested} is not supported by CTranslate2 on {kind}; "
            f"valid there: auto, {', '.join(supported)}"
        )
    return compute


def import_ctranslate2() -> Any:
    """The ``ctranslate2`` module; a missing package says which extra installs it."""
    return extras.load(
        "ctranslate2", extra="ct2", what="train.eval_engine=ct2", hint="or set train.eval_engine=transformers"
    )


def ct2_files(loaded: LoadedModel) -> dict[str, bytes]:
    """``model.bin``, ``config.json`` and ``vocabulary.json`` of the model's current weights, in memory."""
    model = loaded.model
    state = {k: v for k, v in model.state_dict().items()}
    variables, aliases = hf_to_ct2(state, num_heads=int(model.config.encoder_attention_heads))
    buf = io.BytesIO()
    dump_ct2(buf, Ct2Model(WHISPER_SPEC[0], WHISPER_SPEC[1], variables, aliases))
    gen = model.generation_config
    config = {
        "suppress_ids": list(gen.suppress_tokens or []),
        "suppress_ids_begin": list(gen.begin_suppress_tokens or []),
        "lang_ids": sorted((getattr(gen, "lang_to_id", None) or {}).values()),
        "alignment_heads": [list(h) for h in (getattr(gen, "alignment_heads", None) or [])],
    }
    vocab_size = int(model.config.vocab_size)
    tokens = loaded.processor.tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    vocab = [t if t is not None else f"<|sttrl_unused_{i}|>" for i, t in enumerate(tokens)]
    return {
        "model.bin": buf.getvalue(),
        "config.json": json.dumps(config).encode(),
        "vocabulary.json": json.dumps(vocab, ensure_ascii=False).encode(),
    }


def weights_key(model: torch.nn.Module) -> str:
    """A digest of every parameter and buffer's bytes. (Version counters are not enough: torch's fused AdamW
    updates parameters without bumping them, measured with torch 2.13.)"""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        arr = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        digest.update(name.encode())
        digest.update(arr)
    return digest.hexdigest()


@dataclass
class Ct2Whisper:
    """A CTranslate2 Whisper holding a model's weights at one moment, and how to decode with it."""

    whisper: ctranslate2.models.Whisper
    prefix_ids: list[int]
    suppress_tokens: list[int]
    suppress_blank: bool
    compute_type: str
    convert_seconds: float

    def decode(self, features: torch.Tensor, max_new_tokens: int) -> list[list[int]]:
        """Greedy token ids (prompt excluded) of a batch of log-mel features."""
        ct2 = import_ctranslate2()
        arr = np.ascontiguousarray(features.detach().to("cpu", torch.float32).numpy())
        results = self.whisper.generate(
            ct2.StorageView.from_array(arr),
            [list(self.prefix_ids)] * arr.shape[0],
            beam_size=1,
            # CTranslate2's Whisper generates at most max_length // 2 tokens after the prompt (as openai-whisper's
            # sample_len = n_text_ctx // 2); measured: max_length 59 -> 29 tokens, 118 -> 59.
            max_length=2 * max_new_tokens,
            suppress_blank=self.suppress_blank,
            suppress_tokens=list(self.suppress_tokens),
        )
        return [r.sequences_ids[0] for r in results]


_CACHE: dict[str, Any] = {}


def load_ct2(
    loaded: LoadedModel, device: torch.device, compute_type: str = "auto", threads: int | None = None
) -> Ct2Whisper:
    """The model's current weights as a CTranslate2 Whisper (cached while the weights are unchanged)."""
    ct2 = import_ctranslate2()
    compute = ct2_compute_type(compute_type, device)
    t0 = time.perf_counter()
    key = (weights_key(loaded.model), tuple(loaded.prefix_ids), str(device), compute, threads)
    if _CACHE.get("key") == key:
        hit: Ct2Whisper = _CACHE["engine"]
        return Ct2Whisper(
            hit.whisper, hit.prefix_ids, hit.suppress_tokens, hit.suppress_blank, compute, time.perf_counter() - t0
        )  # the digest only
    _CACHE.clear()  # one converted model at a time: free the previous one first
    files = ct2_files(loaded)
    kind = "cuda" if device.type == "cuda" else "cpu"
    whisper = ct2.models.Whisper(
        f"sttrl-memory-{id(loaded.model)}",
        device=kind,
        device_index=device.index or 0,
        compute_type=compute,
        intra_threads=threads or torch.get_num_threads(),
        files=files,
    )
    del files
    gen = loaded.model.generation_config
    engine = Ct2Whisper(
        whisper,
        list(loaded.prefix_ids),
        list(gen.suppress_tokens or []),
        bool(gen.begin_suppress_tokens),
        compute,
        time.perf_counter() - t0,
    )
    _CACHE.update(key=key, engine=engine)
    return engine


def _label(cfg: Config, device: torch.device) -> str:
    return f"ct2/{ct2_compute_type(cfg.train.eval_compute_type, device)}"


def _evaluate(cfg: Config, store: FeatureStore, device: torch.device, per_utterance: bool = False) -> EvalResult:
    ct = load_ct2(store.loaded, device, cfg.train.eval_compute_type, cfg.run.threads)
    return evaluate(
        store,
        device,
        batch_size=cfg.train.eval_batch_size,
        n_examples=cfg.train.example_transcripts,
        per_utterance=per_utterance,
        decode=ct.decode,
        engine=f"ct2/{ct.compute_type}",
        convert_seconds=ct.convert_seconds,
    )


ENGINE = Engine("ct2", "CTranslate2 (pip install 'sttrl[ct2]'), greedy; train.eval_compute_type", _evaluate, _label)
