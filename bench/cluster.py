"""A Ray cluster for the benchmark: a loopback cluster started here, or an existing one across machines.

``ray_cluster()`` starts a cluster on 127.0.0.1 with a temp dir of its own (removed at shutdown) and without Ray
2.60's token auth (``RAY_AUTH_MODE=disabled`` unless the environment sets it): with token auth Ray writes
``~/.ray/auth_token`` and keeps the token in the process, so removing the file at shutdown made the next cluster
started by the same process hang waiting for its GCS (the PBT test followed by the Ray executor test in one pytest
run). The cost: while the cluster lives, other local processes of the machine could connect to it unauthenticated.
A token file Ray writes anyway is still removed, and the ``RAY_*`` variables Ray exports into the process are
restored at shutdown.

``ray_cluster(address)`` connects to an existing cluster (``ray start --head`` on one machine, ``ray start
--address`` on the others). The code travels with the job: the repository is Ray's ``working_dir`` (uploaded
once, unpacked on every node; run directories, caches and virtual environments are left out). What the runs
write must be on storage every node sees: :func:`check_shared` asks every alive node whether it sees a marker
file written here, and fails with one line naming the nodes that do not. Every node must also judge with the
driver's judge key (:func:`check_judge_key`): the hidden domain's sentences are salted by it, so a node with its own
key would score its runs on another hidden set, and their pairs would compare nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sttrl import extras
from sttrl.errors import ConfigError

AUTH_TOKEN = Path.home() / ".ray" / "auth_token"
REPO = Path(__file__).resolve().parents[1]
# never uploaded with the code: environments, caches, run directories, results and VCS data
UPLOAD_EXCLUDES = [
    ".venv",
    ".git",
    ".cache",
    ".pytest_cache",
    ".ruff_cache",
    "runs",
    "**/__pycache__",
    "benchmarks/results",
    "docs",
    "*.png",
    "site",
]


def _runtime_env(address: str | None) -> dict[str, Any]:
    """Where workers find the code: this checkout on PYTHONPATH (a loopback cluster), or the repository uploaded
    as Ray's working directory (a cluster across machines)."""
    if address:
        return {"working_dir": str(REPO), "excludes": UPLOAD_EXCLUDES}
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


@contextmanager
def ray_cluster(
    address: str | None = None, num_cpus: int | None = None, num_gpus: float | None = None
) -> Iterator[Any]:
    """``ray`` connected to ``address``, or to a local cluster started here on loopback (see the module docstring)."""
    ray = extras.load("ray", extra="ray", what="a Ray cluster")

    temp_dir = None if address else tempfile.mkdtemp(prefix="sttrl-ray-")
    had_token = AUTH_TOKEN.exists()
    ray_env = {k: v for k, v in os.environ.items() if k.startswith("RAY_")}
    if not address:  # a loopback cluster of this process only: no token (see the module docstring)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    common = {"include_dashboard": False, "log_to_driver": False, "runtime_env": _runtime_env(address)}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, _temp_dir=temp_dir, _node_ip_address="127.0.0.1", **common)
        yield ray
    finally:
        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        if not had_token and AUTH_TOKEN.exists():
            AUTH_TOKEN.unlink()
        # ray.init exports settings such as RAY_AUTH_MODE=token into this process; left behind, a later cluster
        # started here would wait for the token file just removed (its GCS never starts): restore them
        for k in [k for k in os.environ if k.startswith("RAY_") and k not in ray_env]:
            del os.environ[k]
        os.environ.update(ray_env)


def _sees(marker: str) -> tuple[str, bool]:
    """On a worker: this node's id and whether it sees ``marker``."""
    import ray  # runs inside a Ray worker, where ray is installed

    return ray.get_runtime_context().get_node_id(), Path(marker).is_file()


def check_shared(ray: Any, dirs: Sequence[Path], timeout_s: float = 120.0) -> None:
    """Fail with one line unless every alive node of the cluster sees each of ``dirs`` (the benchmark directory,
    the data cache): a marker file is written here and looked for by one task pinned to each node (a node whose
    task fails or does not answer within ``timeout_s`` counts as not seeing it)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # the ray extra, as above

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    probe = ray.remote(num_cpus=0, max_retries=0)(_sees)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        marker = d / f".sttrl-shared-{uuid.uuid4().hex[:8]}"
        marker.write_text("written by the benchmark's driver; every node must see it\n")
        try:
            refs = {
                probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(str(marker)): n
                for n in nodes
            }
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
            seen = set()
            for ref in ready:
                with suppress(Exception):  # a task that could not run there: that node does not count as seeing
                    node, ok = ray.get(ref)
                    if ok:
                        seen.add(refs[ref])
        finally:
            with suppress(OSError):
                marker.unlink()
        blind = [n[:12] for n in nodes if n not in seen]
        if blind:
            raise ConfigError(
                f"{len(blind)} of {len(nodes)} Ray nodes ({', '.join(blind)}) do not see {d}: put --out and "
                "data.cache_dir on storage every node mounts at the same path"
            )


def _fingerprint() -> tuple[str, str | None]:
    """On a worker: this node's id and its judge key's fingerprint (None when it has no usable key)."""
    import ray  # runs inside a Ray worker, where ray is installed

    from sttrl.keys import key_fingerprint  # on the worker, under that node's environment

    try:
        return ray.get_runtime_context().get_node_id(), key_fingerprint()
    except Exception:  # noqa: BLE001 - a node without a usable key is reported as such, never a crash here
        return ray.get_runtime_context().get_node_id(), None


def judge_key_mismatch(mine: str, answers: dict[str, str | None], nodes: Sequence[str]) -> str | None:
    """The one line that names the nodes whose judge key is not ``mine`` (or that did not answer), else None."""
    off = [n for n in nodes if answers.get(n) != mine]
    if not off:
        return None
    told = ", ".join(f"{n[:12]} ({answers[n] if answers.get(n) else 'no answer or no key'})" for n in off)
    return (
        f"{len(off)} of {len(nodes)} Ray nodes judge with another key than this machine's {mine}: {told}; set the "
        "same STTRL_JUDGE_KEY on every node before `ray start` (or copy $STTRL_HOME/judge.key), or their runs are "
        "scored on another hidden domain"
    )


def check_judge_key(ray: Any, timeout_s: float = 120.0) -> None:
    """Fail with one line unless every alive node's judge key has this machine's fingerprint (only fingerprints
    travel; the key itself never leaves a node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # the ray extra, as above

    from sttrl.keys import key_fingerprint  # the driver's key, resolved here at the entry point

    mine = key_fingerprint()
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    probe = ray.remote(num_cpus=0, max_retries=0)(_fingerprint)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote() for n in nodes]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    answers: dict[str, str | None] = {}
    for ref in ready:
        with suppress(Exception):  # a task that could not run there: that node gave no answer
            node, fp = ray.get(ref)
            answers[node] = fp
    line = judge_key_mismatch(mine, answers, nodes)
    if line:
        raise ConfigError(line)
