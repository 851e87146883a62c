"""The judge key, kept outside every run directory, and what it signs.

The judge key is ``$STTRL_JUDGE_KEY`` when set (share it to compare hidden scores across machines), else
the file ``$STTRL_HOME/judge.key`` (default ``~/.local/share/sttrl/judge.key``), created with mode 0600
on first use. It never enters a config, a run directory, a trajectory or graph state; only its
fingerprint (a hash) does. :func:`sign_record` / :func:`verify_record`: an HMAC-SHA256 over the run
record's integrity fields (run id, config, initial and final weight hashes, final file hashes, data
manifest), so editing ``run.json`` to match tampered weights is detected. :func:`derive` gives values only
the key holder can compute (the synthetic hidden sentences' salt, :mod:`sttrl.data.hidden`).

A base module: the run directory's writer (:mod:`sttrl.env.runtime`), the data layer and the judge use it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sttrl.errors import ConfigError, IntegrityError

KEY_ENV = "STTRL_JUDGE_KEY"
HOME_ENV = "STTRL_HOME"
KEY_FILE = "judge.key"
SIGNED_FIELDS = ("run_id", "created", "config", "model_source", "initial_weights_sha256", "data_manifest", "final")


def sttrl_home() -> Path:
    """``$STTRL_HOME`` or ``~/.local/share/sttrl``: the judge's own folder, outside every run directory."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".local" / "share" / "sttrl").expanduser()


def judge_key() -> bytes:
    """The judge key: ``$STTRL_JUDGE_KEY``, else ``sttrl_home()/judge.key`` (created 0600 on first use)."""
    env = os.environ.get(KEY_ENV)
    if env is not None:
        if len(env.strip()) < 16:
            raise ConfigError(f"{KEY_ENV} must hold at least 16 characters (e.g. the output of `openssl rand -hex 32`)")
        return env.strip().encode()
    path = sttrl_home() / KEY_FILE
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first
        except OSError as exc:
            raise ConfigError(
                f"cannot create the judge key {path}: {exc.strerror}; set {HOME_ENV} or {KEY_ENV}"
            ) from None
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the judge key {path}: {exc.strerror}; set {HOME_ENV} or {KEY_ENV}") from None
    if len(key) < 16:
        raise IntegrityError(f"judge key {path} is empty or truncated; delete it to create a new one")
    return key.encode()


def key_fingerprint() -> str:
    """16 hex characters that identify the key without revealing it."""
    return hashlib.sha256(b"sttrl-judge-key-fingerprint:" + judge_key()).hexdigest()[:16]


def derive(purpose: str) -> bytes:
    """A value only the key holder can compute, for ``purpose`` (e.g. the hidden sentences' seed)."""
    return hmac.new(judge_key(), purpose.encode(), hashlib.sha256).digest()


# ----- run records ---------------------------------------------------------------------------------
def _payload(record: Mapping[str, Any]) -> bytes:
    return json.dumps({k: record.get(k) for k in SIGNED_FIELDS}, sort_keys=True, default=str).encode()


def sign_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The ``signature`` entry of a run record: HMAC-SHA256 of its integrity fields with the judge key."""
    value = hmac.new(judge_key(), _payload(record), hashlib.sha256).hexdigest()
    return {"alg": "hmac-sha256", "key_fingerprint": key_fingerprint(), "fields": list(SIGNED_FIELDS), "value": value}


def verify_record(record: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether ``record['signature']`` matches its integrity fields under this machine's judge key."""
    sig = record.get("signature")
    if not isinstance(sig, dict) or "value" not in sig:
        return False, "the run record is not signed"
    if sig.get("key_fingerprint") != key_fingerprint():
        return False, (
            f"the run record was signed with key {sig.get('key_fingerprint')}, this judge holds "
            f"{key_fingerprint()} (share the key through {KEY_ENV})"
        )
    want = hmac.new(judge_key(), _payload(record), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, str(sig["value"])):
        return False, "the run record's integrity fields were changed after it was signed"
    return True, f"run record signed with judge key {sig['key_fingerprint']}"
