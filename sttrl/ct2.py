"""CTranslate2 ``model.bin`` reader/writer and the Whisper name mapping to ``WhisperForConditionalGeneration``.

File layout (binary version 6, little-endian): u32 version; spec name; u32 spec revision; u32 variable
count; per variable: name, u8 rank, u32 dims[rank], u8 dtype id, u32 byte count, raw bytes; u32 alias
count; per alias: alias name, target name. A string is a u16 length (including the NUL) + UTF-8 + NUL.

Reader and writer need numpy only; torch and transformers are imported by the Whisper functions.
bfloat16 variables (dtype id 5) are kept as their raw bits in a ``uint16`` array: numpy has no bfloat16,
and CTranslate2 has no unsigned 16-bit type, so ``uint16`` means bfloat16 unambiguously and round-trips
exactly; :func:`bf16_to_float32` widens such an array.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Mapping

import numpy as np

from sttrl.errors import ModelError
from sttrl.io import atomic_writer

if TYPE_CHECKING:
    import torch
    from transformers import WhisperConfig

SUPPORTED_BINARY_VERSION = 6
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16 bits
}
DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_DTYPE_IDS = {dt.str.lstrip("<|"): i for i, dt in DTYPES.items()}
_MAX_RANK = 8


@dataclass
class Ct2Model:
    """A parsed ``model.bin``: variables by name (read-only arrays) and aliases (alias -> target)."""

    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    binary_version: int = SUPPORTED_BINARY_VERSION


class _Reader:
    """Bounds-checked cursor over the file's bytes; every error names the file and offset."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def fail(self, what: str, at: int | None = None) -> ModelError:
        at = self.pos if at is None else at
        return ModelError(f"invalid CTranslate2 model file {self.path} at offset {at}: {what}")

    def take(self, n: int, what: str) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.data):
            raise self.fail(f"truncated: {what} needs {n} bytes but only {len(self.data) - start} remain "
                            f"(file size {len(self.data)})")
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str) -> int:
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, start)[0]

    def string(self, what: str) -> str:
        at = self.pos
        n = self.unpack("<H", f"length of {what}")
        if n == 0:
            raise self.fail(f"{what} has length 0; a string must end with a NUL byte", at)
        start = self.take(n, what)
        raw = self.data[start:start + n]
        if raw[-1] != 0:
            raise self.fail(f"{what} is not NUL-terminated", at)
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not valid UTF-8 ({exc})", at) from None


def read_ct2(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin``; raises :class:`ModelError` naming the file and offset on bad input."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read CTranslate2 model file {path}: {exc}") from exc
    r = _Reader(data, path)
    version = r.unpack("<I", "binary version")
    if version != SUPPORTED_BINARY_VERSION:
        raise r.fail(f"unsupported binary version {version} (this reader supports {SUPPORTED_BINARY_VERSION}); "
                     "is this a CTranslate2 model.bin?", 0)
    spec_name = r.string("spec name")
    revision = r.unpack("<I", "spec revision")
    count = r.unpack("<I", "variable count")
    if count * 9 > len(data) - r.pos:  # 9 bytes: the smallest possible variable record
        raise r.fail(f"truncated or not a model.bin: claims {count} variables but only {len(data) - r.pos} "
                     "bytes remain")
    variables: dict[str, np.ndarray] = {}
    for i in range(count):
        at = r.pos
        name = r.string(f"name of variable {i}")
        if name in variables:
            raise r.fail(f"duplicate variable {name!r}", at)
        rank = r.unpack("<B", f"rank of {name!r}")
        if rank > _MAX_RANK:
            raise r.fail(f"variable {name!r} has rank {rank} (at most {_MAX_RANK} is valid)", at)
        dims = tuple(r.unpack("<I", f"dimension {d} of {name!r}") for d in range(rank))
        type_at = r.pos
        type_id = r.unpack("<B", f"dtype of {name!r}")
        if type_id not in DTYPES:
            raise r.fail(f"variable {name!r} has unknown dtype id {type_id} (valid: "
                         + ", ".join(f"{k} {v}" for k, v in DTYPE_NAMES.items()) + ")", type_at)
        dtype = DTYPES[type_id]
        nbytes = r.unpack("<I", f"byte count of {name!r}")
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise r.fail(f"variable {name!r} of shape {dims} and dtype {DTYPE_NAMES[type_id]} declares "
                         f"{nbytes} bytes; its shape needs {expected}", at)
        start = r.take(nbytes, f"data of {name!r}")
        variables[name] = np.frombuffer(data, dtype, nbytes // dtype.itemsize, start).reshape(dims)
    aliases: dict[str, str] = {}
    n_alias = r.unpack("<I", "alias count")
    for i in range(n_alias):
        alias = r.string(f"name of alias {i}")
        aliases[alias] = r.string(f"target of alias {alias!r}")
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected trailing bytes after the aliases")
    return Ct2Model(spec_name, revision, variables, aliases, version)


def _string(s: str) -> bytes:
    raw = s.encode("utf-8") + b"\0"
    if len(raw) > 0xFFFF:
        raise ModelError(f"name too long for a CTranslate2 file ({len(raw)} bytes, at most 65535): {s[:60]}...")
    return struct.pack("<H", len(raw)) + raw


def dump_ct2(fh: BinaryIO, model: Ct2Model) -> None:
    """Serialize ``model`` to the open binary stream ``fh`` in the layout :func:`read_ct2` parses."""
    fh.write(struct.pack("<I", model.binary_version) + _string(model.spec_name))
    fh.write(struct.pack("<II", model.spec_revision, len(model.variables)))
    for name, value in model.variables.items():
        arr = np.asarray(value)
        key = arr.dtype.str.lstrip("<|=")
        if arr.dtype.byteorder == ">" or key not in _DTYPE_IDS:
            raise ModelError(f"variable {name!r} has dtype {arr.dtype}; valid: float32, int8, int16, int32, "
                             "float16, uint16 (= bfloat16 bits), little-endian")
        if arr.ndim > _MAX_RANK:
            raise ModelError(f"variable {name!r} has rank {arr.ndim}; at most {_MAX_RANK} is valid")
        raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)  # no copy of the bytes
        fh.write(_string(name) + struct.pack("<B", arr.ndim))
        fh.write(struct.pack(f"<{arr.ndim}I", *arr.shape))
        fh.write(struct.pack("<BI", _DTYPE_IDS[key], raw.nbytes))
        fh.write(raw)
    fh.write(struct.pack("<I", len(model.aliases)))
    for alias, target in model.aliases.items():
        fh.write(_string(alias) + _string(target))


def write_ct2(path: str | Path, model: Ct2Model) -> Path:
    """Write ``model`` in the layout :func:`read_ct2` parses (temp file + rename)."""
    path = Path(path)
    with atomic_writer(path) as fh:
        dump_ct2(fh, model)
    return path


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 raw bits (``uint16``) to float32 exactly."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


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
    return [TensorMap(f"{ct2}/weight", tuple(f"{p}.weight" for p in hf)),
            TensorMap(f"{ct2}/bias", tuple(f"{p}.bias" for p in hf))]


def _norm(ct2: str, hf: str) -> list[TensorMap]:
    return [TensorMap(f"{ct2}/gamma", (f"{hf}.weight",)), TensorMap(f"{ct2}/beta", (f"{hf}.bias",))]


def _layer_units(side: str, i: int) -> list[TensorMap]:
    c, h = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
    units = _linear(f"{c}/self_attention/linear_0", (f"{h}.self_attn.q_proj", f"{h}.self_attn.k_proj",
                                                     f"{h}.self_attn.v_proj"))
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
    return (_count_layers(variables, "encoder", r"{side}/layer_(\d+)/"),
            _count_layers(variables, "decoder", r"{side}/layer_(\d+)/"))


def _to_float32(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint16:
        return bf16_to_float32(arr)
    if arr.dtype.kind != "f":
        raise ModelError(f"CT2 variable {name!r} is {arr.dtype} (quantized weights are not supported); "
                         "valid weight dtypes: float32, float16, bfloat16")
    return arr.astype(np.float32)


def _check_flags(variables: Mapping[str, np.ndarray]) -> None:
    for name, want in WHISPER_FLAGS.items():
        if want is not None and name in variables and int(np.asarray(variables[name])) != want:
            raise ModelError(f"CT2 flag {name} = {int(np.asarray(variables[name]))}: Hugging Face Whisper needs {want}")


def ct2_to_hf(variables: Mapping[str, np.ndarray], aliases: Mapping[str, str],
              dtype: "torch.dtype | None" = None) -> dict[str, "torch.Tensor"]:
    """Map a CT2 Whisper's variables to ``WhisperForConditionalGeneration`` state-dict tensors.

    Fused q/k/v (and cross-attention k/v) are split; the all-zero k biases are dropped; ``proj_out.weight``
    is the same tensor as ``model.decoder.embed_tokens.weight``. Every variable must be consumed and every
    HF parameter produced, else :class:`ModelError` lists the difference.
    """
    import torch

    dtype = dtype or torch.float32
    if any(n.endswith("_scale") for n in variables):
        raise ModelError("this CT2 model is int8/int16-quantized (it has *_scale variables); "
                         "only float32/float16/bfloat16 weights can be converted")
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
            raise ModelError(f"CT2 variable {unit.ct2!r} of shape {arr.shape} cannot be split into "
                             f"{len(unit.hf)} equal parts")
        for hf_name, part in zip(unit.hf, np.split(arr, len(unit.hf), axis=0)):
            if _is_dropped(hf_name):
                if np.any(part != 0):
                    raise ModelError(f"CT2 variable {unit.ct2!r}: the k part of the fused bias is non-zero "
                                     f"(max |x| {float(np.abs(part).max()):.3g}); Whisper has no k bias")
                continue
            out[hf_name] = torch.from_numpy(np.ascontiguousarray(part)).to(dtype)
    emb = "model.decoder.embed_tokens.weight"
    proj, target = TIED_ALIAS
    known_aliases = {proj: target}
    bad_aliases = {a: t for a, t in aliases.items() if known_aliases.get(a) != t}
    if proj in variables:
        consumed.add(proj)
        if target in variables and not np.array_equal(variables[proj], variables[target]):
            raise ModelError("CT2 decoder/projection/weight differs from decoder/embeddings/weight; "
                             "Whisper ties them")
    elif proj not in aliases:
        missing.append(f"{proj} (variable or alias of {target})")
    if emb in out:
        out["proj_out.weight"] = out[emb]
    unexpected = sorted(set(variables) - consumed - set(WHISPER_FLAGS))
    if missing or unexpected or bad_aliases:
        raise ModelError("CT2 Whisper variables do not match the Hugging Face layout: "
                         f"missing {missing or 'none'}; unexpected {unexpected or 'none'}; "
                         f"unexpected aliases {bad_aliases or 'none'} (valid alias: {proj} -> {target})")
    absent = expected_hf_keys(n_enc, n_dec) - set(out)
    if absent:
        raise ModelError(f"conversion left Hugging Face parameters unset: {sorted(absent)}")
    return out


def hf_to_ct2(state_dict: Mapping[str, "torch.Tensor"], *, num_heads: int | None = None,
              dtype: np.dtype | type = np.float32) -> tuple[dict[str, np.ndarray], dict[str, str]]:
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
        raise ModelError(f"state dict is not a WhisperForConditionalGeneration: missing {missing or 'none'}; "
                         f"unexpected {unexpected or 'none'}")
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
    flags = {"decoder/activation": np.int8(3), "decoder/alibi": np.int8(0),
             "decoder/alignment_heads": np.int16(1), "decoder/alignment_layer": np.int16(-1),
             "decoder/pre_norm": np.int8(1), "decoder/scale_embeddings": np.int8(0),
             "decoder/start_from_zero_embedding": np.int8(0)}
    if heads:
        flags |= {"decoder/num_heads": np.int16(heads), "encoder/num_heads": np.int16(heads)}
    variables |= {k: np.asarray(v) for k, v in flags.items()}
    return dict(sorted(variables.items())), {TIED_ALIAS[0]: TIED_ALIAS[1]}


def whisper_config_from_ct2(variables: Mapping[str, np.ndarray], *, num_heads: int | None = None,
                            **overrides: Any) -> "WhisperConfig":
    """Infer a ``WhisperConfig`` from CT2 shapes; ``overrides`` (e.g. special token ids) are passed through.

    Heads come from ``num_heads``, else the file's ``encoder/num_heads``, else :data:`HEADS_BY_D_MODEL`.
    """
    from transformers import WhisperConfig

    needed = ["encoder/conv1/weight", "encoder/layer_0/ffn/linear_0/weight", "decoder/layer_0/ffn/linear_0/weight",
              "decoder/embeddings/weight", "encoder/position_encodings/encodings",
              "decoder/position_encodings/encodings"]
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
        raise ModelError(f"cannot determine attention heads for d_model {d_model}: pass num_heads "
                         f"(a divisor of d_model; known widths: {HEADS_BY_D_MODEL})")
    vocab = int(variables["decoder/embeddings/weight"].shape[0])
    fields: dict[str, Any] = dict(
        vocab_size=vocab, num_mel_bins=int(n_mels), d_model=int(d_model),
        encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True, dtype="float32",
    )
    if "pad_token_id" not in overrides and 50256 >= vocab:
        raise ModelError(f"vocabulary of {vocab} tokens: pass pad/bos/eos/decoder_start token ids explicitly")
    fields.update(overrides)
    return WhisperConfig(**fields)
