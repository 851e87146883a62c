"""The Whisper name mapping between CTranslate2's ``WhisperSpec`` variables and transformers'
``WhisperForConditionalGeneration`` (the layout is in :mod:`sttrl.train.ct2_format`), both directions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import WhisperConfig

from sttrl.errors import ModelError
from sttrl.train.ct2_format import bf16_to_float32

# ---------------------------------------------------------------- Whisper mapping

# Scalar config variables of a WhisperSpec and the value this converter supports (None: any value).
WHISPER_FLAGS: dict[str, int | None] = {
    "decoder/activation": 3,  # CTranslate2 ActivationType.GELU
    "decoder/pre_norm": 1,
    "decoder/alibi": 0,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
    "decoder/alibi_use_positive_positions": None,
    "decoder/scale_alibi": None,
    "decoder/alignment_heads": None,
    "decoder/alignment_layer": None,
    "decoder/num_heads": None,
    "encoder/num_heads": None,
}
HEADS_BY_D_MODEL = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}
TIED_ALIAS = ("decoder/projection/weight", "decoder/embeddings/weight")


@dataclass(frozen=True)
class TensorMap:
    """One CT2 tensor and the HF tensor(s) it becomes: copied, or split in equal parts along dim 0."""

    ct2: str
    hf: tuple[str, ...]  # split parts along dim 0, in order; a part named "…k_proj.bias" is a dropped zero bias


def _linear(ct2: str, hf: tuple[str, ...]) -> list[TensorMap]:
    return [
        TensorMap(f"{ct2}/weight", tuple(f"{p}.weight" for p in hf)),
        TensorMap(f"{ct2}/bias", tuple(f"{p}.bias" for p in hf)),
    ]


def _norm(ct2: str, hf: str) -> list[TensorMap]:
    return [TensorMap(f"{ct2}/gamma", (f"{hf}.weight",)), TensorMap(f"{ct2}/beta", (f"{hf}.bias",))]


def _layer_units(side: str, i: int) -> list[TensorMap]:
    c, h = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
    units = _linear(
        f"{c}/self_attention/linear_0", (f"{h}.self_attn.q_proj", f"{h}.self_attn.k_proj", f"{h}.self_attn.v_proj")
    )
    units += _linear(f"{c}/self_attention/linear_1", (f"{h}.self_attn.out_proj",))
    units += _norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
    if side == "decoder":
        units += _linear(f"{c}/attention/linear_0", (f"{h}.encoder_attn.q_proj",))
        units += _linear(f"{c}/attention/linear_1", (f"{h}.encoder_attn.k_proj", f"{h}.encoder_attn.v_proj"))
        units += _linear(f"{c}/attention/linear_2", (f"{h}.encoder_attn.out_proj",))
        units += _norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
    units += _linear(f"{c}/ffn/linear_0", (f"{h}.fc1",))
    units += _linear(f"{c}/ffn/linear_1", (f"{h}.fc2",))
    units += _norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
    return units


def whisper_units(encoder_layers: int, decoder_layers: int) -> list[TensorMap]:
    """Every CT2 -> HF correspondence of a Whisper with the given depth (``proj_out`` is tied, not listed)."""
    units = _linear("encoder/conv1", ("model.encoder.conv1",)) + _linear("encoder/conv2", ("model.encoder.conv2",))
    units.append(TensorMap("encoder/position_encodings/encodings", ("model.encoder.embed_positions.weight",)))
    for i in range(encoder_layers):
        units += _layer_units("encoder", i)
    units += _norm("encoder/layer_norm", "model.encoder.layer_norm")
    units.append(TensorMap("decoder/embeddings/weight", ("model.decoder.embed_tokens.weight",)))
    units.append(TensorMap("decoder/position_encodings/encodings", ("model.decoder.embed_positions.weight",)))
    for i in range(decoder_layers):
        units += _layer_units("decoder", i)
    units += _norm("decoder/layer_norm", "model.decoder.layer_norm")
    return units


def _is_dropped(hf_name: str) -> bool:
    return hf_name.endswith("k_proj.bias")


def expected_hf_keys(encoder_layers: int, decoder_layers: int) -> set[str]:
    """State-dict names of ``WhisperForConditionalGeneration`` with this depth, ``proj_out.weight`` included."""
    keys = {h for u in whisper_units(encoder_layers, decoder_layers) for h in u.hf if not _is_dropped(h)}
    return keys | {"proj_out.weight"}


def _count_layers(names: Any, side: str, pattern: str) -> int:
    found = [int(m.group(1)) for n in names if (m := re.match(pattern.format(side=side), n))]
    return max(found) + 1 if found else 0


def ct2_layer_counts(variables: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(encoder layers, decoder layers), from the highest ``layer_<i>`` index present."""
    return (
        _count_layers(variables, "encoder", r"{side}/layer_(\d+)/"),
        _count_layers(variables, "decoder", r"{side}/layer_(\d+)/"),
    )


def _to_float32(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint16:
        return bf16_to_float32(arr)
    if arr.dtype.kind != "f":
        raise ModelError(
            f"CT2 variable {name!r} is {arr.dtype} (quantized weights are not supported); "
            "valid weight dtypes: float32, float16, bfloat16"
        )
    return arr.astype(np.float32)


def _check_flags(variables: Mapping[str, np.ndarray]) -> None:
    for name, want in WHISPER_FLAGS.items():
        if want is not None and name in variables and int(np.asarray(variables[name])) != want:
            raise ModelError(f"CT2 flag {name} = {int(np.asarray(variables[name]))}: Hugging Face Whisper needs {want}")


def ct2_to_hf(
    variables: Mapping[str, np.ndarray], aliases: Mapping[str, str], dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Map a CT2 Whisper's variables to ``WhisperForConditionalGeneration`` state-dict tensors.

    Fused q/k/v (and cross-attention k/v) are split; the all-zero k biases are dropped; ``proj_out.weight``
    is the same tensor as ``model.decoder.embed_tokens.weight``. Every variable must be consumed and every
    HF parameter produced, else :class:`ModelError` lists the difference.
    """
    dtype = dtype or torch.float32
    if any(n.endswith("_scale") for n in variables):
        raise ModelError(
            "this CT2 model is int8/int16-quantized (it has *_scale variables); "
            "only float32/float16/bfloat16 weights can be converted"
        )
    _check_flags(variables)
    n_enc, n_dec = ct2_layer_counts(variables)
    out: dict[str, torch.Tensor] = {}
    consumed: set[str] = set()
    missing: list[str] = []
    for unit in whisper_units(n_enc, n_dec):
        if unit.ct2 not in variables:
            missing.append(unit.ct2)
            continue
        consumed.add(unit.ct2)
        arr = _to_float32(unit.ct2, variables[unit.ct2])
        if arr.shape[0] % len(unit.hf):
            raise ModelError(
                f"CT2 variable {unit.ct2!r} of shape {arr.shape} cannot be split into {len(unit.hf)} equal parts"
            )
        for hf_name, part in zip(unit.hf, np.split(arr, len(unit.hf), axis=0), strict=True):
            if _is_dropped(hf_name):
                if np.any(part != 0):
                    raise ModelError(
                        f"CT2 variable {unit.ct2!r}: the k part of the fused bias is non-zero "
                        f"(max |x| {float(np.abs(part).max()):.3g}); Whisper has no k bias"
                    )
                continue
            out[hf_name] = torch.from_numpy(np.ascontiguousarray(part)).to(dtype)
    emb = "model.decoder.embed_tokens.weight"
    proj, target = TIED_ALIAS
    known_aliases = {proj: target}
    bad_aliases = {a: t for a, t in aliases.items() if known_aliases.get(a) != t}
    if proj in variables:
        consumed.add(proj)
        if target in variables and not np.array_equal(variables[proj], variables[target]):
            raise ModelError("CT2 decoder/projection/weight differs from decoder/embeddings/weight; Whisper ties them")
    elif proj not in aliases:
        missing.append(f"{proj} (variable or alias of {target})")
    if emb in out:
        out["proj_out.weight"] = out[emb]
    unexpected = sorted(set(variables) - consumed - set(WHISPER_FLAGS))
    if missing or unexpected or bad_aliases:
        raise ModelError(
            "CT2 Whisper variables do not match the Hugging Face layout: "
            f"missing {missing or 'none'}; unexpected {unexpected or 'none'}; "
            f"unexpected aliases {bad_aliases or 'none'} (valid alias: {proj} -> {target})"
        )
    absent = expected_hf_keys(n_enc, n_dec) - set(out)
    if absent:
        raise ModelError(f"conversion left Hugging Face parameters unset: {sorted(absent)}")
    return out


def hf_to_ct2(
    state_dict: Mapping[str, torch.Tensor], *, num_heads: int | None = None, dtype: np.dtype | type = np.float32
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Inverse of :func:`ct2_to_hf`: fuse q/k/v with zero k biases, tie the projection by alias, add the flags.

    ``num_heads`` is written as ``encoder/num_heads`` and ``decoder/num_heads``; without it the heads come
    from :data:`HEADS_BY_D_MODEL`, and are left out for an unlisted width.
    """
    names = {k for k in state_dict}
    n_enc = _count_layers(names, "encoder", r"model\.{side}\.layers\.(\d+)\.")
    n_dec = _count_layers(names, "decoder", r"model\.{side}\.layers\.(\d+)\.")
    expected = expected_hf_keys(n_enc, n_dec)
    missing, unexpected = sorted(expected - names), sorted(names - expected)
    if missing or unexpected:
        raise ModelError(
            f"state dict is not a WhisperForConditionalGeneration: missing {missing or 'none'}; "
            f"unexpected {unexpected or 'none'}"
        )
    emb = state_dict["model.decoder.embed_tokens.weight"]
    if not bool((state_dict["proj_out.weight"] == emb).all()):
        raise ModelError("proj_out.weight differs from model.decoder.embed_tokens.weight; CT2 Whisper ties them")
    arrays = {k: v.detach().to("cpu").float().numpy() for k, v in state_dict.items()}
    variables: dict[str, np.ndarray] = {}
    for unit in whisper_units(n_enc, n_dec):
        parts = []
        for hf_name in unit.hf:
            if _is_dropped(hf_name):
                parts.append(np.zeros_like(arrays[hf_name.replace("k_proj", "q_proj")]))
            else:
                parts.append(arrays[hf_name])
        variables[unit.ct2] = np.concatenate(parts, axis=0).astype(dtype)
    d_model = variables["encoder/conv1/weight"].shape[0]
    heads = num_heads or HEADS_BY_D_MODEL.get(d_model)
    flags = {
        "decoder/activation": np.int8(3),
        "decoder/alibi": np.int8(0),
        "decoder/alignment_heads": np.int16(1),
        "decoder/alignment_layer": np.int16(-1),
        "decoder/pre_norm": np.int8(1),
        "decoder/scale_embeddings": np.int8(0),
        "decoder/start_from_zero_embedding": np.int8(0),
    }
    if heads:
        flags |= {"decoder/num_heads": np.int16(heads), "encoder/num_heads": np.int16(heads)}
    variables |= {k: np.asarray(v) for k, v in flags.items()}
    return dict(sorted(variables.items())), {TIED_ALIAS[0]: TIED_ALIAS[1]}


def whisper_config_from_ct2(
    variables: Mapping[str, np.ndarray], *, num_heads: int | None = None, **overrides: Any
) -> WhisperConfig:
    """Infer a ``WhisperConfig`` from CT2 shapes; ``overrides`` (e.g. special token ids) are passed through.

    Heads come from ``num_heads``, else the file's ``encoder/num_heads``, else :data:`HEADS_BY_D_MODEL`.
    """
    needed = [
        "encoder/conv1/weight",
        "encoder/layer_0/ffn/linear_0/weight",
        "decoder/layer_0/ffn/linear_0/weight",
        "decoder/embeddings/weight",
        "encoder/position_encodings/encodings",
        "decoder/position_encodings/encodings",
    ]
    absent = [n for n in needed if n not in variables]
    if absent:
        raise ModelError(f"cannot infer the Whisper config: CT2 variables {absent} are missing")
    d_model, n_mels, _ = variables["encoder/conv1/weight"].shape
    n_enc, n_dec = ct2_layer_counts(variables)
    heads = num_heads
    if heads is None and "encoder/num_heads" in variables:
        heads = int(np.asarray(variables["encoder/num_heads"]))
    if heads is None:
        heads = HEADS_BY_D_MODEL.get(int(d_model))
    if not heads or d_model % heads:
        raise ModelError(
            f"cannot determine attention heads for d_model {d_model}: pass num_heads "
            f"(a divisor of d_model; known widths: {HEADS_BY_D_MODEL})"
        )
    vocab = int(variables["decoder/embeddings/weight"].shape[0])
    fields: dict[str, Any] = dict(
        vocab_size=vocab,
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        dtype="float32",
    )
    if "pad_token_id" not in overrides and vocab <= 50256:
        raise ModelError(f"vocabulary of {vocab} tokens: pass pad/bos/eos/decoder_start token ids explicitly")
    fields.update(overrides)
    return WhisperConfig(**fields)
