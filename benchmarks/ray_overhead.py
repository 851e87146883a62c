"""The Ray executor's (and the process pool's) overhead per episode against the local executor, on the same episodes.

Runs the same benchmark episodes (default: ``static`` and ``random`` at seed 0 on the ``debug`` preset,
2 decisions, one torch thread) with ``--executor local``, ``--executor pool --workers 1`` (a fresh spawned
process per episode) and ``--executor ray`` (a local loopback cluster started by the run, one task at a time
so the two torch processes never compete for the 2 cores), each
into a fresh directory, after one excluded warm-up of each (synthesis and feature caches, imports). The
order rotates per repetition. Prints wall seconds per executor, the cluster's start+stop time on its
own, the overhead per episode ((ray - local) / episodes, with and without the cluster start), and checks
that both executors gave the same numbers.

    flock /tmp/sttrl-cpu.lock .venv/bin/python benchmarks/ray_overhead.py
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, markdown_table, report

KEYS = ("hidden_wer", "hidden_cer", "curve", "final_sha256", "train_steps")


def main() -> int:
    p = base_parser("ray_overhead", __doc__, threads=False)
    p.add_argument("--reps", type=int, default=2, help="measured repetitions per executor (default: 2)")
    p.add_argument("--controllers", default="static,random", help="episodes per run (default: static,random)")
    args = p.parse_args()
    from bench import run_bench
    from bench.cluster import ray_cluster
    from sttrl.config import load_config

    work = Path(tempfile.mkdtemp(prefix="sttrl-rayovh-"))
    cfg = load_config(
        "debug",
        overrides=[
            f"data.cache_dir={work / 'cache'}",
            f"run.out_dir={work / 'runs'}",
            "env.max_actions=2",
            "run.threads=1",
        ],
    )
    controllers = [c for c in args.controllers.split(",") if c]
    n = len(controllers)
    kw = {
        "local": {},
        "pool": {"executor": "pool", "workers": 1},
        "ray": {"executor": "ray", "ray_num_cpus": 2, "cpus_per_episode": 2},
    }
    names = list(kw)

    def once(name: str, tag: str) -> tuple[float, dict]:
        t0 = time.perf_counter()
        doc = run_bench(cfg, controllers, [0], work / f"{name}-{tag}", quiet=True, **kw[name])
        return time.perf_counter() - t0, doc

    try:
        docs = {name: once(name, "warmup")[1] for name in names}
        rows_of = {name: [[r.get(k) for k in KEYS] for r in d["runs"]] for name, d in docs.items()}
        same = all(
            rows_of[x] == rows_of["local"] and all(r["status"] == "finished" for r in docs[x]["runs"])
            for x in ("pool", "ray")
        )
        times: dict[str, list[float]] = {"local": [], "pool": [], "ray": [], "cluster": []}
        for rep in range(args.reps):
            for name in names[rep % 3 :] + names[: rep % 3]:
                times[name].append(once(name, f"r{rep}")[0])
            t0 = time.perf_counter()
            with ray_cluster(None, 2, None):
                pass
            times["cluster"].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_ep = (med["ray"] - med["local"]) / n
    per_ep_no_start = (med["ray"] - med["cluster"] - med["local"]) / n
    pool_per_ep = (med["pool"] - med["local"]) / n
    rows = [
        ["local", n, f"{med['local']:.1f}", f"{med['local'] / n:.1f}", "-"],
        ["pool (1 worker)", n, f"{med['pool']:.1f}", f"{med['pool'] / n:.1f}", f"{pool_per_ep:+.1f} s/episode"],
        [
            "ray",
            n,
            f"{med['ray']:.1f}",
            f"{med['ray'] / n:.1f}",
            f"{per_ep:+.1f} s/episode ({per_ep_no_start:+.1f} without the cluster's {med['cluster']:.1f} s start+stop)",
        ],
    ]
    table = markdown_table(("executor", "episodes", "wall s (median)", "s/episode", "overhead vs local"), rows)
    table += f"\n\nsame numbers on all executors: {'yes' if same else 'NO'}; repetitions {args.reps}, times {times}"
    report(
        "ray_overhead",
        args,
        {
            "times": times,
            "median": med,
            "episodes": n,
            "overhead_per_episode_s": per_ep,
            "pool_overhead_per_episode_s": pool_per_ep,
            "overhead_per_episode_without_cluster_start_s": per_ep_no_start,
            "same_numbers": same,
        },
        table,
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
