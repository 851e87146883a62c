"""Deterministic, disjoint splits by hash of a stable utterance id, and the data manifest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sttrl.config import DataConfig
from sttrl.errors import DataError, IntegrityError
from sttrl.io import atomic_write_json, sha256_text

MANIFEST_FORMAT = "sttrl-data-manifest/1"
T = TypeVar("T")


def utterance_id(domain: str, text: str) -> str:
    """Stable id of a synthetic sentence: ``<domain>-<first 12 hex of sha256(text)>``."""
    return f"{domain}-{sha256_text(text)[:12]}"


def _unit(tag: str, uid: str) -> float:
    return int(hashlib.sha256(f"{tag}:{uid}".encode()).hexdigest()[:12], 16) / float(16**12)


def is_validation(uid: str, fraction: float) -> bool:
    """Whether ``uid`` falls in validation (a fixed hash of the id, so it never moves between runs)."""
    return _unit("sttrl-split", uid) < fraction


def hidden_part(uid: str, dev_fraction: float) -> str:
    """``dev`` or ``test``: the hidden domain's partition of ``uid`` (a fixed hash of the id, disjoint by
    construction)."""
    return "dev" if _unit("sttrl-hidden-dev", uid) < dev_fraction else "test"


def hash_order(items: Iterable[T], key: Any = None) -> list[T]:
    """Items ordered by a hash of their id (``key(item)``, default the item): a fixed, well-mixed order."""
    key = key or (lambda x: x)
    return sorted(items, key=lambda x: (_unit("sttrl-order", key(x)), key(x)))


def cap(items: Sequence[T], limit: int | None) -> list[T]:
    """The first ``limit`` items (all when ``limit`` is None); applied after :func:`hash_order`."""
    return list(items if limit is None else items[:limit])


def check_disjoint(splits: Mapping[str, Iterable[str]], what: str = "utterance ids") -> None:
    """Raise IntegrityError if any two splits share an element (ids, text hashes…)."""
    seen: dict[str, str] = {}
    for name, values in splits.items():
        for value in values:
            other = seen.setdefault(value, name)
            if other != name:
                raise IntegrityError(f"splits {other!r} and {name!r} share {what}: {value!r} (splits must be disjoint)")


def config_fingerprint(cfg: DataConfig, extra: Mapping[str, Any] | None = None) -> str:
    """sha256 of everything that decides the data's content (not workers, not where the cache lives)."""
    data = cfg.model_dump(mode="json", exclude={"workers", "cache_dir"})
    payload = json.dumps({"data": data, **(extra or {})}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_root(cfg: DataConfig) -> Path:
    """``data.cache_dir`` as an absolute path; a relative one is taken relative to the current working directory."""
    return Path(cfg.cache_dir).expanduser().resolve()


def manifest_path(cfg: DataConfig, fingerprint: str) -> Path:
    """``<cache_dir>/manifests/data-<fingerprint[:16]>.json``."""
    return cache_root(cfg) / "manifests" / f"data-{fingerprint[:16]}.json"


def write_manifest(
    path: Path, fingerprint: str, cfg: DataConfig, splits: Mapping[str, Any], extra: Mapping[str, Any]
) -> Path:
    """Write the manifest atomically. ``splits['hidden']`` must hold ids, hashes and dev/test parts only."""
    hidden = splits.get("hidden", {})
    for row in hidden.get("utterances") or []:
        if set(row) - {"id", "text_sha256", "part"}:
            raise DataError(
                f"manifest {path}: hidden rows may hold only 'id', 'text_sha256' and 'part', got {sorted(row)}"
            )
    body = {
        "format": MANIFEST_FORMAT,
        "fingerprint": fingerprint,
        "config": cfg.model_dump(mode="json", exclude={"workers", "cache_dir"}),
        **extra,
        "splits": dict(splits),
    }
    return atomic_write_json(path, body)


def read_manifest(path: Path) -> dict[str, Any]:
    """Load a manifest written by :func:`write_manifest`, checking its format."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"manifest {path} is missing or not valid JSON: {exc}") from exc
    if data.get("format") != MANIFEST_FORMAT:
        raise DataError(f"manifest {path}: field 'format' is {data.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    return data
