"""Benchmark suites (``python -m bench --suite NAME``): a preset, controllers, test instances and
overrides chosen together, with the time they are expected to take printed before they start.

- ``smoke``: the debug preset with a small instance set (2 test instances, a 16-sample budget), five
  controllers on one instance; seconds; CI runs it.
- ``cpu``: ``bench-cpu`` on 2 CPU cores within 90 minutes: 3 test instances x static, rule, schedule, tpe, sha
  (random, already shown worse, pbt's Ray overhead and the oracle's full-budget grid per instance do not fit).
- ``full``: the configuration meant for a GPU machine: all 10 ``bench-cpu`` test instances, every controller
  (llm is skipped without a key), 128 validation utterances instead of 64, expected device time printed first.

Estimates are ``runs x seconds per episode x the controller's cost factor``. ``bench-cpu`` on 2 cores: 250 s,
from a measurement (2026-11-29, quiet machine, benchmarks/headroom.py): a rule episode of the 512-sample budget
took 216 s, of which 33.3 s judging the 306 hidden-dev utterances; a benchmark episode judges the ~585-utterance
test split instead (about 30 s more). On one GPU: 60 s, measured on an H200 (2026-11-29,
benchmarks/results/gpu-h200-bench-cpu.md: one static episode 60.5 s from process start, of which 47.2 s in the
run); there, ``--executor pool --workers 8`` ran 8 episodes in 77.4 s (6.3x the episodes per hour), which the
estimate (one run at a time) does not count. The factors count extra evaluations and training
(sha's rungs, pbt's population reports and Ray overhead, the oracle's grid, lookahead's probes). The
schedule controller is untuned unless ``--set bench.schedule_file=FILE`` (``python -m bench.tune_schedule``);
its tuning time is not in the estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sttrl.errors import ConfigError

# episode-equivalents; others 1. hybrid: sha plus the chat model's load and a few answers (SmolLM2 on 2 cores: a
# debug run's first answer took 103 s, the next 18 s, on a loaded machine); contextual: one start measurement
COST = {"sha": 1.3, "pbt": 2.0, "oracle": 3.0, "lookahead": 2.0, "hybrid": 1.8, "contextual": 1.1}
DEBUG_INSTANCES = (
    "env.instances={lr: [5e-4, 2e-3], batch_sizes: [2, 4], train_seeds: [0, 1], test_seeds: [1000, 1001]}",
    "env.budget_unit=samples",
    "env.samples_per_action=8",
    "env.max_actions=2",
    "run.threads=1",
)


@dataclass(frozen=True)
class Suite:
    name: str
    preset: str
    controllers: tuple[str, ...]  # empty: every registered controller but aliases
    instances: int
    overrides: tuple[str, ...]
    episode_seconds: float
    where: str

    def estimate_s(self, controllers: Sequence[str], instances: int) -> float:
        return instances * self.episode_seconds * sum(COST.get(c, 1.0) for c in controllers)

    def describe(self, controllers: Sequence[str], instances: int) -> str:
        s = self.estimate_s(controllers, instances)
        kind = "expected device time" if self.name == "full" else "estimated time"
        return (
            f"suite {self.name}: preset {self.preset}, {len(controllers)} controllers x {instances} test instances "
            f"= {len(controllers) * instances} runs ({', '.join(controllers)}); {kind} {s / 60:.0f} min on "
            f"{self.where} (assumed {self.episode_seconds:.0f} s per episode; see graph/bench/suites.py)"
        )


SUITES = {
    "smoke": Suite(
        "smoke", "debug", ("static", "rule", "schedule", "tpe", "sha"), 1, DEBUG_INSTANCES, 8.0, "2 CPU cores"
    ),
    "cpu": Suite("cpu", "bench-cpu", ("static", "rule", "schedule", "tpe", "sha"), 3, (), 250.0, "2 CPU cores"),
    # 128 validation utterances: half the measurement noise of bench-cpu's 64 (benchmarks/val_noise.py: SD 0.0145
    # vs 0.0287), cheap on a GPU; on 2 cores it would add ~68 s to a ~250 s episode
    "full": Suite("full", "bench-cpu", (), 10, ("train.max_eval_utterances=128",), 60.0, "one GPU, one run at a time"),
}


def get_suite(name: str) -> Suite:
    """The suite ``name``; a one-line ConfigError lists the valid names."""
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; valid: {', '.join(sorted(SUITES))}")
    return SUITES[name]


def suite_controllers(suite: Suite) -> list[str]:
    """The suite's controllers; ``full``: every registered one but the ``optuna`` alias."""
    if suite.controllers:
        return list(suite.controllers)
    import bench.core  # noqa: F401 - registers every controller
    from sttrl.control import registry as registry

    return [c for c in registry.names() if c != "optuna"]
