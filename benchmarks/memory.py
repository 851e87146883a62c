"""Peak resident memory of one episode run as a subprocess.

The command (a parameter) runs to its end while its process tree is sampled with psutil; afterwards
the kernel's ``ru_maxrss`` of that child (``os.wait4``; ``resource.getrusage(RUSAGE_CHILDREN)`` gives the
same for all runs together) is its peak RSS.
Both are reported: the kernel peak of the episode process (the figure the target applies to) and the
sampled peak of the whole tree (the episode plus any helpers it starts, e.g. espeak-ng while
synthesizing an uncached corpus).

Default command: ``{python} -m sttrl.run --preset {preset} --quiet --no-judge --run-dir {run_dir}``.
``--graph`` uses ``{python} -m graph.run --preset {preset} --quiet --run-dir {run_dir}
--checkpointer {work}/checkpoints.sqlite`` (judge included); ``--command`` takes any command line
with the placeholders ``{python}`` (this interpreter), ``{preset}``, ``{run_dir}`` (a fresh
directory per repetition) and ``{work}`` (its parent). Commands run in the repository root, so the
data and model caches (``.cache/sttrl``) are shared with other runs: build them first (any earlier
run does) or the first repetition also measures synthesis.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

NAME = "memory"
STTRL_CMD = "{python} -m sttrl.run --preset {preset} --quiet --no-judge --run-dir {run_dir}"
GRAPH_CMD = (
    "{python} -m graph.run --preset {preset} --quiet --run-dir {run_dir} --checkpointer {work}/checkpoints.sqlite"
)
TARGET_GB = 2.0


def parse_args(argv: list[str] | None = None):
    p = common.base_parser(NAME, __doc__, threads=False)
    p.add_argument(
        "--preset", default=None, help="preset for the {preset} placeholder (default cpu; debug with --quick)"
    )
    p.add_argument("--command", default=None, help=f"command line to measure (default: {STTRL_CMD!r})")
    p.add_argument("--graph", action="store_true", help=f"measure the LangGraph episode: {GRAPH_CMD!r}")
    p.add_argument("--reps", type=int, default=1, help="episodes to run, one after another (default 1)")
    p.add_argument("--interval", type=float, default=0.1, help="psutil sampling interval in seconds (default 0.1)")
    p.add_argument("--keep", action="store_true", help="keep the run directories")
    return p.parse_args(argv)


class TreeSampler(threading.Thread):
    """Samples the RSS of a process and its descendants until stopped."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_tree = 0
        self.peak_main = 0
        self.samples: list[tuple[float, int, int]] = []  # (t, main rss, tree rss)

    def run(self) -> None:
        import psutil

        t0 = time.perf_counter()
        while not self.stop_event.is_set():
            try:
                main = self.proc.memory_info().rss
                tree = main
                for child in self.proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):  # a child that ended meanwhile
                        tree += child.memory_info().rss
            except psutil.Error:
                break
            self.peak_main = max(self.peak_main, main)
            self.peak_tree = max(self.peak_tree, tree)
            self.samples.append((round(time.perf_counter() - t0, 2), main, tree))
            self.stop_event.wait(self.interval)


def run_once(command: str, preset: str, interval: float, keep: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sttrl-bench-mem-"))
    run_dir = work / "run"
    cmd = command.format(
        python=shlex.quote(sys.executable),
        preset=preset,
        run_dir=shlex.quote(str(run_dir)),
        work=shlex.quote(str(work)),
    )
    print(f"  $ {cmd}")
    log = work / "output.log"
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            shlex.split(cmd),
            cwd=common.REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (its waited descendants included)
        rc = proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop_event.set()
        sampler.join()
    wall = time.perf_counter() - t0
    maxrss_kb = usage.ru_maxrss  # KiB on Linux
    tail = log.read_text(errors="replace").splitlines()[-15:]
    out = {
        "command": cmd,
        "returncode": rc,
        "wall_s": wall,
        "kernel_peak_rss_gb": maxrss_kb * 1024 / 2**30,
        "children_maxrss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 2**30,
        "sampled_peak_main_gb": common.gb(sampler.peak_main),
        "sampled_peak_tree_gb": common.gb(sampler.peak_tree),
        "samples": len(sampler.samples),
        "timeline_gb": [
            (t, round(common.gb(m), 3), round(common.gb(tr), 3))
            for t, m, tr in sampler.samples[:: max(1, len(sampler.samples) // 200)]
        ],
        "output_tail": tail,
        "run_dir": str(run_dir) if keep else None,
    }
    if rc != 0:
        print(f"  command failed with exit code {rc}; last lines:\n    " + "\n    ".join(tail))
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = args.preset or ("debug" if args.quick else "cpu")
    command = args.command or (GRAPH_CMD if args.graph else STTRL_CMD)
    info = common.machine_info("cpu")
    print(f"{NAME}: preset {preset}, {common.describe_machine(info)}")
    runs = []
    for r in range(args.reps):
        res = run_once(command, preset, args.interval, args.keep)
        print(
            f"  run {r + 1}/{args.reps}: exit {res['returncode']}, {res['wall_s']:.1f} s, kernel peak RSS "
            f"{res['kernel_peak_rss_gb']:.3f} GB, sampled tree peak {res['sampled_peak_tree_gb']:.3f} GB"
        )
        runs.append(res)
    ok = [r for r in runs if r["returncode"] == 0]
    peak = max((r["kernel_peak_rss_gb"] for r in ok), default=float("nan"))
    tree = max((r["sampled_peak_tree_gb"] for r in ok), default=float("nan"))
    rows = [
        [
            r["command"].split(" -m ")[-1].split(" ")[0] if " -m " in r["command"] else r["command"][:40],
            r["returncode"],
            r["wall_s"],
            r["kernel_peak_rss_gb"],
            r["sampled_peak_tree_gb"],
            "yes" if r["kernel_peak_rss_gb"] <= TARGET_GB else "NO",
        ]
        for r in runs
    ]
    table = common.markdown_table(
        [
            "episode",
            "exit",
            "wall s",
            "peak RSS GB (kernel, episode process)",
            "peak RSS GB (sampled, process tree)",
            f"≤ {TARGET_GB} GB",
        ],
        rows,
    )
    table += (
        f"\n\n{'QUICK (noisy) — ' if args.quick else ''}preset {preset}; `{command}`; {common.describe_machine(info)}."
    )
    payload = {
        "machine": info,
        "preset": preset,
        "command": command,
        "target_gb": TARGET_GB,
        "peak_rss_gb": peak,
        "peak_tree_rss_gb": tree,
        "runs": runs,
    }
    common.report(NAME, args, payload, table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
