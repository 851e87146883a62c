"""Shared helpers of sttrl's benchmarks: argument parsing, timing, interleaved repetitions, statistics,
machine description, JSON output and markdown tables.

Every benchmark script prints its figures, writes them as JSON (default ``benchmarks/out/<name>.json``,
git-ignored) and prints a markdown table. Ratios are measured side by side in one process: the
contestants run in interleaved repetitions (the order rotates every repetition), warm-up runs are
excluded, and the reported figure is the median over repetitions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "benchmarks" / "out"

if str(REPO) not in sys.path:  # scripts run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))


# ----- command line -----------------------------------------------------------------------------
def base_parser(name: str, description: str, threads: bool = True) -> argparse.ArgumentParser:
    """A parser with the options every benchmark has: --quick, --out, --reps, --warmup, --threads."""
    p = argparse.ArgumentParser(
        prog=f"python benchmarks/{name}.py",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (debug preset, few repetitions): checks that the script runs, in about a minute",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"JSON result file (default: benchmarks/out/{name}.json, or {name}-quick.json with --quick)",
    )
    if threads:
        p.add_argument(
            "--threads",
            type=int,
            default=None,
            metavar="N",
            help="torch CPU threads (default: the preset's run.threads, else torch's default)",
        )
    return p


def out_path(args: argparse.Namespace, name: str) -> Path:
    if args.out is not None:
        return Path(args.out)
    return OUT_DIR / (f"{name}-quick.json" if getattr(args, "quick", False) else f"{name}.json")


# ----- machine ----------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: Any = None) -> dict[str, Any]:
    """CPU model, cores, memory, load, torch threads and versions, and the GPU's name when one is used."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dependency of sttrl
        pass
    with contextlib.suppress(OSError):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda_available"] = torch.cuda.is_available()
        dev = torch.device(device) if device is not None else None
        if torch.cuda.is_available() and (dev is None or dev.type == "cuda"):
            idx = dev.index if dev is not None and dev.index is not None else torch.cuda.current_device()
            props = torch.cuda.get_device_properties(idx)
            info["gpu"] = torch.cuda.get_device_name(idx)
            info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
            info["cuda"] = torch.version.cuda
    except ImportError:  # pragma: no cover
        pass
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def describe_machine(info: dict[str, Any]) -> str:
    parts = [
        f"{info.get('cpu', '?')}",
        f"{info.get('logical_cores', '?')} logical cores",
        f"torch {info.get('torch', '?')} with {info.get('torch_threads', '?')} threads",
    ]
    if info.get("gpu"):
        parts.append(f"GPU {info['gpu']} ({info.get('gpu_memory_gb', '?')} GB)")
    if "load_average_1m" in info:
        parts.append(f"load {info['load_average_1m']} at start")
    return ", ".join(parts)


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


# ----- timing -----------------------------------------------------------------------------------
def sync(device: Any = None) -> None:
    """Wait for queued GPU work so wall-clock timings are honest (no-op on CPU)."""
    try:
        import torch

        if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
            torch.cuda.synchronize()
    except ImportError:  # pragma: no cover
        pass


def timed(fn: Callable[[], Any], device: Any = None) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``, synchronizing the GPU before and after."""
    sync(device)
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - t0, result


def interleaved(
    contestants: dict[str, Callable[[], dict[str, float]]],
    reps: int,
    warmup: int = 1,
    log: Callable[[str], None] | None = print,
) -> dict[str, list[dict[str, float]]]:
    """Run each contestant ``warmup`` times (discarded), then ``reps`` rounds; in every round each
    contestant runs once, the order rotating from round to round so no one always goes first.
    Each call returns a dict of measurements; returns {name: [measurements per round]}."""
    names = list(contestants)
    for w in range(warmup):
        for name in names:
            m = contestants[name]()
            if log:
                log(f"  warm-up {w + 1}/{warmup} {name}: {fmt_measure(m)}")
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            m = contestants[name]()
            results[name].append(m)
            if log:
                log(f"  rep {r + 1}/{reps} {name}: {fmt_measure(m)}")
    return results


def fmt_measure(m: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())


# ----- statistics -------------------------------------------------------------------------------
def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max, quartiles and n of a list of numbers."""
    vals = sorted(float(v) for v in values)
    if not vals:
        return {"n": 0}
    q = statistics.quantiles(vals, n=4) if len(vals) >= 2 else [vals[0], vals[0], vals[0]]
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1], "q1": q[0], "q3": q[2], "n": len(vals)}


def column(rows: list[dict[str, float]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if key in r and r[key] is not None]


def paired_ratio(a: list[dict[str, float]], b: list[dict[str, float]], key: str) -> dict[str, float]:
    """Median over rounds of a[key] / b[key] (each round's pair ran back to back), with its spread."""
    ratios = [x[key] / y[key] for x, y in zip(a, b, strict=True) if y.get(key)]
    return summarize(ratios)


# ----- output -----------------------------------------------------------------------------------
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def report(name: str, args: argparse.Namespace, payload: dict[str, Any], table: str) -> Path:
    """Add the common header (benchmark, time, command line, quick flag), write the JSON, print the table."""
    full = {
        "benchmark": name,
        "quick": bool(getattr(args, "quick", False)),
        "noisy": bool(getattr(args, "quick", False)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv,
        **payload,
        "markdown": table,
    }
    path = write_json(out_path(args, name), full)
    print()
    print(table)
    print()
    print(f"wrote {path}")
    return path


def gb(nbytes: float) -> float:
    return nbytes / 2**30


def mb(nbytes: float) -> float:
    return nbytes / 2**20


# ----- sttrl objects ----------------------------------------------------------------------------
def add_preset_args(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    p.add_argument("--preset", default=None, help=f"sttrl preset (default: {default}; debug with --quick)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, e.g. train.batch_size=16 (repeatable)",
    )
    p.add_argument("--device", default=None, help="cpu | cuda (default: the config's run.device)")


def load_stack(
    args: argparse.Namespace, default_preset: str = "cpu", splits: Sequence[str] = ("train",)
) -> dict[str, Any]:
    """Config, data, model and feature stores of a preset, built as an episode builds them (no run dir)."""
    from sttrl.config import load_config
    from sttrl.data import build_speech_data
    from sttrl.train.device import resolve_device, seed_everything
    from sttrl.train.features import FeatureStore, feature_cache_dir
    from sttrl.train.model import load_model

    preset = args.preset or ("debug" if getattr(args, "quick", False) else default_preset)
    cfg = load_config(preset, None, list(getattr(args, "overrides", []) or []))
    threads = getattr(args, "threads", None) or cfg.run.threads
    set_threads(threads)
    seed_everything(cfg.run.seed)
    device = resolve_device(getattr(args, "device", None) or cfg.run.device)
    t0 = time.perf_counter()
    data = build_speech_data(cfg.data, progress=False)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    loaded = load_model(cfg.model, cfg.data.cache_dir, device, seed=cfg.run.seed, progress=False)
    t_model = time.perf_counter() - t0
    features = feature_cache_dir(cfg)  # the same disk-backed feature cache as an episode
    stores = {s: FeatureStore(loaded, data.split(s), cfg.model.max_target_tokens, features) for s in splits}
    return {
        "cfg": cfg,
        "preset": preset,
        "device": device,
        "data": data,
        "loaded": loaded,
        "stores": stores,
        "threads": threads,
        "setup_seconds": {"data": t_data, "model": t_model},
    }


def warm_features(store: Any, indices: Sequence[int] | None = None, chunk: int = 64) -> float:
    """Compute (and cache) the log-mel features of ``indices`` (default all); returns seconds."""
    idx = list(range(len(store))) if indices is None else sorted(set(indices))
    t0 = time.perf_counter()
    for s in range(0, len(idx), chunk):
        store.features(idx[s : s + chunk])
    return time.perf_counter() - t0


def disk_rollback(trainer: Any, directory: Path) -> Callable[[], None]:
    """Save ``trainer``'s model, optimizer, RNG and cursor to ``directory`` now and return a rollback that
    reloads them: what an episode does on a fault (it reloads the previous block's checkpoint from disk)."""
    trainer.save_checkpoint(Path(directory), {"benchmark": "rollback point"})
    return lambda: trainer.load_checkpoint(Path(directory))


def bare_step(model: Any, opt: Any, batch: Any, device: Any, autocast: bool, max_norm: float) -> Any:
    """One plain PyTorch training step (autocast forward, backward, clip, AdamW, zero grads): the bare loops'
    reference against sttrl's Trainer. Returns the loss tensor."""
    import torch

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = model(
            input_features=batch.input_features, decoder_input_ids=batch.decoder_input_ids, labels=batch.labels
        ).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss
