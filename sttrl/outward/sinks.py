"""Object-store sinks: one run's step records and artifacts uploaded to any fsspec URL or a pre-signed HTTP PUT URL.

Layout under the sink's prefix (a re-upload replaces, so uploads are idempotent)::

    <prefix>/<run_id>/steps/<step:06d>.json     one step record (sttrl.step/1)
    <prefix>/<run_id>/{trajectory.jsonl,judge.json,plot.png,config.yaml,run.json}
    <prefix>/<run_id>/meta.json                 episode metadata posted through the collect API

Credentials never come from the config: fsspec/boto read the environment (AWS_ACCESS_KEY_ID…), and a URL that
carries a signature is given as ``env:VAR``. :func:`redact` is the only form of a URL that is logged or stored.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from sttrl import extras
from sttrl.config import secret
from sttrl.config.sink_url import check_sink_settings  # noqa: F401 - part of this module's API
from sttrl.errors import ConfigError, SinkError
from sttrl.rundir import CONFIG_FILE, JUDGE_REPORT, PLOT, RUN_RECORD, TRAJECTORY

ARTIFACTS = (TRAJECTORY, JUDGE_REPORT, PLOT, CONFIG_FILE, RUN_RECORD)
FSSPEC_EXTRAS = {"s3": "s3fs", "s3a": "s3fs"}  # URL scheme -> the package of the sinks extra that serves it


def resolve_url(url: str) -> str:
    """``env:VAR`` -> the variable's value; any other URL as given."""
    if url.startswith("env:"):
        name = url[4:]
        value = secret(name)  # the environment, else .env
        if not value:
            raise ConfigError(f"run.sink={url}: the environment variable {name} is not set")
        return value
    return url


def redact(url: str) -> str:
    """A URL safe to log or store: no user info, no query string, ``env:VAR`` kept as is."""
    if url.startswith("env:"):
        return url
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    netloc = host + (f":{p.port}" if p.port else "")
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "", ""))


def step_key(run_id: str, step: int) -> str:
    return f"{run_id}/steps/{step:06d}.json"


def describe_error(exc: BaseException, url: str) -> str:
    """One line naming the sink (redacted) and what went wrong; never a credential."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return f"sink {redact(url)}: {text[:300]}"


def is_permanent(exc: BaseException) -> bool:
    """Errors a retry will not fix: bad credentials, access denied, a missing bucket."""
    if isinstance(exc, (PermissionError, FileNotFoundError, NotADirectoryError, ConfigError)):
        return True
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in (400, 401, 403, 404, 405, 413)
    text = str(exc)
    return any(
        s in text
        for s in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "NoSuchBucket", "InvalidClientTokenId")
    )


class Sink:
    """Put, get and list objects under one prefix. ``put`` replaces; keys are relative to the prefix."""

    def __init__(self, url: str, options: dict[str, Any] | None = None, timeout: float = 10.0) -> None:
        self.url = resolve_url(url)
        self.safe_url = redact(url)
        self.options = dict(options or {})
        self.timeout = timeout
        scheme = urllib.parse.urlsplit(self.url).scheme
        self.http = scheme in ("http", "https")
        if not self.http:
            import fsspec  # a dependency of datasets (core); its protocols' packages are the sinks extra

            if scheme in FSSPEC_EXTRAS:
                extras.require(FSSPEC_EXTRAS[scheme], extra="sinks", what=f"a {scheme}:// sink")
            try:
                self.fs, self.root = fsspec.core.url_to_fs(self.url, skip_instance_cache=True, **self.options)
            except (ImportError, ValueError) as exc:
                raise SinkError(describe_error(exc, url)) from None
            self.root = self.root.rstrip("/")
            protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
            self._local = "file" in protocols or "local" in protocols

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _http_url(self, key: str) -> str:
        if "{key}" in self.url:
            return self.url.replace("{key}", urllib.parse.quote(key))
        p = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit((p.scheme, p.netloc, p.path.rstrip("/") + "/" + key, p.query, ""))

    def put(self, key: str, data: bytes) -> None:
        if self.http:
            req = urllib.request.Request(
                self._http_url(key), data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}
            )
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
            return
        path = self._path(key)
        if self._local:
            parent = path.rsplit("/", 1)[0]
            self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{parent}/.{path.rsplit('/', 1)[-1]}.tmp"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)  # a reader never sees half a file
            return
        self.fs.pipe_file(path, data)

    def get(self, key: str) -> bytes:
        if self.http:
            with urllib.request.urlopen(self._http_url(key), timeout=self.timeout) as resp:
                return resp.read()
        return self.fs.cat_file(self._path(key))

    def exists(self, key: str) -> bool:
        if self.http:
            try:
                self.get(key)
                return True
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return False
                raise
        return self.fs.exists(self._path(key))

    def list(self, sub: str = "") -> list[str]:
        """Keys (relative to the prefix) of the objects directly under ``sub``; [] when there are none."""
        if self.http:
            raise SinkError(f"sink {self.safe_url}: an HTTP PUT sink cannot be listed; read it through its store")
        base = self._path(sub.strip("/")) if sub else self.root
        if hasattr(self.fs, "invalidate_cache"):
            self.fs.invalidate_cache(base)
        try:
            entries = self.fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        root = self.root.rstrip("/") + "/" if self.root else ""
        return sorted(str(e).rstrip("/")[len(root) :] for e in entries if str(e).startswith(root))

    def put_json(self, key: str, obj: Any) -> None:
        self.put(key, (json.dumps(obj, sort_keys=False) + "\n").encode("utf-8"))

    def check(self) -> None:
        """Fail fast with one clear line when the sink cannot be written (credentials, bucket)."""
        try:
            self.put(".sttrl-check", b"ok\n")
        except Exception as exc:  # noqa: BLE001 - turned into one line
            raise SinkError(describe_error(exc, self.url)) from None
