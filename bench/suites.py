"""Benchmark suites (``python -m bench --suite NAME``): a preset, controllers, test instances, replicates and
overrides chosen together, with the time they are expected to take (and, for a sized suite, the minimum detectable
effect it reaches) printed before they start.

- ``smoke``: the debug preset with a small instance set (2 test instances, a 16-sample budget), five
  controllers on one instance; seconds; CI runs it.
- ``cpu``: ``bench-cpu`` on 2 CPU cores within 90 minutes: 3 test instances x static, rule, schedule, tpe, sha
  (random, already shown worse, pbt's Ray overhead and the oracle's full-budget grid per instance do not fit).
- ``full``: the configuration meant for a GPU machine: all 10 ``bench-cpu`` test instances, every controller
  (llm is skipped without a key), 128 validation utterances instead of 64, expected device time printed first.
- ``decisive``: the suite that decides (issue 25): ``bench-cpu`` against ``schedule`` with static, rule, tpe, sha,
  pbt, lookahead, the local zero-shot LLM (``local:smollm2-135m``) and the controllers issue 27 adds (contextual,
  hybrid, learned) when they are registered. Its size (``DECISIVE_INSTANCES`` test instances x
  ``DECISIVE_REPLICATES`` replicates) and the paired SD it assumes (``DECISIVE_PAIRED_SD``) are set from the noise
  measurement (``benchmarks/noise.py``); ``--seeds N`` and ``--replicates R`` override them, and the MDE the size
  reaches is printed with the estimate. It draws from 200 test instances (seeds 1000-1199, disjoint from the
  train instances), so a run can be extended with more instances or replicates in the same directory. Run it
  with ``--executor pool --workers N``: every episode in a fresh process, N at once.

Estimates are ``runs x seconds per episode x the controller's cost factor``. ``bench-cpu`` on 2 cores: 250 s,
from a measurement (2026-11-29, quiet machine, benchmarks/headroom.py): a rule episode of the 512-sample budget
took 216 s, of which 33.3 s judging the 306 hidden-dev utterances; a benchmark episode judges the ~585-utterance
test split instead (about 30 s more). On one GPU: 60 s, measured on an H200 (2026-11-29,
benchmarks/results/gpu-h200-bench-cpu.md: one static episode 60.5 s from process start, of which 47.2 s in the
run); there, ``--executor pool --workers 8`` ran 8 episodes in 77.4 s (6.3x the episodes per hour), which the
estimate (one run at a time) does not count. The factors count extra evaluations and training
(sha's rungs, pbt's population reports and Ray overhead, the oracle's grid, lookahead's probes, the local LLM's
decisions). The schedule controller is untuned unless ``--set bench.schedule_file=FILE``
(``python -m bench.tune_schedule``); its tuning time is not in the estimate. The decisive suite sets the committed
tuned schedule, contextual and lookahead files itself (``DECISIVE_FILES``, when the files are there: a source
checkout); a ``--set`` of the same key wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.controllers import registered
from bench.stats import ALPHA, POWER, instances_needed, min_detectable, min_detectable_fixed
from sttrl.errors import ConfigError

# episode-equivalents (others 1): sha's rungs, pbt's reports and Ray, the oracle's grid, lookahead's probes, the
# local LLM's decisions (8 x ~6 s on 2 cores), hybrid: sha plus the chat model's load and a few answers (SmolLM2 on
# 2 cores: a debug run's first answer took 103 s, the next 18 s, on a loaded machine); contextual: one start
# measurement
COST = {"sha": 1.3, "pbt": 2.0, "oracle": 3.0, "lookahead": 2.0, "llm": 1.2, "hybrid": 1.8, "contextual": 1.1}
DEBUG_INSTANCES = (
    "env.instances={lr: [5e-4, 2e-3], batch_sizes: [2, 4], train_seeds: [0, 1], test_seeds: [1000, 1001]}",
    "env.budget_unit=samples",
    "env.samples_per_action=8",
    "env.max_actions=2",
    "run.threads=1",
)
# The decisive suite's size and the paired SD it assumes, from benchmarks/noise.py (train instances, hidden dev;
# benchmarks/results/noise-bench-cpu-h512-v64-i8.json, 2026-12-02): rule against the untuned schedule on 8 train
# instances of bench-cpu's regime (512 samples, 64 validation utterances), 2 of them with a second data-order seed.
# The paired SD is 0.104, almost all of it the effect varying between instances (SD 0.103; judge 0.013, chaos
# 0.0125): an MDE of 0.03 against schedule, Holm over the 9 contestants, 80 % power, takes 161 instances. (Before
# the measurement: 31 instances for an assumed 0.042.) The SD is of one pair of controllers on 8 instances (7 degrees
# of freedom: a relative standard error near 27 %); contestants against the tuned schedule may vary more or less.
DECISIVE_TARGET_MDE = 0.03
DECISIVE_PAIRED_SD = 0.104
DECISIVE_INSTANCES = 161
DECISIVE_REPLICATES = 1
# the paired difference's seed-to-seed SD on the same utterances (the same decisions, another data-order seed; noise.py
# var_within_observed, nothing subtracted): what the fixed-set reading (bench.stats.fixed_set) counts as noise when the
# suite runs replicates
DECISIVE_CHAOS_SD = 0.016
DECISIVE_POOL = 200  # test instances the suite may draw from: seeds 1000..1199
# The tuned files the decisive suite runs with unless --set names others, each tuned on train instances against hidden
# dev (schedule and contextual on 0-7: python -m bench.tune_contextual; lookahead on 0-3: python -m
# bench.tune_lookahead --ledger benchmarks/results/lookahead-tuning-bench-cpu.jsonl; docs/controllers.md).
RESULTS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
DECISIVE_FILES = {
    "bench.schedule_file": RESULTS_DIR / "schedule-tuned-bench-cpu-i8.json",
    "bench.contextual_file": RESULTS_DIR / "contextual-bench-cpu-i8.json",
    "bench.lookahead_file": RESULTS_DIR / "lookahead-tuned-bench-cpu-i4.json",
}
DECISIVE_CONTROLLERS = (
    "schedule",
    "static",
    "rule",
    "tpe",
    "sha",
    "pbt",
    "lookahead",
    "llm",
    "contextual",
    "hybrid",
    "learned",
)


@dataclass(frozen=True)
class Suite:
    """A prepared benchmark: its preset, controllers, size and overrides, and what it is expected to cost."""

    name: str
    preset: str
    controllers: tuple[str, ...]  # empty: every registered controller but aliases
    instances: int
    overrides: tuple[str, ...]
    episode_seconds: float
    where: str
    replicates: int = 1
    model: str | None = None  # the llm controller's model, unless --model says otherwise
    paired_sd: float | None = None  # the paired SD the size was chosen for: the MDE it reaches is printed
    chaos_sd: float | None = None  # the paired difference's training-chaos SD: the fixed-set MDE with replicates

    def estimate_s(self, controllers: Sequence[str], instances: int, replicates: int | None = None) -> float:
        reps = self.replicates if replicates is None else replicates
        return instances * reps * self.episode_seconds * sum(COST.get(c, 1.0) for c in controllers)

    def describe(self, controllers: Sequence[str], instances: int, replicates: int | None = None) -> str:
        """One line: the plan, the estimated time and, for a sized suite, the MDE its size reaches."""
        reps = self.replicates if replicates is None else replicates
        s = self.estimate_s(controllers, instances, reps)
        kind = "expected device time" if self.name == "full" else "estimated time"
        runs = len(controllers) * instances * reps
        text = (
            f"suite {self.name}: preset {self.preset}, {len(controllers)} controllers x {instances} test instances"
            f"{f' x {reps} replicates' if reps > 1 else ''} = {runs} runs ({', '.join(controllers)}); {kind} "
            f"{s / 60:.0f} min on {self.where} (assumed {self.episode_seconds:.0f} s per episode; see bench/suites.py)"
        )
        if self.paired_sd is not None:
            text += "; " + expected_mde(self.paired_sd, instances, max(1, len(controllers) - 1), reps)
        if self.chaos_sd is not None and reps > 1:
            mde = min_detectable_fixed(self.chaos_sd, instances, reps, ALPHA, POWER, max(1, len(controllers) - 1))
            text += (
                f"; on these {instances} instances only (the fixed-set reading, training chaos SD {self.chaos_sd:.4f} "
                f"the only noise): MDE {mde:.4f}"
            )
        return text


def tuned_files(cfg: Any) -> str:
    """One line: the tuned file each tuned controller runs with, or that it runs its untuned defaults."""
    b = cfg.bench
    parts = [
        f"{key}: {getattr(b, key) if getattr(b, key) is not None else 'none (untuned defaults)'}"
        for key in ("schedule_file", "contextual_file", "lookahead_file")
    ]
    return "tuned files: " + "; ".join(parts)


def expected_mde(paired_sd: float, instances: int, comparisons: int, replicates: int = 1) -> str:
    """The MDE ``instances`` reach for a paired SD measured with one replicate (replicates shrink only the
    training-chaos part of it; counted here as not shrinking at all, the safe side), and the instances the target
    MDE needs."""
    mde = min_detectable(paired_sd, instances, ALPHA, POWER, comparisons)
    need = instances_needed(paired_sd, DECISIVE_TARGET_MDE, ALPHA, POWER, comparisons)
    return (
        f"MDE {'-' if mde is None else format(mde, '.3f')} hidden WER at n={instances} for an assumed paired SD "
        f"{paired_sd:.3f} (alpha {ALPHA} Holm over {comparisons}, {POWER:.0%} power"
        f"{', replicates not counted' if replicates > 1 else ''}; MDE <= {DECISIVE_TARGET_MDE} needs n={need})"
    )


SUITES = {
    "smoke": Suite(
        "smoke", "debug", ("static", "rule", "schedule", "tpe", "sha"), 1, DEBUG_INSTANCES, 8.0, "2 CPU cores"
    ),
    "cpu": Suite("cpu", "bench-cpu", ("static", "rule", "schedule", "tpe", "sha"), 3, (), 250.0, "2 CPU cores"),
    # 128 validation utterances: half the measurement noise of bench-cpu's 64 (benchmarks/val_noise.py: SD 0.0145
    # vs 0.0287), cheap on a GPU; on 2 cores it would add ~68 s to a ~250 s episode
    "full": Suite("full", "bench-cpu", (), 10, ("train.max_eval_utterances=128",), 60.0, "one GPU, one run at a time"),
    "decisive": Suite(
        "decisive",
        "bench-cpu",
        DECISIVE_CONTROLLERS,
        DECISIVE_INSTANCES,
        (
            f"env.instances.test_seeds=[{', '.join(str(1000 + i) for i in range(DECISIVE_POOL))}]",
            *(f"{key}={path}" for key, path in DECISIVE_FILES.items() if path.is_file()),
        ),
        250.0,
        "2 CPU cores, one run at a time",
        replicates=DECISIVE_REPLICATES,
        model="local:smollm2-135m",
        paired_sd=DECISIVE_PAIRED_SD,
        chaos_sd=DECISIVE_CHAOS_SD,
    ),
}


def get_suite(name: str) -> Suite:
    """The suite ``name``; a one-line ConfigError lists the valid names."""
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; valid: {', '.join(sorted(SUITES))}")
    return SUITES[name]


def suite_controllers(suite: Suite) -> list[str]:
    """The suite's controllers that are registered (``full``: every registered one but aliases); a suite may name
    controllers that another part of the project registers later (the decisive suite's issue-27 controllers)."""
    known = registered()
    if suite.controllers:
        return [c for c in suite.controllers if c in known]
    return known
