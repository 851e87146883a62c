"""What ``run.sink`` and ``run.sink_options`` may hold: no secrets in the config (checked when it loads)."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

_SECRET_KEY = re.compile(
    r"(^key$|secret|token|passw|credential|access_key|api_key|apikey|private|sas|signature|auth)", re.IGNORECASE
)
_SIGNED_QUERY = re.compile(r"(signature|sig|token|credential|key)", re.IGNORECASE)


def _secret_keys(options: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(options, dict):
        for k, v in options.items():
            name = f"{path}.{k}" if path else str(k)
            if _SECRET_KEY.search(str(k)):
                found.append(name)
            found += _secret_keys(v, name)
    return found


def check_sink_settings(url: str | None, options: dict[str, Any]) -> None:
    """Reject a sink URL or options that would put a secret into the config (raises ValueError naming the field)."""
    bad = _secret_keys(options)
    if bad:
        raise ValueError(
            f"run.sink_options must not hold secrets ({', '.join(bad)}): set credentials in the environment "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS…)"
        )
    if not url:
        return
    if url.startswith("env:"):
        if not re.fullmatch(r"env:[A-Za-z_][A-Za-z0-9_]*", url):
            raise ValueError(f"run.sink {url!r}: env: must name an environment variable, e.g. env:STTRL_SINK_URL")
        return
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or "://" not in url:
        raise ValueError(
            f"run.sink {url!r} is not a URL: use s3://bucket/prefix, gs://…, file:///dir, memory://prefix "
            "or https://… (pre-signed PUT)"
        )
    if parts.password or (parts.username and parts.scheme not in ("file", "memory")):
        raise ValueError("run.sink must not carry credentials in the URL (user:secret@): use the environment")
    if parts.query and any(_SIGNED_QUERY.search(k) for k, _ in urllib.parse.parse_qsl(parts.query)):
        raise ValueError(
            "run.sink is a signed URL: put it in an environment variable and set run.sink=env:STTRL_SINK_URL"
        )
