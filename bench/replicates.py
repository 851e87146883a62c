"""Replicates and common random numbers: which runs a benchmark plans, and the data-order seed of each.

With ``bench.replicates = R`` every controller runs ``R`` times on every instance. Replicate ``r`` of instance
``i`` trains with the data-order seed :func:`data_seed` ``(i, r)`` (``run.seed``: the order of training batches
and torch's generator), the same for every controller: the controllers of one (instance, replicate) see the same
batches in the same order as far as their decisions allow (common random numbers), so the noise of the data order
cancels in their paired difference. Replicate 0 keeps the instance's own seed, so a benchmark run with ``R = 1``
is the benchmark it was before replicates (same thread ids, same numbers) and can be extended with more.
The seeds are recorded in ``bench.json`` (``data_seeds``) and in every run's result (``replicate``, ``data_seed``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED_LIMIT = 2**31 - 1  # run.seed's upper bound


def data_seed(instance: int, replicate: int) -> int:
    """The data-order seed of replicate ``replicate`` of instance ``instance``: the instance's seed for replicate 0,
    else a seed drawn from ``SeedSequence([instance, replicate])`` (no two replicates share one)."""
    if replicate < 0:
        raise ValueError(f"replicate {replicate} < 0")
    if replicate == 0:
        return int(instance)
    return int(np.random.SeedSequence([int(instance), int(replicate)]).generate_state(1)[0]) % SEED_LIMIT


def thread_id(controller: str, seed: int, replicate: int = 0) -> str:
    """The run's name (its LangGraph thread id, its folder under ``runs/``): ``bench-<controller>-s<seed>``, with
    ``-r<replicate>`` from the second replicate on."""
    return f"bench-{controller}-s{seed}" + (f"-r{replicate}" if replicate else "")


@dataclass(frozen=True, order=True)
class Slot:
    """One (instance, replicate) of a benchmark: every controller runs once in it, on the same data-order seed."""

    seed: int  # the instance's seed with env.instances (the pairing key), else the run seed
    replicate: int = 0

    @property
    def data_seed(self) -> int:
        return data_seed(self.seed, self.replicate)

    def name(self, controller: str) -> str:
        return thread_id(controller, self.seed, self.replicate)


def plan(controllers: list[str], seeds: list[int], replicates: int) -> list[tuple[str, Slot]]:
    """Every run, replicate by replicate, then instance by instance, then controller by controller: an interrupted
    benchmark has whole (instance, replicate) slots, ready to pair."""
    return [(c, Slot(s, r)) for r in range(replicates) for s in seeds for c in controllers]


def seeds_table(seeds: list[int], replicates: int) -> dict[str, list[int]]:
    """``{instance: [data seed of replicate 0, 1, ...]}`` for bench.json."""
    return {str(s): [data_seed(s, r) for r in range(replicates)] for s in seeds}
