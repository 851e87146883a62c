"""The statistics of ``noise.py`` (pure numpy/scipy): the variance of a paired difference between two controllers
split into the judge's sampling noise, training chaos and instance heterogeneity, and the minimum detectable
effect (MDE) of a suite for its cost.

Notation: instance ``i`` (I of them), data-order seed ``s`` (S of them; every seed after the first replays the first
seed's decisions), per run the word errors ``e_u`` and reference words ``w_u`` of every hidden-dev utterance ``u``.
``d_is = WER_A(i, s) - WER_B(i, s)`` is the paired difference (the same utterances for both controllers).

- (a) **judge**: ``v_is``, the variance of ``d_is`` over bootstrap resamples of the utterances (with replacement;
  the same resample for A and B): how far one paired difference would move with another judge set of this size.
  ``sigma2_judge = mean(v_is)``.
- (b) **chaos**: the seed-to-seed variance of ``d_is`` within an instance, ``var_s(d_is)`` (same decisions, another
  data order), less the judge noise it contains on this fixed set (bootstrapped too:
  ``S/(S-1) * (mean_s v_is - var*(mean_s d_is))``), averaged over instances.
- (c) **instances**: the variance over instances of the seed-mean difference ``mean_s d_is``, less what chaos
  (``sigma2_chaos / S``) and the judge (``var*(mean_s d_is)``) put into it: how much the controllers' effect
  differs from one instance to the next.

A suite of ``n`` instances with ``R`` replicates judged on ``n_test`` utterances then has a per-instance paired SD
``sqrt(sigma2_instances + (sigma2_chaos + sigma2_judge * n_dev / n_test) / R)`` (judge variance scales as one over
the utterances scored; judge and chaos treated as independent per instance and replicate). Its MDE is the smallest
mean difference a two-sided paired t-test at ``alpha / m`` (Holm's first step over ``m`` comparisons: the strictest)
detects with the given power, from the exact noncentral t distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def bootstrap_wers(errors: Sequence[int], words: Sequence[int], index: np.ndarray) -> np.ndarray:
    """Corpus WER of one run on every bootstrap resample (rows of ``index``: utterance positions)."""
    e, w = np.asarray(errors, dtype=float), np.asarray(words, dtype=float)
    return e[index].sum(axis=1) / w[index].sum(axis=1)


def decompose(
    runs: Mapping[tuple[int, int], tuple[Mapping[str, Any], Mapping[str, Any]]], boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """The three variance components of a paired difference from ``runs[(instance, seed)] = (row_A, row_B)``
    (each row: ``dev_wer``, ``errors``, ``words``). Every run of one instance must be scored on the same utterances;
    instances may differ (rows measured under two judge keys, i.e. on two machines, hold two hidden dev sets): each
    utterance set gets its own bootstrap resamples, and the judge component is the mean over pairs as before. None
    where the design cannot tell (one seed: no chaos; one instance: no heterogeneity)."""
    keys = sorted(runs)
    instances = sorted({i for i, _ in keys})
    words_of: dict[int, list[int]] = {}
    for (i, _), (a, b) in sorted(runs.items()):
        words = words_of.setdefault(i, list(a["words"]))
        if list(a["words"]) != words or list(b["words"]) != words:
            raise ValueError(f"every run of instance {i} must be scored on the same utterances")
    rng, index = np.random.default_rng(seed), {}
    for words in words_of.values():  # one resample matrix per utterance set, drawn in the instances' order
        if tuple(words) not in index:
            index[tuple(words)] = rng.integers(0, len(words), size=(boot, len(words)))
    d = {k: runs[k][0]["dev_wer"] - runs[k][1]["dev_wer"] for k in keys}
    dstar = {}
    for k in keys:
        words = words_of[k[0]]
        idx = index[tuple(words)]
        dstar[k] = bootstrap_wers(runs[k][0]["errors"], words, idx) - bootstrap_wers(runs[k][1]["errors"], words, idx)
    v = {k: float(np.var(dstar[k], ddof=1)) for k in keys}
    seeds_of = {i: [k for k in keys if k[0] == i] for i in instances}
    dbar = {i: float(np.mean([d[k] for k in seeds_of[i]])) for i in instances}
    vbar = {i: float(np.var(np.mean([dstar[k] for k in seeds_of[i]], axis=0), ddof=1)) for i in instances}
    judge = float(np.mean(list(v.values())))
    chaos, raw, within = None, None, [i for i in instances if len(seeds_of[i]) >= 2]
    if within:
        parts, observed_all = [], []
        for i in within:
            s = len(seeds_of[i])
            observed = float(np.var([d[k] for k in seeds_of[i]], ddof=1))
            measurement = s / (s - 1) * (float(np.mean([v[k] for k in seeds_of[i]])) - vbar[i])
            parts.append(observed - measurement)
            observed_all.append(observed)
        chaos = max(0.0, float(np.mean(parts)))
        raw = float(np.mean(observed_all))
    hetero = None
    if len(instances) >= 2:
        s_mean = float(np.mean([len(seeds_of[i]) for i in instances]))
        between = float(np.var(list(dbar.values()), ddof=1))
        hetero = max(0.0, between - (chaos or 0.0) / s_mean - float(np.mean(list(vbar.values()))))
    return {
        "instances": len(instances),
        "pairs": len(keys),
        "utterances": len(words_of[instances[0]]),
        "utterance_sets": len(index),
        "diff_mean": float(np.mean(list(dbar.values()))),
        "diff_sd_observed": float(np.std(list(d.values()), ddof=1)) if len(keys) > 1 else None,
        "var_judge": judge,
        "var_chaos": chaos,
        # seed-to-seed variance of d on the same utterances, nothing subtracted: the noise of the fixed-set reading
        "var_within_observed": raw,
        "var_instances": hetero,
        "per_instance": {str(i): {"diff_mean": dbar[i], "var_judge_of_mean": vbar[i]} for i in instances},
        "bootstrap": boot,
    }


def power_of(effect: float, sd: float, n: int, alpha: float) -> float:
    """Power of a two-sided one-sample (paired) t-test at level ``alpha`` for mean ``effect`` (exact noncentral t)."""
    from scipy.stats import nct, t

    df = n - 1
    crit = float(t.ppf(1 - alpha / 2, df))
    ncp = effect / sd * math.sqrt(n)
    upper, lower = float(nct.sf(crit, df, ncp)), float(nct.cdf(-crit, df, ncp))
    # scipy's noncentral t returns NaN for some far tails (measured: cdf(-1.98, 99, 25)); those tails are ~0 or ~1
    upper = upper if math.isfinite(upper) else float(ncp > crit)
    return upper + (lower if math.isfinite(lower) else 0.0)


def mde(sd: float | None, n: int, alpha: float, power: float = 0.8) -> float | None:
    """The smallest mean paired difference a two-sided t-test at ``alpha`` detects with ``power`` over ``n`` pairs
    of SD ``sd`` (exact noncentral t; None below two pairs)."""
    from scipy.optimize import brentq

    if sd is None or n < 2 or not math.isfinite(sd):
        return None
    if sd == 0:
        return 0.0
    hi = sd
    while power_of(hi, sd, n, alpha) < power:
        hi *= 2
        if hi > 1e6 * sd:
            return math.inf
    return float(brentq(lambda x: power_of(x, sd, n, alpha) - power, 0.0, hi, xtol=1e-10 * sd))


def pairs_needed(sd: float | None, target: float, alpha: float, power: float = 0.8, cap: int = 100_000) -> int | None:
    """The fewest pairs whose MDE is at most ``target`` (None beyond ``cap``)."""
    if sd is None:
        return None
    lo, hi = 2, 2
    while (m := mde(sd, hi, alpha, power)) is None or m > target:
        lo, hi = hi, hi * 2
        if hi > cap:
            return None
    while lo < hi:  # the MDE falls with n: the first n at or below the target
        mid = (lo + hi) // 2
        if mde(sd, mid, alpha, power) <= target:  # type: ignore[operator]
            hi = mid
        else:
            lo = mid + 1
    return hi


def normal_mde(sd: float, units: float, alpha: float, power: float = 0.8) -> float:
    """MDE of ``units`` pairs (a real number) in the normal approximation: ``(z_{1-alpha/2} + z_power) sd / sqrt``."""
    from scipy.stats import norm

    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * sd / math.sqrt(units))


def suite_table(
    components: Mapping[str, Any],
    unit_cpu_h: float,
    gpu_min_per_cpu_h: float,
    n_dev: int,
    n_test: int,
    *,
    replicates: Sequence[int] = (1, 2, 3),
    comparisons: int = 6,
    alpha: float = 0.05,
    power: float = 0.8,
    target: float = 0.03,
    budget_cpu_h: float = 10.0,
) -> list[dict[str, Any]]:
    """Per replicate count R: the per-instance paired SD, the MDE one CPU-hour and one GPU-minute of suite would buy
    (normal approximation), the instances and suite cost for an MDE of ``target`` (exact), and the exact MDE of a
    ``budget_cpu_h`` suite. ``unit_cpu_h``: CPU-hours of one instance-replicate of the suite (every controller's
    episode and judge)."""
    a = alpha / comparisons
    judge = components["var_judge"] * n_dev / max(n_test, 1)
    out = []
    for r in replicates:
        var = (components["var_instances"] or 0.0) + ((components["var_chaos"] or 0.0) + judge) / r
        sd, cost = math.sqrt(var), r * unit_cpu_h
        n = pairs_needed(sd, target, a, power)
        n_budget = int(budget_cpu_h // cost) if cost > 0 else 0
        out.append(
            {
                "replicates": r,
                "sd": sd,
                "mde_per_cpu_hour": normal_mde(sd, 1.0 / cost, a, power) if cost > 0 else None,
                "mde_per_gpu_minute": normal_mde(sd, 1.0 / (cost * gpu_min_per_cpu_h), a, power) if cost > 0 else None,
                "instances_for_target": n,
                "cpu_hours_for_target": n * cost if n is not None else None,
                "gpu_minutes_for_target": n * cost * gpu_min_per_cpu_h if n is not None else None,
                "instances_in_budget": n_budget,
                "mde_in_budget": mde(sd, n_budget, a, power),
                # the fixed-set reading (bench.stats.fixed_set): these instances only, seed-to-seed noise alone
                "fixed_set_mde_in_budget": fixed_mde(components.get("var_within_observed"), n_budget, r, a, power),
            }
        )
    return out


def fixed_mde(var_within: float | None, n: int, r: int, alpha: float, power: float = 0.8) -> float | None:
    """The fixed-set reading's MDE for ``n`` instances x ``r`` replicates (``bench.stats.min_detectable_fixed`` at the
    already-divided level ``alpha``), from the paired difference's seed-to-seed variance; None below 2 replicates."""
    from bench.stats import min_detectable_fixed  # scipy's t and brentq, loaded with the table that needs them

    if var_within is None or n < 1 or r < 2:
        return None
    return min_detectable_fixed(math.sqrt(var_within), n, r, alpha, power, comparisons=1)
