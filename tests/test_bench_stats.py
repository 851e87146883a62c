"""Paired statistics of the benchmark (``bench.stats``) on hand-computed numbers, the table that
states what can be claimed, and the registry-driven controller check."""

from __future__ import annotations

import math

import numpy as np
import pytest

import bench
from bench import stats


def test_location_statistics_by_hand():
    assert stats.iqm([1, 2, 3, 4, 100]) == 3.0  # one value cut from each end: mean(2, 3, 4)
    assert stats.iqm([4, 1, 3, 2]) == 2.5  # mean(2, 3)
    assert stats.iqm([0.3, 0.1, 0.2]) == pytest.approx(0.2)  # n=3 cuts nothing
    assert stats.describe([0.2, 0.4, 0.9]) == {
        "n": 3,
        "mean": pytest.approx(0.5),
        "median": 0.4,
        "iqm": pytest.approx(0.5),
    }
    assert stats.describe([]) == {"n": 0, "mean": None, "median": None, "iqm": None}


def test_wilcoxon_holm_and_probability_of_improvement_by_hand():
    # |d| ranks 1..4, the negative one has rank 2: W- = 2; of the 16 sign patterns 3 have a rank sum
    # <= 2 ({}, {1}, {2}) and 3 >= 8, so the exact two-sided p is 6/16
    assert stats.wilcoxon_p([0.1, -0.2, 0.3, 0.4]) == pytest.approx(0.375)
    assert stats.wilcoxon_p([0.1, 0.2, 0.3]) == pytest.approx(0.25)  # n=3: the smallest p there is
    assert stats.wilcoxon_p([0.0, 0.0]) == 1.0 and stats.wilcoxon_p([]) is None
    # Holm: sorted 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> kept monotone at 0.06
    assert stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None}) == {
        "a": pytest.approx(0.03),
        "b": pytest.approx(0.06),
        "c": pytest.approx(0.06),
        "d": None,
    }
    assert stats.prob_improvement([0.1, 0.5, 0.3], [0.2, 0.4, 0.3]) == pytest.approx((1 + 0 + 0.5) / 3)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    d = [0.01, 0.03, -0.02, 0.05, 0.02]
    lo, hi = stats.bootstrap_ci(d, seed=3)
    assert (lo, hi) == stats.bootstrap_ci(d, seed=3) and lo < sum(d) / len(d) < hi
    assert lo >= min(d) and hi <= max(d)
    assert stats.bootstrap_ci([0.1, 0.1]) == (pytest.approx(0.1), pytest.approx(0.1))


def test_curve_auc_and_min_detectable_by_hand():
    # log y = 0, -1, -2 at x = 0, 2, 4, held at -2 until 6: (-1 - 3 - 4) / 6
    assert stats.curve_auc([0, 2, 4], [1.0, math.e**-1, math.e**-2], end=6) == pytest.approx(-8 / 6)
    assert stats.curve_auc([0], [0.5]) == pytest.approx(math.log(0.5))
    assert stats.min_detectable(0.019, 1) is None and stats.min_detectable(0.0, 5) == 0.0


def test_min_detectable_is_exact_noncentral_t_with_holm():
    # one comparison: the paired t-test's MDE in SDs (the simulation below checks such a value)
    assert stats.min_detectable(1.0, 10) == pytest.approx(0.9960, abs=1e-3)
    assert stats.min_detectable(1.0, 20) == pytest.approx(0.6604, abs=1e-3)
    assert stats.power_paired_t(stats.min_detectable(1.0, 10), 10) == pytest.approx(0.8)
    # Holm over 6 contestants: a comparison must pass alpha / 6, so the MDE grows
    assert stats.min_detectable(1.0, 10, comparisons=6) == pytest.approx(1.3714, abs=1e-3)
    assert stats.min_detectable(0.05, 10, comparisons=6) == pytest.approx(0.05 * 1.3714, abs=1e-4)
    # issue 25: paired SD 0.042-0.100 -> 18-90 instances to detect 0.03 (alpha 0.05, one comparison)
    assert (stats.instances_needed(0.042, 0.03), stats.instances_needed(0.1, 0.03)) == (18, 90)
    assert (stats.instances_needed(0.042, 0.03, comparisons=6), stats.instances_needed(0.1, 0.03, comparisons=6)) == (
        28,
        139,
    )
    # a seeded simulation agrees: paired t-tests at the MDE reject H0 in ~80 % of 40,000 draws (n=6, Holm over 3)
    from scipy.stats import t

    n, m = 6, 3
    effect = stats.min_detectable(1.0, n, comparisons=m)
    x = np.random.default_rng(7).normal(effect, 1.0, size=(40_000, n))
    tstat = x.mean(axis=1) / (x.std(axis=1, ddof=1) / np.sqrt(n))
    assert abs((np.abs(tstat) > t.ppf(1 - 0.05 / m / 2, n - 1)).mean() - 0.8) < 0.01


def test_pairs_per_instance_and_replicate_averaged_per_instance():
    # instance 0 has two replicates (data-order seeds shared by both controllers), instance 1 one
    by = {
        "schedule": {(0, 0): 0.50, (0, 1): 0.40, (1, 0): 0.60},
        "rule": {(0, 0): 0.45, (0, 1): 0.41, (1, 0): 0.50, (1, 1): 0.2},  # (1, 1) has no partner: not paired
    }
    out = stats.paired(by, "schedule")
    rule = out["rule"]
    assert rule["n_pairs"] == 2 and rule["n_replicate_pairs"] == 3
    assert rule["diffs"] == {"0": pytest.approx((-0.05 + 0.01) / 2), "1": pytest.approx(-0.10)}
    assert rule["diff_mean"] == pytest.approx((-0.02 - 0.10) / 2)
    assert rule["min_detectable"] == pytest.approx(stats.min_detectable(rule["diff_sd"], 2))
    assert out["schedule"]["mean"] == pytest.approx((0.45 + 0.60) / 2)  # an instance's outcome: its replicates' mean
    assert out["rule"]["mean"] == pytest.approx((0.43 + 0.35) / 2)


def test_fixed_set_reading_from_replicates_by_hand_and_by_simulation():
    """The conditional reading: only the replicates' spread (training chaos) is noise; it needs replicates."""
    from scipy.stats import t

    # differences rule - schedule: instance 0 (-0.10, -0.06), instance 1 (0.02, 0.00, 0.04), instance 2 (-0.05)
    ref = {(0, 0): 0.5, (0, 1): 0.5, (1, 0): 0.4, (1, 1): 0.4, (1, 2): 0.4, (2, 0): 0.6}
    vals = {(0, 0): 0.40, (0, 1): 0.44, (1, 0): 0.42, (1, 1): 0.40, (1, 2): 0.44, (2, 0): 0.55}
    got = stats.fixed_set(vals, ref)
    s2 = (0.02**2 * 2 + (0.0 + 0.02**2 + 0.02**2)) / (1 + 2)  # around -0.08 and 0.02; df = 1 + 2 + 0
    se = math.sqrt(s2 * (1 / 2 + 1 / 3 + 1)) / 3
    theta = (-0.08 + 0.02 - 0.05) / 3
    assert got["df"] == 3 and got["n_instances"] == 3
    assert got["within_sd"] == pytest.approx(math.sqrt(s2)) and got["se"] == pytest.approx(se)
    assert got["diff_mean"] == pytest.approx(theta)
    assert got["p"] == pytest.approx(2 * t.sf(abs(theta) / se, 3))
    assert got["ci95"][1] - got["ci95"][0] == pytest.approx(2 * t.ppf(0.975, 3) * se)
    assert stats.power_t(got["min_detectable"] / se, 3) == pytest.approx(0.8)
    assert stats.fixed_set({0: 0.4, 1: 0.5}, {0: 0.5, 1: 0.5}) is None  # no replicates: no chaos estimate
    # through paired(): Holm over the contestants, and a sentence that limits the claim to these instances
    out = stats.paired({"schedule": ref, "rule": vals, "static": ref}, "schedule")
    assert out["rule"]["fixed_set"]["p_holm"] == pytest.approx(min(1.0, 2 * got["p"]))
    text = stats.claims(out, "schedule", 3)
    assert any(x.startswith("rule vs schedule on these 3 instances only") for x in text)
    # seeded simulation: 20 instances with large instance effects, 3 replicates with chaos SD 0.01 and a true
    # mean difference at the MDE; the conditional test rejects in ~80 % of draws
    rng = np.random.default_rng(11)
    n, r, chaos = 20, 3, 0.01
    mde = None
    rejected, trials = 0, 2000
    for _ in range(trials):
        effects = rng.normal(0.0, 0.15, size=n)
        effects -= effects.mean()  # the estimand: the mean over these instances
        if mde is None:
            se = chaos * math.sqrt(n / r) / n
            mde = stats._solve_effect(lambda e: stats.power_t(e, n * (r - 1), 0.05), 0.8) * se
        d = {(i, k): mde + effects[i] + rng.normal(0, chaos) for i in range(n) for k in range(r)}
        zero = dict.fromkeys(d, 0.0)
        rejected += stats.fixed_set(d, zero)["p"] < 0.05
    assert abs(rejected / trials - 0.8) < 0.03
    assert stats.min_detectable_fixed(chaos, n, r) == pytest.approx(mde)  # the suite's planning formula
    assert stats.min_detectable_fixed(chaos, n, 1) is None


def test_paired_against_a_reference_with_regret_and_claims():
    by = {
        "static": {0: 0.30, 1: 0.40, 2: 0.50},
        "rule": {0: 0.25, 1: 0.35, 2: 0.50},
        "random": {0: 0.60, 1: 0.70, 2: 0.90},
        "oracle": {0: 0.20, 1: 0.30, 2: 0.40},
    }
    out = stats.paired(by, "static", seed=0)
    rule, rnd = out["rule"], out["random"]
    assert rule["diff_mean"] == pytest.approx(-0.1 / 3) and rule["n_pairs"] == 3
    assert rule["prob_improvement"] == pytest.approx(2.5 / 3) and rule["regret"] == pytest.approx(0.2 / 3)
    assert rnd["p_wilcoxon"] == pytest.approx(0.25) and rnd["diff_mean"] == pytest.approx(1.0 / 3)
    assert out["static"]["regret"] == pytest.approx(0.1) and "diff_mean" not in out["static"]
    assert "regret" not in out["oracle"]
    # rule: one zero difference is dropped, n=2 left -> p 0.5; Holm over rule and random (the oracle gives
    # regret only: it is neither tested nor counted in the correction)
    assert rule["p_wilcoxon"] == pytest.approx(0.5)
    assert rnd["p_holm"] == pytest.approx(min(1.0, 2 * 0.25)) and "p_wilcoxon" not in out["oracle"]
    text = stats.claims(out, "static", 3)
    assert text[0].startswith("n=3 paired instances: the Wilcoxon signed-rank test cannot reach p < 0.05")
    assert any(t.startswith("random vs static: mean Δ hidden WER +0.333") and "not distinguishable" in t for t in text)


def test_table_states_what_can_be_claimed():
    runs = [
        {
            "controller": c,
            "seed": s,
            "status": "finished",
            "hidden_wer": w,
            "hidden_cer": w / 2,
            "best_val_wer": w,
            "final_val_wer": w,
            "train_steps": 4,
            "evaluations": 3,
            "wall_s": 1.0,
            "faults": {"oom": 0, "nan": 0, "diverged": 0},
            "curve": {"x": [0, 2, 4], "y": [1.0, w, w]},
        }
        for c, ws in (("static", (0.3, 0.4, 0.5)), ("rule", (0.2, 0.3, 0.45)))
        for s, w in enumerate(ws)
    ]
    summary = bench.summarize(runs, ["static", "rule"], end=4)
    paired = bench.results.paired_stats(runs, summary, "static")
    table = bench.markdown_table(summary, paired)
    assert "| controller | median | IQM | Δ vs static | 95 % CI |" in table
    assert "the Wilcoxon signed-rank test cannot reach p < 0.05" in table
    assert summary["rule"]["paired"]["diff_mean"] == pytest.approx(-0.25 / 3)
    assert summary["static"]["hidden_wer_robust"]["median"] == pytest.approx(0.4)


def test_unknown_controller_is_one_line_listing_the_registered_names(capsys):
    assert bench.main(["--preset", "debug", "--controllers", "static,nope", "--seeds", "1"]) == 2
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "unknown controllers ['nope']" in line
    for name in ("llm", "random", "rule", "static", "tpe"):
        assert name in line
