"""lossbench.stats against independent computations: scipy.stats' own interval and paired t-test,
and hand-worked numbers for the edge cases (one seed, two seeds, missing seeds, ties, tuning)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats as scipy_stats

from lossbench.stats import (
    Interval,
    Trial,
    mean_ci,
    paired_difference,
    rank_with_ties,
    resolution_of,
    select_tuned,
    setting_of,
)

# Test accuracies of two losses over four seeds (fixed numbers, shaped like real ones).
CAND = {0: 0.8752, 1: 0.8690, 2: 0.8814, 3: 0.8771}
REF = {0: 0.8701, 1: 0.8655, 2: 0.8760, 3: 0.8730}


def scipy_interval(values, level=0.95):
    v = np.asarray(values, dtype=float)
    return scipy_stats.t.interval(level, len(v) - 1, loc=v.mean(), scale=scipy_stats.sem(v))


# ------------------------------------------------------------------------------------ mean_ci


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("values", [[0.8752, 0.8690, 0.8814], list(CAND.values()), [1.0, 2.0, 4.0, 8.0, 16.0]])
def test_mean_ci_equals_scipy_t_interval(values, level):
    ci = mean_ci(values, level)
    low, high = scipy_interval(values, level)
    assert ci.n == len(values) and ci.level == level
    assert ci.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert ci.std == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert (ci.low, ci.high) == pytest.approx((low, high), rel=1e-12)


def test_mean_ci_of_two_values_gives_the_values_not_an_interval():
    # With n = 2 the t-interval would be mean ± 12.7 · |a - b| / 2: 0.81 ± 0.127, an accuracy above 93 % from two
    # runs at 80 and 82 %. What two seeds can honestly show is the two values.
    ci = mean_ci([0.80, 0.82])
    assert ci.mean == pytest.approx(0.81) and ci.std == pytest.approx(0.02 / math.sqrt(2))
    assert math.isnan(ci.low) and math.isnan(ci.high) and not ci.has_interval
    assert ci.format(100) == "81.00 (n=2: 80.00, 82.00)"
    assert ci.to_json()["values"] == [0.80, 0.82] and ci.to_json()["low"] is None


def test_mean_ci_of_one_value_has_no_interval():
    ci = mean_ci([0.8752])
    assert (ci.mean, ci.n) == (0.8752, 1)
    assert math.isnan(ci.low) and math.isnan(ci.high) and math.isnan(ci.std)
    assert ci.format(100) == "87.52 (n=1)" and ci.format(100, show_n=False) == "87.52"
    assert ci.to_json() == {
        "mean": 0.8752,
        "low": None,
        "high": None,
        "n": 1,
        "std": None,
        "level": 0.95,
        "values": [0.8752],
    }


@pytest.mark.parametrize("n", [2, 3, 10])
def test_accuracy_intervals_stay_within_0_and_1(n):
    """Seeds spread across the whole range (a loss that sometimes fails to train): the t-interval alone would leave
    [0, 1]; the report's never does, and it still covers the true mean at least as often."""
    rng = np.random.default_rng(n)
    for _ in range(50):
        values = np.clip(rng.choice([0.1, 0.98], n) + rng.normal(0, 0.01, n), 0, 1)
        ci = mean_ci(values, bounds=(0.0, 1.0))
        if n < 3:
            assert not ci.has_interval and sorted(ci.values) == sorted(values)
            continue
        low, high = scipy_interval(values)
        assert 0.0 <= ci.low <= ci.mean <= ci.high <= 1.0
        assert ci.low == pytest.approx(max(low, 0.0)) and ci.high == pytest.approx(min(high, 1.0))


def test_mean_ci_of_nothing():
    ci = mean_ci([])
    assert ci.n == 0 and math.isnan(ci.mean)
    assert ci.format(100) == "—"
    assert mean_ci([None, math.nan]).n == 0


def test_mean_ci_drops_missing_values():
    assert mean_ci([0.5, None, math.nan, 0.7, math.inf]) == mean_ci([0.5, 0.7])


def test_mean_ci_format():
    ci = mean_ci([0.8752, 0.8690, 0.8814])
    low, high = scipy_interval([0.8752, 0.8690, 0.8814])
    assert ci.format(100) == f"87.52 [{100 * low:.2f}, {100 * high:.2f}] (n=3)" == "87.52 [85.98, 89.06] (n=3)"
    assert ci.format(digits=3) == "0.875 [0.860, 0.891] (n=3)"


def test_identical_values_give_a_zero_width_interval():
    ci = mean_ci([0.5, 0.5, 0.5])
    assert (ci.low, ci.mean, ci.high, ci.std) == (0.5, 0.5, 0.5, 0.0)


def test_bad_level_names_the_key():
    with pytest.raises(ValueError, match="level=95 must lie in"):
        mean_ci([1.0, 2.0, 3.0], level=95)


# ------------------------------------------------------------------------------ paired_difference


def test_paired_difference_equals_scipy_ttest_rel():
    seeds = sorted(CAND)
    c, r = [CAND[s] for s in seeds], [REF[s] for s in seeds]
    d = np.subtract(c, r)
    got = paired_difference(CAND, REF)
    assert got.n == 4 and got.seeds == (0, 1, 2, 3)
    assert got.mean == pytest.approx(d.mean(), rel=1e-12)
    assert (got.low, got.high) == pytest.approx(scipy_interval(d), rel=1e-10)
    assert got.p_value == pytest.approx(scipy_stats.ttest_rel(c, r).pvalue, rel=1e-10)
    # d = 0.0051, 0.0035, 0.0054, 0.0041: every seed favours the candidate, by a steady margin.
    assert got.low > 0 and got.p_value < 0.05
    assert (got.outcome, got.verdict) == ("better", "better")
    assert got.only_candidate == got.only_reference == () and got.dropped == ""


def test_paired_difference_the_other_way_round_is_worse():
    got = paired_difference(REF, CAND)
    assert (got.outcome, got.verdict) == ("worse", "worse")
    assert got.high < 0


def test_lower_is_better_flips_the_verdict():
    # For a loss-like metric (lower is better) a positive difference is worse.
    assert paired_difference(CAND, REF, higher_is_better=False).outcome == "worse"
    assert paired_difference(REF, CAND, higher_is_better=False).outcome == "better"


def test_not_distinguishable_when_the_interval_holds_zero():
    cand, ref = {0: 0.870, 1: 0.880, 2: 0.860}, {0: 0.872, 1: 0.871, 2: 0.866}
    got = paired_difference(cand, ref)
    low, high = scipy_interval(np.subtract(list(cand.values()), list(ref.values())))
    assert low < 0 < high
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-10)
    assert got.p_value == pytest.approx(scipy_stats.ttest_rel(list(cand.values()), list(ref.values())).pvalue)
    assert (got.outcome, got.verdict) == ("indistinguishable", "not distinguishable at n=3 seeds")


def test_a_seed_missing_on_one_side_is_left_out_and_named():
    cand = {s: v for s, v in CAND.items() if s != 3}  # the candidate's seed 3 never finished
    got = paired_difference(cand, REF)
    on_shared = paired_difference(cand, {s: REF[s] for s in (0, 1, 2)})
    assert got.seeds == (0, 1, 2) and got.n == 3
    assert got.only_reference == (3,) and got.only_candidate == ()
    assert got.dropped == "seed 3 missing for the candidate"
    assert (got.mean, got.low, got.high, got.p_value) == (
        on_shared.mean,
        on_shared.low,
        on_shared.high,
        on_shared.p_value,
    )
    c, r = [CAND[s] for s in (0, 1, 2)], [REF[s] for s in (0, 1, 2)]
    assert got.p_value == pytest.approx(scipy_stats.ttest_rel(c, r).pvalue, rel=1e-10)
    assert got.format(100).endswith("; seed 3 missing for the candidate")
    assert got.to_json()["only_reference"] == [3]


def test_nan_counts_as_missing_and_extra_candidate_seeds_are_named():
    cand = {**CAND, 1: math.nan, 7: 0.9, 8: 0.91}
    got = paired_difference(cand, REF)
    assert got.seeds == (0, 2, 3)
    assert got.only_candidate == (7, 8) and got.only_reference == (1,)
    assert got.dropped == "seed 1 missing for the candidate; seeds 7, 8 missing for the reference"


@pytest.mark.parametrize("shared", [0, 1, 2])
def test_too_few_paired_seeds(shared):
    cand = {s: CAND[s] for s in range(shared)}
    got = paired_difference(cand, REF)
    assert got.n == shared
    assert (got.outcome, got.verdict) == ("too_few", f"too few paired seeds (n={shared}; a comparison needs 3)")
    assert math.isnan(got.p_value) and math.isnan(got.low)


def test_two_paired_seeds_show_their_differences():
    cand, ref = {0: 0.90, 1: 0.91}, {0: 0.80, 1: 0.815}
    got = paired_difference(cand, ref)
    assert got.n == 2 and got.differences == pytest.approx((0.10, 0.095))
    assert got.format(100) == "+9.75 (n=2: +10.00, +9.50): too few paired seeds (n=2; a comparison needs 3)"


def test_below_the_test_sets_resolution():
    one_image = resolution_of(10_000)
    ref = {0: 0.8700, 1: 0.8650, 2: 0.8760}
    # Differences of a fraction of one image, steady across seeds: the t-test alone calls it "better".
    cand = {0: 0.870020, 1: 0.865030, 2: 0.876025}
    assert paired_difference(cand, ref).outcome == "better"
    got = paired_difference(cand, ref, resolution=one_image)
    assert -one_image < got.low and got.high < one_image
    assert got.outcome == "below_resolution"
    assert got.verdict == "below the test set's resolution (< 1 test image) at n=3 seeds"
    # Several images apart, the resolution does not matter.
    assert paired_difference(CAND, REF, resolution=one_image).outcome == "better"


def test_interval_excludes_zero_exactly_when_the_t_test_rejects():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(3, 8))
        ref = rng.normal(0.87, 0.01, n)
        cand = ref + rng.normal(0.003, 0.004, n)
        got = paired_difference(dict(enumerate(cand)), dict(enumerate(ref)))
        assert (got.outcome in ("better", "worse")) == (scipy_stats.ttest_rel(cand, ref).pvalue < 0.05)


def test_paired_format():
    cand, ref = {0: 0.870, 1: 0.880, 2: 0.860}, {0: 0.872, 1: 0.871, 2: 0.866}
    got = paired_difference(cand, ref)
    p = scipy_stats.ttest_rel(list(cand.values()), list(ref.values())).pvalue
    assert got.format(100) == (
        f"{100 * got.mean:+.2f} [{100 * got.low:+.2f}, {100 * got.high:+.2f}], p={p:.2g} (n=3): "
        "not distinguishable at n=3 seeds"
    )
    assert paired_difference({0: 0.9}, {0: 0.8}).format(100) == (
        "+10.00 (n=1: +10.00): too few paired seeds (n=1; a comparison needs 3)"
    )


def test_resolution_of():
    assert resolution_of(10_000) == 1e-4
    assert resolution_of(np.int64(200)) == 0.005
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="n_test="):
            resolution_of(bad)
    with pytest.raises(ValueError, match="resolution=0 must be > 0"):
        paired_difference(CAND, REF, resolution=0)


# -------------------------------------------------------------------------------------------- ranks


def iv(mean, half, n=3):
    return Interval(mean, mean - half, mean + half, n, math.nan)


def test_rank_ties_where_intervals_overlap_the_one_above():
    intervals = {
        "ce": iv(0.875, 0.005),  # [0.870, 0.880]
        "hinge": iv(0.877, 0.002),  # [0.875, 0.879]: best mean, overlaps ce
        "mse": iv(0.860, 0.004),  # [0.856, 0.864]: clear of ce
        "mae": iv(0.800, 0.010),  # [0.790, 0.810]
        "bce": iv(0.803, 0.001),  # [0.802, 0.804]: inside mae's interval
    }
    assert rank_with_ties(intervals) == {"hinge": 1, "ce": 1, "mse": 3, "bce": 4, "mae": 4}


def test_rank_ties_chain_and_lower_is_better():
    # a [0.0, 0.2], b [0.15, 0.35], c [0.3, 0.5]: a and c do not overlap, but the chain ties all three.
    intervals = {"a": iv(0.1, 0.1), "b": iv(0.25, 0.1), "c": iv(0.4, 0.1), "d": iv(0.9, 0.05)}
    assert rank_with_ties(intervals) == {"d": 1, "c": 2, "b": 2, "a": 2}
    assert rank_with_ties(intervals, higher_is_better=False) == {"a": 1, "b": 1, "c": 1, "d": 4}


def test_groups_a_paired_test_told_apart_never_share_a_rank():
    """The fair_comparison report's case: ce (74 seeds) [82.35, 82.50], bce [82.09, 82.45] and hinge [81.92, 82.20]
    chain into one tie by their intervals, but the paired comparisons decided bce and hinge worse than ce: they
    rank below it (together), while mse, undecided against ce, still shares its rank."""
    intervals = {
        "mse": Interval(0.8259, 0.8170, 0.8347, 3, math.nan),
        "ce": Interval(0.8243, 0.8235, 0.8250, 74, math.nan),
        "bce": Interval(0.8227, 0.8209, 0.8245, 12, math.nan),
        "hinge": Interval(0.8206, 0.8192, 0.8220, 17, math.nan),
    }
    assert rank_with_ties(intervals) == {"mse": 1, "ce": 1, "bce": 1, "hinge": 1}
    apart = [frozenset(("bce", "ce")), frozenset(("hinge", "ce"))]
    assert rank_with_ties(intervals, apart=apart) == {"mse": 1, "ce": 1, "bce": 3, "hinge": 3}


def test_rank_one_seed_ties_with_its_neighbours_and_no_values_get_no_rank():
    intervals = {
        "ce": mean_ci([0.90, 0.91, 0.92]),
        "mse": mean_ci([0.80]),  # one seed: no interval, cannot be told apart from its neighbours
        "mae": mean_ci([0.60, 0.61, 0.62]),
        "bce": mean_ci([]),
    }
    assert rank_with_ties(intervals) == {"ce": 1, "mse": 1, "mae": 1}


def test_rank_orders_equal_means_by_name():
    intervals = {"b": iv(0.5, 0.0), "a": iv(0.5, 0.0), "c": iv(0.4, 0.0)}
    ranks = rank_with_ties(intervals)
    assert ranks == {"a": 1, "b": 1, "c": 3}
    assert list(ranks) == ["a", "b", "c"]


# ------------------------------------------------------------------------------------------- tuning


def lr(x):
    return setting_of({"optimizer.lr": x})


def grid_trials():
    """ce: lr 1e-3 has the best mean (0.86) though lr 1e-2 has the best single run (0.90).
    mae: one run at lr 1e-1 has no validation value (diverged); lr 1e-1 still wins on its other two."""
    vals = {
        ("ce", 1e-3): [0.86, 0.85, 0.87],
        ("ce", 1e-2): [0.90, 0.80, 0.81],
        ("ce", 1e-1): [0.70, 0.71, 0.72],
        ("mae", 1e-3): [0.50, 0.52, 0.51],
        ("mae", 1e-2): [0.70, 0.69, 0.71],
        ("mae", 1e-1): [0.80, math.nan, 0.79],
    }
    return [
        Trial(group, lr(rate), seed, v, f"{group}-{rate}-s{seed}")
        for (group, rate), vs in vals.items()
        for seed, v in enumerate(vs)
    ]


def test_select_tuned_picks_the_best_mean_validation_value():
    tuned = select_tuned(grid_trials())
    ce, mae = tuned["ce"], tuned["mae"]
    assert ce.setting == "optimizer.lr=0.001" and ce.val == pytest.approx(0.86)
    assert ce.run_ids == ("ce-0.001-s0", "ce-0.001-s1", "ce-0.001-s2") and ce.seeds == (0, 1, 2)
    assert mae.setting == "optimizer.lr=0.1" and mae.val == pytest.approx(0.795)  # NaN left out of the mean
    assert mae.run_ids == ("mae-0.1-s0", "mae-0.1-s1", "mae-0.1-s2")
    for t in (ce, mae):
        assert t.n_settings == 3 and t.budget == 9
        assert t.seeds_per_setting == {lr(1e-3): 3, lr(1e-2): 3, lr(1e-1): 3}
    assert ("optimizer.lr=0.1", pytest.approx(0.795), 2, 3) in mae.candidates
    assert mae.to_json()["candidates"][0] == {
        "setting": "optimizer.lr=0.001",
        "val": pytest.approx(0.51),
        "n_val": 3,
        "runs": 3,
    }


def test_select_tuned_for_lower_is_better():
    tuned = select_tuned(grid_trials(), higher_is_better=False)
    assert tuned["ce"].setting == lr(1e-1) and tuned["mae"].setting == lr(1e-3)


def test_select_tuned_reports_an_unequal_budget():
    trials = grid_trials() + [Trial("ce", lr(1.0), 0, 0.1, "ce-1-s0")]
    tuned = select_tuned(trials)
    assert tuned["ce"].budget == 10 and tuned["ce"].n_settings == 4 and tuned["mae"].budget == 9
    assert tuned["ce"].seeds_per_setting[lr(1.0)] == 1


def test_select_tuned_ties_are_deterministic():
    # Equal means: more runs with a value first, then the first setting in text order; input order never matters.
    trials = [
        Trial("ce", "optimizer.lr=0.01", 0, 0.8, "b0"),
        Trial("ce", "optimizer.lr=0.01", 1, 0.8, "b1"),
        Trial("ce", "optimizer.lr=0.1", 0, 0.8, "c0"),
        Trial("ce", "optimizer.lr=0.1", 1, 0.8, "c1"),
        Trial("ce", "optimizer.lr=0.001", 0, 0.8, "a0"),
        Trial("ce", "optimizer.lr=0.001", 1, math.nan, "a1"),
    ]
    for seed in range(5):
        shuffled = trials[:]
        random.Random(seed).shuffle(shuffled)
        assert select_tuned(shuffled)["ce"].setting == "optimizer.lr=0.01"


def test_select_tuned_with_no_validation_value_chooses_nothing():
    tuned = select_tuned([Trial("mae", lr(1.0), s, math.nan, f"r{s}") for s in range(3)])["mae"]
    assert tuned.setting is None and math.isnan(tuned.val) and tuned.run_ids == ()
    assert tuned.budget == 3 and tuned.n_settings == 1


def test_select_tuned_rejects_a_seed_counted_twice():
    trials = grid_trials() + [Trial("ce", lr(1e-3), 1, 0.99, "duplicate")]
    with pytest.raises(ValueError, match=r"group='ce' setting='optimizer.lr=0.001' seed=1 appears twice"):
        select_tuned(trials)


def test_setting_of_is_canonical():
    assert setting_of({"optimizer.lr": 0.001, "loss.criterion.q": 0.7}) == "loss.criterion.q=0.7, optimizer.lr=0.001"
    assert setting_of({"b": 1, "a": 2}) == setting_of({"a": 2, "b": 1})
    assert setting_of({}) == ""
