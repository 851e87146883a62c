"""Run a module as ``__main__`` with wall-clock timers around sttrl's and the graph's costly calls.

    python benchmarks/_instrument.py TIMINGS.json -m sttrl.run --preset cpu ...

Used by ``orchestration.py``; changes nothing but adds a timer around each listed function (a few
microseconds per call). At exit it writes every timed call as ``[name, start, end, depth, thread]``
(seconds since this wrapper started; ``depth`` counts enclosing timed calls in the same context: a
context variable, so a call that sttrl hands to its torch thread, which runs it in a copy of the
caller's context, still counts as nested in the call that handed it over) plus
the total time. Functions are wrapped where they are defined and in every loaded module that
imported them by name.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import importlib
import json
import os
import runpy
import sys
import threading
import time
from typing import Any

T0 = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
WALL0 = time.time()
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("sttrl_bench_depth", default=0)
_lock = threading.Lock()
EVENTS: list[list[Any]] = []

# (module, qualified name, label). Labels: setup.* / tool.* / core.* (inside tools) / final.* / judge / orch.*
STTRL_TARGETS = [
    ("sttrl.data.dataset", "build_speech_data", "setup.data"),
    ("sttrl.env.runtime", "EpisodeRuntime.__init__", "setup.runtime"),
    ("sttrl.env.runtime", "EpisodeRuntime.probe_loss", "setup.probe_loss"),
    ("sttrl.env.runtime", "EpisodeRuntime.train_block", "tool.train"),
    ("sttrl.env.runtime", "EpisodeRuntime.evaluate", "tool.evaluate"),
    ("sttrl.env.runtime", "EpisodeRuntime.save_final", "final.save"),
    ("sttrl.judge.scoring", "judge", "judge"),
    ("sttrl.train.trainer", "Trainer.train_block", "core.train_loop"),
    ("sttrl.train.trainer", "Trainer.save_checkpoint", "core.save_checkpoint"),
    ("sttrl.train.trainer", "Trainer.load_checkpoint", "core.load_checkpoint"),
    ("sttrl.eval.decode", "evaluate", "core.evaluate"),
    ("sttrl.outward.trajectory", "Trajectory.append", "orch.trajectory"),
]
GRAPH_TARGETS = [
    ("graph.plot", "write_plot", "orch.plot"),
    ("langgraph.checkpoint.sqlite", "SqliteSaver.put", "orch.checkpointer"),
    ("langgraph.checkpoint.sqlite", "SqliteSaver.put_writes", "orch.checkpointer"),
    ("langgraph.checkpoint.sqlite", "SqliteSaver.get_tuple", "orch.checkpointer"),
]


def _wrap(label: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        depth = _depth.get()
        token = _depth.set(depth + 1)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            end = time.perf_counter()
            _depth.reset(token)
            with _lock:
                EVENTS.append([label, start - T0, end - T0, depth, threading.get_ident()])

    timed.__sttrl_bench_original__ = fn  # type: ignore[attr-defined]
    return timed


def _patch(module_name: str, qualname: str, label: str) -> bool:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    owner: Any = module
    parts = qualname.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part, None)
        if owner is None:
            return False
    original = getattr(owner, parts[-1], None)
    if original is None or hasattr(original, "__sttrl_bench_original__"):
        return False
    wrapped = _wrap(label, original)
    setattr(owner, parts[-1], wrapped)
    if owner is module:  # module-level function: also where it was imported by name
        for mod in list(sys.modules.values()):
            try:
                for name, value in list(vars(mod).items()):
                    if value is original:
                        setattr(mod, name, wrapped)
            except TypeError:
                continue
    return True


def _dump(path: str, patched: list[str], module: str) -> None:
    with _lock:
        events = sorted(EVENTS, key=lambda e: e[1])
    payload = {
        "module": module,
        "argv": sys.argv,
        "start_unix": WALL0,
        "total_s": time.perf_counter() - T0,
        "patched": patched,
        "events": events,
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit(__doc__)
    out, module, args = sys.argv[1], sys.argv[3], sys.argv[4:]
    targets = STTRL_TARGETS + (GRAPH_TARGETS if module.split(".")[0] in ("graph", "tools") else [])
    if module.split(".")[0] in ("graph", "tools"):
        importlib.import_module(module)  # import the graph first so its by-name imports get patched too
    patched = [f"{m}.{q}" for m, q, label in targets if _patch(m, q, label)]
    atexit.register(_dump, out, patched, module)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
