"""Paired statistics over benchmark instances (pure numpy/scipy; lower WER is better).

Per controller: mean, median and interquartile mean of the outcome (an instance's outcome is the mean of its
replicates); paired against a reference controller per (instance, replicate) and averaged per instance: mean
difference with a seeded percentile-bootstrap 95 % CI, the Wilcoxon signed-rank p-value (Holm-corrected across
controllers), the probability of improvement, and the minimum detectable effect at the n that was run (two-sided
paired t-test, alpha = 0.05 Holm over the contestants, 80 % power, exact noncentral t); regret against an
``oracle`` when one ran; the area under the validation curve (mean log WER over the budget); and, in words, what
the sample size allows to claim. :func:`instances_needed` sizes a suite from a measured paired SD.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sttrl import extras

ALPHA = 0.05
POWER = 0.8


def _arr(values: Sequence[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return a[np.isfinite(a)]


def iqm(values: Sequence[float]) -> float | None:
    """Interquartile mean: the mean of the middle half (``floor(n/4)`` values cut from each end, as
    ``scipy.stats.trim_mean(x, 0.25)``)."""
    a = np.sort(_arr(values))
    if a.size == 0:
        return None
    k = int(0.25 * a.size)
    return float(a[k : a.size - k].mean())


def describe(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, median and interquartile mean of ``values``."""
    a = _arr(values)
    if a.size == 0:
        return {"n": 0, "mean": None, "median": None, "iqm": None}
    return {"n": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)), "iqm": iqm(a)}


def bootstrap_ci(
    diffs: Sequence[float], seed: int = 0, n_boot: int = 10_000, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile-bootstrap CI of the mean of ``diffs`` (resampled with a seeded generator)."""
    d = _arr(diffs)
    if d.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def wilcoxon_p(diffs: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of ``diffs`` (zero differences dropped); 1.0 when every
    difference is zero, None without data."""
    wilcoxon = extras.load("scipy.stats", extra="bench", what="the benchmark's statistics").wilcoxon

    d = _arr(diffs)
    if d.size == 0:
        return None
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); None stays None."""
    named = sorted(((p, k) for k, p in pvalues.items() if p is not None))
    m, out, running = len(named), {k: None for k, p in pvalues.items() if p is None}, 0.0
    for i, (p, k) in enumerate(named):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def prob_improvement(values: Sequence[float], reference: Sequence[float]) -> float | None:
    """Fraction of paired instances where ``values`` is lower than ``reference`` (ties count one half)."""
    pairs = [(a, b) for a, b in zip(values, reference, strict=True) if a is not None and b is not None]
    if not pairs:
        return None
    return float(sum(1.0 if a < b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs))


def curve_auc(x: Sequence[float], y: Sequence[float], end: float | None = None) -> float | None:
    """Mean log WER over the budget: the trapezoid area of ``log(y)`` against ``x`` from the first point
    to ``end`` (the last value held until then), divided by that span. Lower is better."""
    if not x:
        return None
    xs = [float(v) for v in x]
    ly = [math.log(max(float(v), 1e-6)) for v in y]
    if end is not None and end > xs[-1]:
        xs.append(float(end))
        ly.append(ly[-1])
    span = xs[-1] - xs[0]
    if span <= 0:
        return ly[-1]
    area = sum((xs[i + 1] - xs[i]) * (ly[i] + ly[i + 1]) / 2 for i in range(len(xs) - 1))
    return area / span


def power_t(ncp: float, df: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided t-test at level ``alpha`` with ``df`` degrees of freedom when the statistic is noncentral
    t with noncentrality ``ncp``: ``P(|T| > t_{1-alpha/2, df})`` (exact, no normal approximation)."""
    stats = extras.load("scipy.stats", extra="bench", what="the benchmark's statistics")
    nct, t = stats.nct, stats.t

    crit = t.ppf(1 - alpha / 2, df)
    lower = float(nct.cdf(-crit, df, ncp))
    if not math.isfinite(lower):  # scipy's nct loses this tail for large nc; it is below Phi(-nc) there
        lower = 0.0
    return float(nct.sf(crit, df, ncp)) + lower


def power_paired_t(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` over ``n`` pairs when the true mean difference is
    ``effect`` paired standard deviations: noncentral t with ``n - 1`` degrees of freedom and noncentrality
    ``effect * sqrt(n)``."""
    return power_t(effect * math.sqrt(n), n - 1, alpha)


def _solve_effect(power_of: Any, power: float) -> float:
    """The smallest effect (in units of its standard error) whose power reaches ``power``; ``power_of`` grows."""
    brentq = extras.load("scipy.optimize", extra="bench", what="the benchmark's statistics").brentq

    hi = 1.0
    while power_of(hi) < power:  # bracket the root: power grows with the effect
        hi *= 2
    return float(brentq(lambda e: power_of(e) - power, 0.0, hi, xtol=1e-10))


def _mde_at(se: float, df: float, level: float, power: float) -> float:
    """The MDE of a two-sided t-test at ``level`` with ``df`` degrees of freedom whose estimate has standard error
    ``se`` (exact noncentral t)."""
    return _solve_effect(lambda e: power_t(e, df, level), power) * se


def min_detectable(sd: float, n: int, alpha: float = ALPHA, power: float = POWER, comparisons: int = 1) -> float | None:
    """Minimum detectable effect (MDE): the smallest mean paired difference that the two-sided paired t-test over
    ``n`` instances detects with ``power`` when the paired standard deviation is ``sd``, at level ``alpha`` corrected
    by Holm over ``comparisons`` contestants (Holm's first step, ``alpha / comparisons``: the level a single
    comparison must reach whatever the others show). Exact noncentral t, solved for the effect."""
    if n < 2 or not math.isfinite(sd) or sd < 0:
        return None
    if sd == 0:
        return 0.0
    level = alpha / max(1, comparisons)
    return _solve_effect(lambda e: power_paired_t(e, n, level), power) * sd


def min_detectable_fixed(
    chaos_sd: float, n: int, replicates: int, alpha: float = ALPHA, power: float = POWER, comparisons: int = 1
) -> float | None:
    """The MDE of the fixed-set reading (:func:`fixed_set`) for ``n`` instances of ``replicates`` each when the paired
    difference's training-chaos SD is ``chaos_sd``: standard error ``chaos_sd / sqrt(n * replicates)``,
    ``n * (replicates - 1)`` degrees of freedom. None below two replicates."""
    if replicates < 2 or n < 1 or chaos_sd < 0:
        return None
    se = chaos_sd / math.sqrt(n * replicates)
    level = alpha / max(1, comparisons)
    return _mde_at(se, n * (replicates - 1), level, power)


def instances_needed(
    sd: float, mde: float, alpha: float = ALPHA, power: float = POWER, comparisons: int = 1, limit: int = 100_000
) -> int | None:
    """The fewest instances whose MDE (:func:`min_detectable`) is at most ``mde`` for paired SD ``sd``; None beyond
    ``limit``."""
    if mde <= 0 or sd < 0:
        return None

    def ok(n: int) -> bool:
        got = min_detectable(sd, n, alpha, power, comparisons)
        return got is not None and got <= mde

    lo, hi = 2, 2
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > limit:
            return None
    while lo < hi:  # the MDE falls as n grows: bisect for the first n that reaches it
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


def _replicate_diffs(vals: Mapping[Any, float], ref: Mapping[Any, float]) -> dict[int, list[float]]:
    """The paired differences per (instance, replicate) key present in both, grouped by instance. A plain integer
    key is replicate 0 of that instance."""
    per: dict[int, list[float]] = {}
    for k, v in vals.items():
        if k in ref and v is not None and ref[k] is not None:
            inst = k[0] if isinstance(k, tuple) else k
            per.setdefault(int(inst), []).append(float(v) - float(ref[k]))
    return dict(sorted(per.items()))


def _instance_diffs(vals: Mapping[Any, float], ref: Mapping[Any, float]) -> tuple[dict[int, float], int]:
    """Pairs per (instance, replicate) key present in both, averaged per instance: ``({instance: mean
    difference}, number of pairs)``."""
    per = _replicate_diffs(vals, ref)
    return {i: float(np.mean(d)) for i, d in per.items()}, sum(len(d) for d in per.values())


def fixed_set(
    vals: Mapping[Any, float],
    ref: Mapping[Any, float],
    comparisons: int = 1,
    alpha: float = ALPHA,
    power: float = POWER,
) -> dict[str, Any] | None:
    """The conditional reading: is the mean paired difference over *these* instances (and the judge's utterances)
    non-zero, with training chaos the only noise? Its noise is measured from the replicates: the pooled variance of
    the (instance, replicate) differences around their instance's mean (common random numbers: each replicate's
    seed is shared by both controllers), with ``sum(R_i - 1)`` degrees of freedom. The estimate is the mean over
    instances of the instance means; its standard error ``sqrt(s2 * sum(1 / R_i)) / N``; a t-test, a t interval and
    the MDE (exact noncentral t, alpha over ``comparisons``: Holm's first step) at that standard error. A claim from
    it holds for these instances only; the population reading (:func:`paired`) carries the instance-to-instance
    variation. None without an instance of two or more replicates."""
    t = extras.load("scipy.stats", extra="bench", what="the benchmark's statistics").t

    per = _replicate_diffs(vals, ref)
    df = sum(len(d) - 1 for d in per.values())
    if not per or df < 1:
        return None
    s2 = sum(float(np.sum((np.asarray(d) - np.mean(d)) ** 2)) for d in per.values()) / df
    n = len(per)
    theta = float(np.mean([np.mean(d) for d in per.values()]))
    se = math.sqrt(s2 * sum(1.0 / len(d) for d in per.values())) / n
    if se == 0:
        p, ci, mde = (1.0 if theta == 0 else 0.0), (theta, theta), 0.0
    else:
        p = float(2 * t.sf(abs(theta) / se, df))
        half = float(t.ppf(1 - alpha / 2, df)) * se
        ci = (theta - half, theta + half)
        level = alpha / max(1, comparisons)
        mde = _mde_at(se, df, level, power)
    return {
        "n_instances": n,
        "df": df,
        "within_sd": math.sqrt(s2),
        "se": se,
        "diff_mean": theta,
        "ci95": ci,
        "p": p,
        "min_detectable": mde,
    }


def instance_means(vals: Mapping[Any, float]) -> dict[int, float]:
    """An instance's outcome: the mean of its replicates (keys ``(instance, replicate)`` or plain instances)."""
    per: dict[int, list[float]] = {}
    for k, v in vals.items():
        if v is not None:
            per.setdefault(int(k[0] if isinstance(k, tuple) else k), []).append(float(v))
    return {i: float(np.mean(v)) for i, v in sorted(per.items())}


def paired(
    by_controller: Mapping[str, Mapping[Any, float]], reference: str, oracle: str | None = "oracle", seed: int = 0
) -> dict[str, Any]:
    """Paired statistics of each controller against ``reference`` on the instances both finished.

    ``by_controller[c][key]`` is the outcome (hidden WER) with ``key`` an ``(instance, replicate)`` pair (or a plain
    instance: replicate 0). Pairs are formed per (instance, replicate), the replicates that share a data-order seed;
    an instance's paired difference is the mean over its pairs, and the tests, the CI and the MDE run over
    instances. Returns ``{controller: {...}}`` with ``describe`` fields over instance means, and for every
    controller but the reference: ``n_pairs`` (instances), ``n_replicate_pairs``, ``diff_mean``, ``diff_sd``,
    ``ci95``, ``p_wilcoxon``, ``p_holm``, ``prob_improvement``, ``min_detectable`` (the MDE at this n, Holm over
    the contestants tested, exact noncentral t), ``fixed_set`` (:func:`fixed_set` with ``p_holm``, or None without
    replicates); ``regret`` (mean outcome minus the oracle's on shared instances)
    when ``oracle`` ran."""
    out: dict[str, Any] = {}
    ref = by_controller.get(reference, {})
    means = {c: instance_means(v) for c, v in by_controller.items()}
    raw_p: dict[str, float | None] = {}
    for c, vals in by_controller.items():
        s: dict[str, Any] = describe(list(means[c].values()))
        if c not in (reference, oracle) and ref:  # the oracle gives regret only: not tested, not in Holm
            diffs, pairs = _instance_diffs(vals, ref)
            d = np.asarray(list(diffs.values()), dtype=float)
            raw_p[c] = wilcoxon_p(d)
            s.update(
                {
                    "reference": reference,
                    "n_pairs": int(d.size),
                    "n_replicate_pairs": pairs,
                    "diff_mean": float(d.mean()) if d.size else None,
                    "diff_sd": float(d.std(ddof=1)) if d.size > 1 else None,
                    "diffs": {str(i): v for i, v in diffs.items()},
                    "ci95": bootstrap_ci(d, seed=seed),
                    "p_wilcoxon": raw_p[c],
                    "prob_improvement": prob_improvement(
                        [means[c][i] for i in diffs], [means[reference][i] for i in diffs]
                    ),
                }
            )
        if oracle and oracle in by_controller and c != oracle:
            orc = means[oracle]
            keys = [k for k in means[c] if k in orc]
            s["regret"] = float(np.mean([means[c][k] - orc[k] for k in keys])) if keys else None
        out[c] = s
    for c, p in holm(raw_p).items():
        out[c]["p_holm"] = p
        sd, n = out[c]["diff_sd"], out[c]["n_pairs"]
        out[c]["min_detectable"] = min_detectable(sd, n, comparisons=len(raw_p)) if sd is not None else None
        out[c]["mde_comparisons"] = len(raw_p)
        out[c]["fixed_set"] = fixed_set(by_controller[c], ref, comparisons=len(raw_p))
    fixed_p = holm({c: out[c]["fixed_set"]["p"] for c in raw_p if out[c]["fixed_set"] is not None})
    for c, p in fixed_p.items():
        out[c]["fixed_set"]["p_holm"] = p
    return out


def claims(stats: Mapping[str, Any], reference: str, n: int, alpha: float = ALPHA) -> list[str]:
    """What can and cannot be claimed at this sample size, one sentence each."""
    lines = []
    smallest_p = 2 / 2**n if n >= 1 else 1.0
    if smallest_p > alpha:
        lines.append(
            f"n={n} paired instances: the Wilcoxon signed-rank test cannot reach p < {alpha} at this n "
            f"(its smallest two-sided p is {smallest_p:.3g}; n >= 6 is needed), so no difference "
            "below can be called significant."
        )
    if n < 10:
        lines.append(
            f"n={n}: a percentile bootstrap over so few instances has few distinct resamples and its "
            "95 % CIs are too narrow; read them as descriptive, not as tests."
        )
    for c, s in stats.items():
        if c == reference or "diff_mean" not in s or s["diff_mean"] is None:
            continue
        lo_hi = s["ci95"]
        mde = s.get("min_detectable")
        mde_txt = (
            (
                f"; MDE {mde:.3f} at n={s['n_pairs']} (paired SD {s['diff_sd']:.3f}, alpha {alpha} Holm over "
                f"{s.get('mde_comparisons', 1)}, 80 % power): a true difference smaller than that can go unseen"
            )
            if mde is not None
            else ""
        )
        p = s.get("p_holm")
        verdict = (
            ("better than" if s["diff_mean"] < 0 else "worse than")
            if p is not None and p < alpha
            else "not distinguishable from"
        )
        lines.append(
            f"{c} vs {reference}: mean Δ hidden WER {s['diff_mean']:+.3f} (95 % CI {lo_hi[0]:+.3f} to "
            f"{lo_hi[1]:+.3f}), Holm p {p if p is None else format(p, '.3g')}: {verdict} {reference}"
            f"{mde_txt}."
        )
        fs = s.get("fixed_set")
        if fs is not None:
            fp = fs.get("p_holm", fs["p"])
            word = "better than" if fs["diff_mean"] < 0 else "worse than"
            word = word if fp < alpha else "not distinguishable from"
            lines.append(
                f"{c} vs {reference} on these {fs['n_instances']} instances only (training chaos the only noise, "
                f"from the replicates: SD {fs['within_sd']:.3f}, {fs['df']} df): Δ {fs['diff_mean']:+.3f} (95 % CI "
                f"{fs['ci95'][0]:+.3f} to {fs['ci95'][1]:+.3f}), Holm p {fp:.3g}: {word} {reference} here, MDE "
                f"{fs['min_detectable']:.3f}; another draw of instances may differ by the instance-to-instance SD."
            )
    return lines
