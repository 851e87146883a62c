"""The block cache: a training block is content-addressed by (parent checkpoint, hyperparameters, data cursor, seed,
optimizer steps, training context), so a rollout that asks for a block already trained from the same state gets the
recorded result, and the checkpoint where one is kept, instead of training it again.

Exact because episodes are reproducible: a block's numbers depend only on its starting checkpoint (weights,
optimizer, RNG, trainer state), its hyperparameters and the config that shapes training. The parent is identified
by :func:`state_hash` (the hashes its ``state.json`` records for the weights, optimizer and RNG files, plus global
step, data cursor and reference loss), the config by :func:`context_hash`. Evaluations are cached the same way, by
the evaluated weights' sha256 and the context.

Layout under the cache directory (``cache.dir``, default ``<data.cache_dir>/blocks``)::

    entries/<kk>/<key>.json       one per block: key, parent and child state, hp, steps, cursor, seed, the result
    checkpoints/<state>/          a kept checkpoint (the files of a block checkpoint), hard-linked where possible
    evals/<kk>/<sha>-<ctx>.json   the evaluation of a model's weights

Metrics are always kept; checkpoints only within ``cache.max_checkpoint_gb``, the least recently used removed first.
Every write is a temporary file or directory renamed into place, so processes that share the directory (benchmark
workers, server sessions) never see half an entry; a checkpoint removed while another process links it is a miss.
A hit whose checkpoint is gone is trained again from its parent (the nearest kept ancestor: a run directory always
keeps its latest block) by the runtime, which compares the new result with the recorded one (``stats.mismatches``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sttrl.env.fork import link_or_copy
from sttrl.errors import CheckpointError
from sttrl.io import atomic_write_json
from sttrl.train.blocks import BlockResult, Hyperparams
from sttrl.train.checkpoint import read_checkpoint_record

if TYPE_CHECKING:
    from sttrl.config import Config

SCHEMA = "sttrl.block/1"
STATE_FILE = "state.json"


def digest(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def state_hash(record: dict[str, Any]) -> str:
    """The identity of a training checkpoint from its ``state.json`` record: the files' hashes and the trainer state."""
    return digest({"files": record["hashes"], "trainer": record["trainer"]})


def context_hash(cfg: Config, device: str) -> str:
    """What shapes training and evaluation besides the checkpoint: the model, data and train sections, the seed,
    dtype, threads and device (paths, sinks and the other sections do not change a block's numbers)."""
    d = cfg.to_dict()
    data = {k: v for k, v in d["data"].items() if k not in ("cache_dir", "workers")}
    run = {k: d["run"][k] for k in ("seed", "dtype", "threads")}
    return digest({"model": d["model"], "data": data, "train": d["train"], "run": run, "device": device})


def block_key(parent: str, hp: dict[str, Any], cursor: int, seed: int, steps: int, context: str) -> str:
    """The address of a block: its parent state, hyperparameters, data cursor, seed, steps and context (the
    context includes the lr schedule's horizon, see :meth:`sttrl.env.runtime.EpisodeRuntime.cache_key`)."""
    return digest({"parent": parent, "hp": hp, "cursor": cursor, "seed": seed, "steps": steps, "context": context})


@dataclass
class Entry:
    """One recorded block: where it started (``parent``), where it ended (``child``) and its result."""

    key: str
    parent: str
    child: str
    hp: dict[str, Any]
    steps: int
    cursor: int
    seed: int
    result: dict[str, Any]
    created: float = field(default_factory=time.time)
    schema: str = SCHEMA


@dataclass
class CacheStats:
    """What this process asked of the cache (blocks and evaluations)."""

    hits: int = 0
    misses: int = 0
    checkpoint_hits: int = 0  # hits whose checkpoint was kept (no training at all)
    eval_hits: int = 0
    eval_misses: int = 0
    mismatches: int = 0  # a block trained again disagreed with its recorded result (the entry was replaced)


class BlockCache:
    """Recorded blocks, kept checkpoints and evaluations under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path, max_checkpoint_bytes: int) -> None:
        self.root = Path(root)
        self.max_checkpoint_bytes = int(max_checkpoint_bytes)
        self.stats = CacheStats()
        for sub in ("entries", "checkpoints", "evals"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(cls, cfg: Config) -> BlockCache | None:
        """The cache ``cfg.cache`` describes, or None when it is off."""
        c = cfg.cache
        if not c.enabled:
            return None
        root = c.dir if c.dir is not None else Path(cfg.data.cache_dir) / "blocks"
        return cls(Path(root).expanduser().resolve(), int(c.max_checkpoint_gb * 2**30))

    # ----- blocks ------------------------------------------------------------------------------
    def _entry_path(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / f"{key}.json"

    def get(self, key: str) -> Entry | None:
        """The recorded block ``key`` (counted as a hit or a miss)."""
        path = self._entry_path(key)
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return Entry(**data)

    def put(self, entry: Entry, checkpoint: Path | None) -> None:
        """Record ``entry`` (replacing an older record of the key) and keep ``checkpoint``, the block's end."""
        atomic_write_json(self._entry_path(entry.key), asdict(entry))
        if checkpoint is not None:
            self.keep(entry.child, checkpoint)

    def verify(self, entry: Entry, child: str, result: dict[str, Any]) -> bool:
        """Whether a block trained again ended where its record says (same child state and losses); a mismatch is
        counted and the record replaced by the new result."""
        same = child == entry.child and result.get("losses") == entry.result.get("losses")
        if not same:
            self.stats.mismatches += 1
        return same

    # ----- checkpoints -------------------------------------------------------------------------
    def _ckpt_dir(self, state: str) -> Path:
        return self.root / "checkpoints" / state

    def checkpoint(self, state: str) -> Path | None:
        """The kept checkpoint of ``state`` (marked as just used), or None."""
        path = self._ckpt_dir(state)
        if not (path / STATE_FILE).is_file():
            return None
        try:
            os.utime(path)
        except FileNotFoundError:  # evicted by another process just now
            return None
        return path

    def keep(self, state: str, src: Path) -> None:
        """Keep a copy (hard links where the filesystem allows) of checkpoint ``src`` as ``state``, then evict down to
        the size limit. Nothing is kept when the limit is 0 or the checkpoint alone exceeds it."""
        dst = self._ckpt_dir(state)
        size = dir_bytes(src)
        if size > self.max_checkpoint_bytes or (dst / STATE_FILE).is_file():
            return
        tmp = dst.with_name(f".{state}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for path in sorted(Path(src).iterdir()):
                if path.is_file():
                    link_or_copy(path, tmp / path.name)
            os.rename(tmp, dst)
        except OSError:  # another process kept the same state first
            shutil.rmtree(tmp, ignore_errors=True)
        self.evict()

    def evict(self) -> int:
        """Remove the least recently used checkpoints until the kept ones fit the limit; the bytes removed."""
        kept = []
        for path in (self.root / "checkpoints").iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                kept.append((path.stat().st_mtime, dir_bytes(path), path))
            except FileNotFoundError:
                continue
        total, removed = sum(size for _, size, _ in kept), 0
        for _, size, path in sorted(kept):
            if total <= self.max_checkpoint_bytes:
                break
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            removed += size
        return removed

    def checkpoint_bytes(self) -> int:
        """Bytes of the kept checkpoints."""
        return sum(dir_bytes(p) for p in (self.root / "checkpoints").iterdir() if p.is_dir())

    # ----- evaluations -------------------------------------------------------------------------
    def _eval_path(self, model_sha: str, context: str) -> Path:
        return self.root / "evals" / model_sha[:2] / f"{model_sha}-{context[:16]}.json"

    def get_eval(self, model_sha: str, context: str) -> dict[str, Any] | None:
        """The recorded evaluation of weights ``model_sha`` under ``context``, or None."""
        try:
            out = json.loads(self._eval_path(model_sha, context).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.stats.eval_misses += 1
            return None
        self.stats.eval_hits += 1
        return out

    def put_eval(self, model_sha: str, context: str, result: dict[str, Any]) -> None:
        atomic_write_json(self._eval_path(model_sha, context), result)


def starts_block(start: Path, block: int, hp: Hyperparams) -> bool:
    """Whether ``start`` is an intra-block checkpoint of ``block`` with ``hp`` (a cut-off block or a probe)."""
    if not (Path(start) / STATE_FILE).is_file():
        return False
    meta = read_checkpoint_record(Path(start))["meta"]
    return meta.get("block") == block and meta.get("hp") == hp.to_dict()


def restore_rng(checkpoint: Path, device: torch.device) -> None:
    """Set torch's RNG state (CPU, and CUDA on a CUDA device) to the one ``checkpoint`` recorded."""
    rng = torch.load(Path(checkpoint) / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


def dir_bytes(path: Path) -> int:
    """Bytes of the files directly in ``path`` (a checkpoint directory is flat)."""
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())


def materialize(src: Path, dest: Path, meta: dict[str, Any]) -> Path:
    """Write checkpoint ``dest`` from the kept checkpoint ``src``: its files hard-linked (copied when the filesystem
    refuses), a ``state.json`` with the same hashes and trainer state and this run's ``meta``; renamed into place."""
    record = read_checkpoint_record(src)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for path in sorted(Path(src).iterdir()):
        if path.is_file() and path.name != STATE_FILE:
            link_or_copy(path, tmp / path.name)
    atomic_write_json(tmp / STATE_FILE, {**record, "meta": meta})
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    return dest


# ----- the runtime's side ----------------------------------------------------------------------
@dataclass(frozen=True)
class Address:
    """A block's key and the parent it starts from (state hash and data cursor)."""

    key: str
    parent: str
    cursor: int


def hit_result(entry: Entry, seconds: float) -> BlockResult:
    """The recorded result, with the seconds this hit took and a note naming the entry (the samples/s stay the
    measured ones)."""
    r = dict(entry.result)
    r.update(seconds=seconds, note=f"{r.get('note', '')} [cached block {entry.key[:12]}]".strip())
    return BlockResult(**r)


class RunCache:
    """The block cache as one run directory uses it: blocks addressed from the run's checkpoints, hits written
    into the run as checkpoints, trained blocks and evaluations recorded."""

    def __init__(self, cache: BlockCache, cfg: Config, device: str, ckpt_dir: Path) -> None:
        self.cache = cache
        self.seed = cfg.run.seed
        self.context = context_hash(cfg, device)
        self.ckpt_dir = ckpt_dir

    @classmethod
    def for_run(cls, cfg: Config, device: str, ckpt_dir: Path) -> RunCache | None:
        cache = BlockCache.from_config(cfg)
        return cls(cache, cfg, device, ckpt_dir) if cache is not None else None

    def lookup(
        self, parent_dir: Path, hp: Hyperparams, steps: int, horizon: int | None, via: Path | None = None
    ) -> tuple[Address, Entry | None]:
        """The address of ``steps`` steps with ``hp`` from checkpoint ``parent_dir`` and its record, if any. ``via``:
        the probe checkpoint the block continues (such a block is addressed apart from one trained straight)."""
        record = read_checkpoint_record(parent_dir)
        parent = state_hash(record)
        extra = digest(
            {
                "context": self.context,
                "horizon": horizon,
                "via": state_hash(read_checkpoint_record(via)) if via else None,
            }
        )
        cursor = int(record["trainer"]["cursor"])
        addr = Address(block_key(parent, hp.to_dict(), cursor, self.seed, steps, extra), parent, cursor)
        return addr, self.cache.get(addr.key)

    def cached(
        self,
        parent_dir: Path,
        hp: Hyperparams,
        steps: int,
        horizon: int | None,
        dest: Path | None,
        meta: dict[str, Any],
        *,
        probe: bool = False,
        via: Path | None = None,
    ) -> tuple[BlockResult | None, Address, Entry | None]:
        """Look a block (or a lookahead probe) up and, on a hit, write its end state as checkpoint ``dest`` with
        ``meta`` (a probe that failed writes nothing: it rolled back). ``via``: see :meth:`lookup`. Returns the hit's
        result (None: train it), its address and its record (what :meth:`record` compares a retrained block with)."""
        addr, entry = self.lookup(parent_dir, hp, steps, horizon, via)
        if entry is None:
            return None, addr, None
        if probe and entry.result["status"] != "ok":
            return hit_result(entry, 0.0), addr, entry
        if dest is None:
            return None, addr, entry
        if probe:  # the probe's steps, which a block continuing it does not train again
            meta = {**meta, "losses": list(entry.result["losses"])}
        return self.restore(entry, parent_dir, dest, meta), addr, entry

    def restore(self, entry: Entry, parent_dir: Path, dest: Path, meta: dict[str, Any]) -> BlockResult | None:
        """Write a recorded block's end state as checkpoint ``dest`` (with ``meta`` and the result) and return the
        result; None when its checkpoint is gone (the caller trains it again from ``parent_dir``, the nearest kept
        ancestor, and :meth:`record` compares)."""
        t0 = time.perf_counter()
        src = parent_dir if entry.child == entry.parent else self.cache.checkpoint(entry.child)
        if src is None:
            return None
        res = hit_result(entry, 0.0)
        try:
            materialize(src, dest, {**meta, "result": res.to_dict()})
        except (OSError, CheckpointError):  # evicted by another process while linking: train it
            return None
        self.cache.stats.checkpoint_hits += 1
        res.seconds = time.perf_counter() - t0
        return res

    def record(
        self, addr: Address, hp: Hyperparams, steps: int, result: BlockResult, end: Path | None, expected: Entry | None
    ) -> Entry:
        """Record a block just trained from ``addr`` (``end``: its checkpoint; None after a probe that failed, which
        rolled back to the parent) and keep its checkpoint; ``expected``: the record it was trained again for."""
        child = state_hash(read_checkpoint_record(end)) if end is not None else addr.parent
        entry = Entry(addr.key, addr.parent, child, hp.to_dict(), steps, addr.cursor, self.seed, result.to_dict())
        if expected is not None:
            self.cache.verify(expected, child, entry.result)
        self.cache.put(entry, end if end is not None and child != addr.parent else None)
        return entry

    def evaluation(self, checkpoint: Path) -> dict[str, Any] | None:
        """The recorded evaluation of ``checkpoint``'s weights (by their sha256), or None."""
        return self.cache.get_eval(_weights_sha(checkpoint), self.context)

    def put_evaluation(self, checkpoint: Path, result: dict[str, Any]) -> None:
        self.cache.put_eval(_weights_sha(checkpoint), self.context, result)


def _weights_sha(checkpoint: Path) -> str:
    return str(read_checkpoint_record(checkpoint)["hashes"]["model.safetensors"])
