"""Real speech from the Hugging Face hub (or a local copy in the same layout), decoded to cached 16 kHz WAVs.

``afrivoice``: ``<domain>_swahili_<split>/manifest_N.jsonl`` + ``<domain>_swahili_<split>/audio/audio_N.tar.xz``
(members ``audio_N/<audio_filepath>``, joined on basename; audio is webm/Opus).
``columns``: a datasets-loadable repo whose audio/text/domain columns are named in the config.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tarfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from huggingface_hub import HfApi, hf_hub_download

from sttrl.config import DataConfig
from sttrl.data.audio import SAMPLE_RATE, decode_bytes, wav_duration, write_wav
from sttrl.data.progress import progress_bar
from sttrl.data.splits import cache_root, cap, hash_order
from sttrl.data.types import Utterance
from sttrl.errors import DataError
from sttrl.io import atomic_write_json, sha256_file

Role = Literal["train", "validation", "hidden"]
CACHE_VERSION = 2  # 2: archive identity in the key, missing rows by id
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _role_plan(cfg: DataConfig, role: Role) -> tuple[str, list[str], int | None]:
    """Hub split name, domains and cap for a role: train/validation from train domains, hidden from the hidden
    domain."""
    hub = cfg.hub
    if role == "train":
        return hub.train_split, list(cfg.train_domains), cfg.max_train_utterances
    if role == "validation":
        return hub.validation_split, list(cfg.train_domains), cfg.max_validation_utterances
    if role == "hidden":
        return hub.hidden_split, [cfg.hidden_domain], cfg.max_hidden_utterances
    raise DataError(f"unknown data role {role!r}; valid: train, validation, hidden")


def _cache_root(cfg: DataConfig) -> Path:
    hub = cfg.hub
    if hub.local_dir is not None:
        tag = "local-" + hashlib.sha256(str(Path(hub.local_dir).resolve()).encode()).hexdigest()[:12]
    else:
        tag = _SAFE.sub("_", hub.repo) + (f"@{_SAFE.sub('_', hub.revision)}" if hub.revision else "")
    return cache_root(cfg) / "hub" / f"{hub.layout}-{tag}"


def load_hub_split(cfg: DataConfig, role: Role, progress: bool = True, token: str | None = None) -> list[Utterance]:
    """Utterances of one role, decoded and cached, filtered to min/max_seconds, hash-ordered and capped.
    ``token`` is the HF token the entry point resolved (gated datasets need one).

    Manifest rows whose audio is missing from their archive are reported on every load (count and first ids,
    one line on stderr) and dropped, or raise a DataError with ``data.hub.strict``."""
    split, domains, limit = _role_plan(cfg, role)
    if cfg.hub.layout == "afrivoice":
        items, missing = _load_afrivoice(cfg, split, domains, progress, token)
        _report_missing(cfg, split, missing)
    else:
        items = _load_columns(cfg, split, domains, progress, token)
    kept = [u for u in items if cfg.min_seconds <= u.duration <= cfg.max_seconds]
    return cap(hash_order(kept, key=lambda u: u.uid), limit)


def _report_missing(cfg: DataConfig, split: str, missing: list[str]) -> None:
    if not missing:
        return
    where = str(cfg.hub.local_dir) if cfg.hub.local_dir is not None else f"hub dataset {cfg.hub.repo}"
    text = (
        f"{where} split {split!r}: {len(missing)} manifest row(s) have no audio in their archive, first: "
        f"{', '.join(missing[:5])}"
    )
    if cfg.hub.strict:
        raise DataError(f"{text} (data.hub.strict=true; set it to false to drop them)")
    print(f"warning: {text}; dropped (data.hub.strict=true makes this an error)", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- afrivoice layout


class _Files:
    """Lists and fetches files of the hub repo, or of ``hub.local_dir`` when set (no network)."""

    def __init__(self, cfg: DataConfig, token: str | None) -> None:
        self.cfg = cfg
        self.local = Path(cfg.hub.local_dir) if cfg.hub.local_dir is not None else None
        self.where = str(self.local) if self.local else f"hub dataset {cfg.hub.repo}"
        self._token = None if self.local else token

    def list(self) -> list[str]:
        if self.local is not None:
            if not self.local.is_dir():
                raise DataError(f"data.hub.local_dir {self.local} is not a directory")
            return sorted(p.relative_to(self.local).as_posix() for p in self.local.rglob("*") if p.is_file())
        try:
            return sorted(
                HfApi().list_repo_files(
                    self.cfg.hub.repo, repo_type="dataset", revision=self.cfg.hub.revision, token=self._token
                )
            )
        except Exception as exc:  # network, auth, gating: one clear line, token never printed
            hint = "" if self._token else " (no HF_TOKEN in the environment or .env; gated datasets need one)"
            raise DataError(f"cannot list files of {self.where}: {type(exc).__name__}: {exc}{hint}") from exc

    def fetch(self, relpath: str) -> Path:
        if self.local is not None:
            path = self.local / relpath
            if not path.is_file():
                raise DataError(f"{self.where}: missing file {relpath}")
            return path
        try:
            return Path(
                hf_hub_download(
                    self.cfg.hub.repo, relpath, repo_type="dataset", revision=self.cfg.hub.revision, token=self._token
                )
            )
        except Exception as exc:
            raise DataError(f"cannot download {relpath} from {self.where}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class _Shard:
    domain: str
    folder: str
    index: int
    manifest: str
    archive: str


def _find_shards(files: list[str], domains: Iterable[str], split: str, where: str, limit: int | None) -> list[_Shard]:
    shards: list[_Shard] = []
    present = set(files)
    for domain in domains:
        folder = f"{domain}_swahili_{split}"
        found = []
        for name in files:
            match = re.fullmatch(re.escape(folder) + r"/manifest_(\d+)\.jsonl", name)
            if match:
                n = int(match.group(1))
                archive = f"{folder}/audio/audio_{n}.tar.xz"
                if archive not in present:
                    raise DataError(f"{where}: {folder}/manifest_{n}.jsonl has no audio archive {archive}")
                found.append(_Shard(domain, folder, n, name, archive))
        if not found:
            folders = sorted({f.split("/", 1)[0] for f in files if "/" in f})
            raise DataError(
                f"{where}: no {folder}/manifest_N.jsonl (domain {domain!r}, split {split!r}); folders present: "
                f"{', '.join(folders[:20]) or 'none'}"
            )
        found.sort(key=lambda s: s.index)
        shards.extend(found[:limit] if limit else found)
    return shards


def _read_manifest(path: Path, label: str, text_field: str) -> list[dict[str, Any]]:
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{label}:{lineno}: not valid JSON: {exc}") from exc
        for field in ("audio_filepath", text_field):
            if field not in record:
                raise DataError(
                    f"{label}:{lineno}: missing field {field!r} (fields present: {', '.join(sorted(record))}); "
                    f"afrivoice manifests need 'audio_filepath' and the text field data.hub.text_column={text_field!r}"
                )
        records.append(record)
    return records


def _uid(domain: str, record: dict[str, Any]) -> str:
    key = str(record.get("key") or PurePosixPath(str(record["audio_filepath"])).stem)
    return f"{domain}-{_SAFE.sub('_', key)}"


def _speaker(record: dict[str, Any]) -> str:
    for field in ("speaker_id", "speaker", "client_id", "user_id"):
        if record.get(field):
            return str(record[field])
    return "unknown"


def _identity(path: Path) -> list[int]:
    """An archive's identity in the cache key: size and modification time (ns); a replaced file changes it."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _process_shard(cfg: DataConfig, files: _Files, shard: _Shard, root: Path) -> tuple[list[Utterance], list[str]]:
    """The shard's utterances and the ids of manifest rows whose audio is missing from the archive."""
    manifest_path = files.fetch(shard.manifest)
    manifest_hash = sha256_file(manifest_path)
    archive = files.fetch(shard.archive)
    archive_id = _identity(archive)
    out_dir = root / shard.folder
    window = [cfg.min_seconds, cfg.max_seconds, cfg.hub.text_column]
    marker = out_dir / f"shard_{shard.index}.json"
    key = (manifest_hash, archive_id, CACHE_VERSION, window)
    if marker.is_file():
        cached = json.loads(marker.read_text())
        if (cached.get("manifest_sha256"), cached.get("archive"), cached.get("version"), cached.get("window")) == key:
            return [Utterance.from_json(u) for u in cached["utterances"]], list(cached.get("missing_audio", []))
    label = f"{files.where}/{shard.manifest}"
    text_field = cfg.hub.text_column
    records = _read_manifest(manifest_path, label, text_field)
    by_name: dict[str, dict[str, Any]] = {}
    for record in records:
        duration = record.get("duration")
        if isinstance(duration, (int, float)) and not cfg.min_seconds <= duration <= cfg.max_seconds:
            continue
        if str(record[text_field]).strip():
            by_name[PurePosixPath(str(record["audio_filepath"])).name] = record
    utterances: list[Utterance] = []
    try:
        with tarfile.open(archive, mode="r:xz") as tar:
            for member in tar:
                record = by_name.pop(PurePosixPath(member.name).name, None) if member.isfile() else None
                if record is None:
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                uid = _uid(shard.domain, record)
                audio = decode_bytes(handle.read(), f"{files.where}/{shard.archive}:{member.name}")
                path = write_wav(out_dir / "audio" / f"{uid}.wav", audio)
                utterances.append(
                    Utterance(
                        uid,
                        str(record[text_field]).strip(),
                        shard.domain,
                        path,
                        audio.size / SAMPLE_RATE,
                        sha256_file(path),
                        _speaker(record),
                    )
                )
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{files.where}/{shard.archive}: not a readable .tar.xz archive: {exc}") from exc
    missing = sorted(_uid(shard.domain, record) for record in by_name.values())
    atomic_write_json(
        marker,
        {
            "version": CACHE_VERSION,
            "manifest_sha256": manifest_hash,
            "archive": archive_id,
            "window": window,
            "missing_audio": missing,
            "utterances": [u.to_json() for u in utterances],
        },
    )
    return utterances, missing


def _load_afrivoice(
    cfg: DataConfig, split: str, domains: list[str], progress: bool, token: str | None
) -> tuple[list[Utterance], list[str]]:
    files = _Files(cfg, token)
    shards = _find_shards(files.list(), domains, split, files.where, cfg.hub.max_shards_per_split)
    root = _cache_root(cfg)
    results: list[Utterance] = []
    missing: list[str] = []
    with (
        progress_bar(f"decoding {split} shards", total=len(shards), enabled=progress) as advance,
        ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool,
    ):
        for part, gone in pool.map(lambda s: _process_shard(cfg, files, s, root), shards):
            results.extend(part)
            missing.extend(gone)
            advance()
    if not results:
        raise DataError(f"{files.where}: split {split!r} of domains {domains} yielded no usable clips")
    return results, missing


# ---------------------------------------------------------------- columns layout


def _open_columns(cfg: DataConfig, split: str, token: str | None) -> Any:
    import datasets  # about 3 s to import (pyarrow): only the columns layout needs it, not the offline default

    hub = cfg.hub
    if hub.local_dir is None:
        try:
            return datasets.load_dataset(hub.repo, split=split, revision=hub.revision, token=token)
        except Exception as exc:
            raise DataError(
                f"cannot load split {split!r} of hub dataset {hub.repo}: {type(exc).__name__}: {exc}"
            ) from exc
    root = Path(hub.local_dir)
    if (root / split / "state.json").is_file():
        return datasets.load_from_disk(str(root / split))
    parquet = (
        sorted(root.glob(f"{split}.parquet"))
        + sorted(root.glob(f"{split}-*.parquet"))
        + sorted((root / split).glob("*.parquet"))
    )
    if not parquet:
        raise DataError(
            f"data.hub.local_dir {root}: no split {split!r} (expected {split}/ saved with save_to_disk, "
            f"{split}.parquet, {split}-*.parquet or {split}/*.parquet)"
        )
    return datasets.load_dataset(
        "parquet",
        data_files={split: [str(p) for p in parquet]},
        split=split,
        cache_dir=str(cache_root(cfg) / "hf-datasets"),
    )


def _load_columns(
    cfg: DataConfig, split: str, domains: list[str], progress: bool, token: str | None
) -> list[Utterance]:
    import datasets  # about 3 s to import (pyarrow): only the columns layout needs it, not the offline default

    hub = cfg.hub
    ds = _open_columns(cfg, split, token)
    where = str(hub.local_dir) if hub.local_dir is not None else f"hub dataset {hub.repo}"
    needed = {
        "data.hub.audio_column": hub.audio_column,
        "data.hub.text_column": hub.text_column,
        "data.hub.domain_column": hub.domain_column,
    }
    if hub.id_column:
        needed["data.hub.id_column"] = hub.id_column
    for field, column in needed.items():
        if column not in ds.column_names:
            raise DataError(
                f"{where} split {split!r}: no column {column!r} ({field}); "
                f"columns present: {', '.join(ds.column_names)}"
            )
    if isinstance(ds.features[hub.audio_column], datasets.Audio):
        ds = ds.cast_column(hub.audio_column, datasets.Audio(decode=False))
    wanted = set(domains)
    indices = [i for i, d in enumerate(ds[hub.domain_column]) if str(d) in wanted]
    root = _cache_root(cfg) / _SAFE.sub("_", split)
    out: list[Utterance] = []
    with progress_bar(f"decoding {split}", total=len(indices), enabled=progress) as advance:
        for i in indices:
            row = ds[i]
            out.append(_column_row(row, i, cfg, root, where, split))
            advance()
    if not out:
        raise DataError(f"{where} split {split!r}: no rows with {hub.domain_column} in {sorted(wanted)}")
    return out


def _column_row(row: dict[str, Any], index: int, cfg: DataConfig, root: Path, where: str, split: str) -> Utterance:
    hub = cfg.hub
    cell = row[hub.audio_column]
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if data is None and isinstance(cell, dict) and cell.get("path") and Path(cell["path"]).is_file():
        data = Path(cell["path"]).read_bytes()
    if not isinstance(data, (bytes, bytearray)):
        raise DataError(f"{where} split {split!r} row {index}: column {hub.audio_column!r} holds no audio bytes")
    domain = str(row[hub.domain_column])
    key = str(row[hub.id_column]) if hub.id_column else hashlib.sha256(bytes(data)).hexdigest()[:16]
    uid = f"{domain}-{_SAFE.sub('_', key)}"
    path = root / "audio" / f"{uid}.wav"
    if not path.is_file():
        write_wav(path, decode_bytes(bytes(data), f"{where}:{split}:{index}"))
    return Utterance(
        uid,
        str(row[hub.text_column]).strip(),
        domain,
        path,
        wav_duration(path),
        sha256_file(path),
        str(row.get("speaker_id") or "unknown"),
    )
