"""The disk and time cost of a fork (``python -m graph.run --fork``): runs a parent episode that keeps every block
(``env.keep_checkpoints=0``), then forks it after each of its steps (without training the forks) and once more
to the end, and prints per block checkpoint size, bytes a fork writes vs shares, seconds to create a fork,
and the fork's wall time to its end next to the parent's steps after the fork point.

    python benchmarks/fork_cost.py --preset cpu --max-actions 2 --cache DIR --out-dir DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sttrl.rundir import TRAJECTORY

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/fork_cost.py")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--max-actions", type=int, default=2)
    p.add_argument("--cache", required=True, help="data.cache_dir")
    p.add_argument("--out-dir", required=True, help="run.out_dir (a fresh folder)")
    a = p.parse_args()
    from graph.checkpointer import open_checkpointer
    from graph.fork import fork
    from graph.graph import GRAPH_NAME, build_graph
    from graph.run import main as run_main

    common = ["--set", f"data.cache_dir={a.cache}", "--set", f"run.out_dir={a.out_dir}", "--quiet"]
    t0 = time.perf_counter()
    assert (
        run_main(
            [
                "--preset",
                a.preset,
                "--agent",
                "static",
                "--max-actions",
                str(a.max_actions),
                "--set",
                "env.keep_checkpoints=0",
                *common,
                "--thread-id",
                "parent",
            ]
        )
        == 0
    )
    parent_s = time.perf_counter() - t0
    out = Path(a.out_dir)
    recs = [json.loads(x) for x in (out / "parent" / TRAJECTORY).read_text().splitlines()]
    blocks = sorted((out / "parent" / "checkpoints").glob("block-*"))
    sizes = {b.name: du(b) for b in blocks}
    rows = []
    with open_checkpointer(str(out / "checkpoints.sqlite")) as saver:
        compiled = build_graph().compile(checkpointer=saver, name=GRAPH_NAME)
        for step in range(a.max_actions):
            t = time.perf_counter()
            v = fork(compiled, "parent", step, f"probe-{step}")
            secs = time.perf_counter() - t
            d = Path(v["run_dir"])
            new = sum(f.stat().st_size for f in d.rglob("*") if f.is_file() and f.stat().st_nlink == 1)
            rows.append({"step": step, "fork_seconds": secs, "bytes_total": du(d), "bytes_new": new})
    step = a.max_actions - 1
    t = time.perf_counter()
    assert (
        run_main(
            ["--fork", "parent", "--at", str(step), "--action", recs[step]["action"], "--thread-id", "run", *common]
        )
        == 0
    )
    fork_run_s = time.perf_counter() - t
    parent_tail = sum(r["timings"]["step_seconds"] for r in recs[step:])
    print(f"\npreset {a.preset}: parent episode ({a.max_actions} steps + judge) {parent_s:.1f} s")
    for name, size in sizes.items():
        print(f"  checkpoint {name}: {size / 1e6:.1f} MB")
    for r in rows:
        print(
            f"  fork after step {r['step']}: created in {r['fork_seconds']:.2f} s, "
            f"run dir {r['bytes_total'] / 1e6:.1f} MB "
            f"of which {r['bytes_new'] / 1e3:.1f} kB new (the rest hard-linked)"
        )
    print(
        f"  fork after step {step} run to its end (rebuild runtime + {a.max_actions - step} block(s) + judge): "
        f"{fork_run_s:.1f} s; the parent's step(s) {step + 1}..{a.max_actions} took {parent_tail:.1f} s (train + eval)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
