"""Paired statistics over benchmark instances (pure numpy/scipy; lower WER is better).

Per controller: mean, median and interquartile mean of the outcome; paired against a reference
controller on the same instances: mean difference with a seeded percentile-bootstrap 95 % CI, the
Wilcoxon signed-rank p-value (Holm-corrected across controllers), the probability of improvement;
regret against an ``oracle`` when one ran; the area under the validation curve (mean log WER over the
budget); and, in words, the smallest difference the sample size can detect.
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
    pairs = [(a, b) for a, b in zip(values, reference) if a is not None and b is not None]
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


def min_detectable(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Smallest mean paired difference a paired t-test detects with ``power`` at two-sided ``alpha``,
    given the paired standard deviation ``sd`` over ``n`` instances: ``(t_{1-a/2} + t_{power}) sd / sqrt(n)``."""
    t = extras.load("scipy.stats", extra="bench", what="the benchmark's statistics").t

    if n < 2 or not math.isfinite(sd):
        return None
    return float((t.ppf(1 - alpha / 2, n - 1) + t.ppf(power, n - 1)) * sd / math.sqrt(n))


def paired(
    by_controller: Mapping[str, Mapping[int, float]], reference: str, oracle: str | None = "oracle", seed: int = 0
) -> dict[str, Any]:
    """Paired statistics of each controller against ``reference`` on the instances both finished.

    ``by_controller[c][instance]`` is the outcome (hidden WER). Returns ``{controller: {...}}`` with
    ``describe`` fields, and for every controller but the reference: ``n_pairs``, ``diff_mean``,
    ``diff_sd``, ``ci95``, ``p_wilcoxon``, ``p_holm``, ``prob_improvement``, ``min_detectable``;
    ``regret`` (mean outcome minus the oracle's on shared instances) when ``oracle`` ran."""
    out: dict[str, Any] = {}
    ref = by_controller.get(reference, {})
    raw_p: dict[str, float | None] = {}
    for c, vals in by_controller.items():
        s: dict[str, Any] = describe(list(vals.values()))
        if c not in (reference, oracle) and ref:  # the oracle gives regret only: not tested, not in Holm
            keys = sorted(k for k in vals if k in ref and vals[k] is not None and ref[k] is not None)
            d = np.asarray([vals[k] - ref[k] for k in keys], dtype=float)
            sd = float(d.std(ddof=1)) if d.size > 1 else None
            raw_p[c] = wilcoxon_p(d)
            s.update(
                {
                    "reference": reference,
                    "n_pairs": int(d.size),
                    "diff_mean": float(d.mean()) if d.size else None,
                    "diff_sd": sd,
                    "ci95": bootstrap_ci(d, seed=seed),
                    "p_wilcoxon": raw_p[c],
                    "prob_improvement": prob_improvement([vals[k] for k in keys], [ref[k] for k in keys]),
                    "min_detectable": min_detectable(sd, int(d.size)) if sd is not None else None,
                }
            )
        if oracle and oracle in by_controller and c != oracle:
            orc = by_controller[oracle]
            keys = [k for k in vals if k in orc and vals[k] is not None and orc[k] is not None]
            s["regret"] = float(np.mean([vals[k] - orc[k] for k in keys])) if keys else None
        out[c] = s
    for c, p in holm(raw_p).items():
        out[c]["p_holm"] = p
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
                f"; with the observed paired SD {s['diff_sd']:.3f} a difference below {mde:.3f} cannot be "
                f"detected at n={s['n_pairs']} (80 % power)"
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
    return lines
