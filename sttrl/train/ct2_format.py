"""CTranslate2 ``model.bin`` reader and writer (the Whisper name mapping is :mod:`sttrl.train.ct2_whisper`).

File layout (binary version 6, little-endian): u32 version; spec name; u32 spec revision; u32 variable
count; per variable: name, u8 rank, u32 dims[rank], u8 dtype id, u32 byte count, raw bytes; u32 alias
count; per alias: alias name, target name. A string is a u16 length (including the NUL) + UTF-8 + NUL.

Reader and writer need numpy only.
bfloat16 variables (dtype id 5) are kept as their raw bits in a ``uint16`` array: numpy has no bfloat16,
and CTranslate2 has no unsigned 16-bit type, so ``uint16`` means bfloat16 unambiguously and round-trips
exactly; :func:`bf16_to_float32` widens such an array.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sttrl.errors import ModelError
from sttrl.io import atomic_writer

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
            raise self.fail(
                f"truncated: {what} needs {n} bytes but only {len(self.data) - start} remain "
                f"(file size {len(self.data)})"
            )
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
        raw = self.data[start : start + n]
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
        raise r.fail(
            f"unsupported binary version {version} (this reader supports {SUPPORTED_BINARY_VERSION}); "
            "is this a CTranslate2 model.bin?",
            0,
        )
    spec_name = r.string("spec name")
    revision = r.unpack("<I", "spec revision")
    count = r.unpack("<I", "variable count")
    if count * 9 > len(data) - r.pos:  # 9 bytes: the smallest possible variable record
        raise r.fail(
            f"truncated or not a model.bin: claims {count} variables but only {len(data) - r.pos} bytes remain"
        )
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
            raise r.fail(
                f"variable {name!r} has unknown dtype id {type_id} (valid: "
                + ", ".join(f"{k} {v}" for k, v in DTYPE_NAMES.items())
                + ")",
                type_at,
            )
        dtype = DTYPES[type_id]
        nbytes = r.unpack("<I", f"byte count of {name!r}")
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise r.fail(
                f"variable {name!r} of shape {dims} and dtype {DTYPE_NAMES[type_id]} declares "
                f"{nbytes} bytes; its shape needs {expected}",
                at,
            )
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
            raise ModelError(
                f"variable {name!r} has dtype {arr.dtype}; valid: float32, int8, int16, int32, "
                "float16, uint16 (= bfloat16 bits), little-endian"
            )
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
