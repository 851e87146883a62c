"""What the judge trusts: a key kept outside every run directory, signed run records, recomputed rewards.

The judge key is ``$STTRL_JUDGE_KEY`` when set (share it to compare hidden scores across machines), else
the file ``$STTRL_HOME/judge.key`` (default ``~/.local/share/sttrl/judge.key``), created with mode 0600
on first use. It never enters a config, a run directory, a trajectory or graph state; only its
fingerprint (a hash) does.

- :func:`sign_record` / :func:`verify_record`: an HMAC-SHA256 over the run record's integrity fields
  (run id, config, initial and final weight hashes, final file hashes, data manifest), so editing
  ``run.json`` to match tampered weights is detected (the Gymnasium path, which has no checkpointer).
- :func:`expected_from_state`: the hashes and step records the LangGraph state holds; the judge
  compares the run directory with them (``judge(..., expected=...)``).
- :func:`check_trajectory`: every step's reward recomputed from the recorded WERs and statuses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, Mapping, Sequence

from sttrl.config import RewardConfig
from sttrl.errors import ConfigError, IntegrityError
from sttrl.io import sha256_file

KEY_ENV = "STTRL_JUDGE_KEY"
HOME_ENV = "STTRL_HOME"
KEY_FILE = "judge.key"
SIGNED_FIELDS = ("run_id", "created", "config", "model_source", "initial_weights_sha256", "data_manifest", "final")
FINAL_FILES = ("model.safetensors", "config.json", "generation_config.json")
REWARD_TOLERANCE = 1e-9


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
            raise ConfigError(f"cannot create the judge key {path}: {exc.strerror}; set {HOME_ENV} or {KEY_ENV}") from None
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
        return False, (f"the run record was signed with key {sig.get('key_fingerprint')}, this judge holds "
                       f"{key_fingerprint()} (share the key through {KEY_ENV})")
    want = hmac.new(judge_key(), _payload(record), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, str(sig["value"])):
        return False, "the run record's integrity fields were changed after it was signed"
    return True, f"run record signed with judge key {sig['key_fingerprint']}"


def final_file_hashes(final_dir: Path) -> dict[str, str]:
    """sha256 of the final model's weights, config and generation config (those present)."""
    return {name: sha256_file(final_dir / name) for name in FINAL_FILES if (final_dir / name).is_file()}


def expected_from_state(values: Mapping[str, Any]) -> dict[str, Any]:
    """What the judge compares the run directory with, from a LangGraph episode state's values."""
    final = values.get("final") or {}
    return {
        "final_sha256": final.get("sha256"),
        "final_files": final.get("files"),
        "checkpoints": [{"block": c["block"], "sha256": c["sha256"]} for c in values.get("checkpoints") or []],
        "records": list(values.get("records") or []),
    }


# ----- trajectories --------------------------------------------------------------------------------
def _close(a: Any, b: Any) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=0, abs_tol=REWARD_TOLERANCE)


def check_trajectory(
    records: Sequence[Mapping[str, Any]],
    start_wer: float,
    reward_cfg: RewardConfig,
    evals: Mapping[int, float] | None = None,
    expected_records: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[bool, str]:
    """Recompute every step's reward from the recorded WERs and statuses (sttrl.reward) and compare it with the
    record, the evaluation file of its block (``evals``: block -> WER) and the graph state's records."""
    from sttrl.reward import reward

    steps = [r.get("step") for r in records]
    if steps != list(range(1, len(records) + 1)):
        return False, f"steps are {steps}, expected 1..{len(records)} once each"
    previous = start_wer
    for r in records:
        step = r["step"]
        if r.get("action") == "stop":
            if r.get("reward") != 0.0:
                return False, f"step {step} (stop) has reward {r.get('reward')}, expected 0.0"
            continue
        ev = r.get("eval") or {}
        wer, status = ev.get("wer"), r.get("status")
        if not isinstance(wer, (int, float)):
            return False, f"step {step} holds no evaluated WER"
        if evals is not None and step in evals and not _close(evals[step], wer):
            return False, f"step {step}: WER {wer} differs from its evaluation file ({evals[step]})"
        try:
            want = reward(previous, wer, str(status), reward_cfg)
        except ValueError as exc:
            return False, f"step {step}: {exc}"
        if not _close(want, r.get("reward")):
            return False, f"step {step}: reward {r.get('reward')} but its WERs and status {status!r} give {want:.6f}"
        previous = wer
    if expected_records is not None:
        keys = ("step", "action", "status", "reward")
        mine = [tuple(r.get(k) for k in keys) for r in records]
        theirs = [tuple(r.get(k) for k in keys) for r in expected_records]
        if mine != theirs:
            diff = next((a, b) for a, b in zip(mine + [None] * len(theirs), theirs + [None] * len(mine)) if a != b)
            return False, f"trajectory differs from the graph state's records: {diff[0]} vs {diff[1]}"
    return True, f"{len(records)} steps; every reward recomputes from its WERs and status"
