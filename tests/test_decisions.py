"""lossbench.decisions against libraries, closed forms and simulation: the two-look design's boundary and
p-values, Holm over a family, the seeds a comparison needs, and the error rate and power of the whole procedure
(look, extend the undecided ones as planned, look again) on simulated families."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from lossbench import decisions
from lossbench.stats import (
    BETTER,
    EQUIVALENT,
    INDISTINGUISHABLE,
    TOO_FEW,
    WORSE,
    paired_difference,
    probability_of_improvement,
)


def evidence(first, second=(), start=0):
    """A comparison's evidence from its stage-1 and stage-2 differences (the reference at 0.8 on every seed)."""
    diffs = [*first, *second]
    seeds = list(range(start, start + len(diffs)))
    candidate = {s: 0.8 + d for s, d in zip(seeds, diffs)}
    paired = paired_difference(candidate, dict.fromkeys(seeds, 0.8))
    stage = {s: 2 if i >= len(first) else 1 for i, s in enumerate(seeds)}
    return decisions.evidence(paired, stage)


def test_the_quadrature_equals_scipys_bivariate_normal():
    rho = decisions.WEIGHTS[0]
    mvn = scipy_stats.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]])
    for z in (0.3, 1.0, 1.96, 2.5, 4.0):
        assert decisions.both_inside(z) == pytest.approx(mvn.cdf([z, z], lower_limit=[-z, -z]), abs=1e-6)


def test_pococks_boundary_for_two_looks():
    # Pocock (1977), two equally weighted looks, two-sided alpha 0.05: c = 2.178, nominal p 0.0294 per look.
    c = decisions.boundary(0.05)
    assert c == pytest.approx(2.178, abs=5e-4)
    assert 2 * scipy_stats.norm.sf(c) == pytest.approx(0.0294, abs=1e-4)
    assert decisions.sequential_p(c) == pytest.approx(0.05, abs=1e-6)
    assert decisions.sequential_p(0.0) == 1.0 and decisions.sequential_p(math.inf) == 0.0
    assert decisions.sequential_p(1.0, 2.5) == decisions.sequential_p(2.5) < decisions.sequential_p(1.0)


def test_a_stage_score_is_the_t_tests_probability_as_a_normal_score():
    d = [0.01, 0.02, 0.015, 0.03]
    t = scipy_stats.ttest_1samp(d, 0).statistic
    assert decisions.stage_z(d) == pytest.approx(scipy_stats.norm.ppf(scipy_stats.t.cdf(t, 3)))
    assert 2 * scipy_stats.norm.sf(abs(decisions.stage_z(d))) == pytest.approx(scipy_stats.ttest_1samp(d, 0).pvalue)
    assert decisions.stage_z([0.01, 0.01, 0.01]) == math.inf


def test_holm_over_the_family_equals_statsmodels():
    family = [
        evidence(d) for d in ([0.03, 0.031, 0.029], [0.001, -0.002, 0.003], [-0.02, -0.021, -0.019], [0.01, 0.0, 0.02])
    ]
    decided = decisions.decide(family)
    p_seq = [decisions.sequential_p(decisions.stage_z(e.stages[0])) for e in family]
    expected = multipletests(p_seq, alpha=0.05, method="holm")[1]
    assert [d.p_holm for d in decided] == pytest.approx(list(expected))
    assert [d.outcome for d in decided] == [BETTER, INDISTINGUISHABLE, WORSE, INDISTINGUISHABLE]
    assert decided[0].verdict.startswith("better (Holm-adjusted p=") and decided[0].look == 1


def test_too_few_pairs_are_not_tested_and_not_counted_in_the_family():
    decided = decisions.decide([evidence([0.03, 0.031]), evidence([0.03, 0.031, 0.029])])
    assert decided[0].outcome == TOO_FEW and math.isnan(decided[0].p_holm)
    assert decided[1].p_holm == pytest.approx(decided[1].p_sequential), "a family of one: nothing to adjust"


def test_the_second_look_combines_both_stages():
    first, second = [0.004, -0.001, 0.006], [0.003, 0.005, 0.002, 0.006, 0.004]
    (d,) = decisions.decide([evidence(first, second)])
    z1, z2 = decisions.stage_z(first), decisions.stage_z(second)
    assert d.look == 2 and d.z == pytest.approx((z1, (z1 + z2) / math.sqrt(2)))
    assert d.p_sequential == pytest.approx(decisions.sequential_p(z1, (z1 + z2) / math.sqrt(2)))
    assert d.stage_seeds == ((0, 1, 2), (3, 4, 5, 6, 7))


def test_an_undecided_comparison_is_planned_and_its_plan_is_the_conditional_power():
    first = [0.004, -0.001, 0.006]
    (d,) = decisions.decide([evidence(first)], resolution=1e-4)
    plan = d.plan
    assert d.outcome == INDISTINGUISHABLE and plan.source == "observed"
    assert plan.effect == pytest.approx(np.mean(first)) and plan.alpha == 0.05
    # The spread planned for: the 80 % upper confidence limit of the sample's, s·√((n−1)/χ²_{0.2, n−1}).
    spread = float(np.std(first, ddof=1)) * math.sqrt(2 / scipy_stats.chi2.ppf(0.2, 2))
    assert decisions.planning_spread(np.asarray(first)) == pytest.approx(spread)
    z1 = decisions.stage_z(first)
    power = decisions.conditional_power(z1, plan.effect, spread, plan.extra, 0.05)
    assert power == pytest.approx(plan.power) and power >= decisions.POWER
    assert decisions.conditional_power(z1, plan.effect, spread, plan.extra - 1, 0.05) < decisions.POWER
    assert f"{plan.extra} more seeds decide a 0.30 pp difference with" in d.verdict


def test_with_no_first_look_the_plan_is_a_plain_t_tests_sample_size():
    """A stage 1 that says nothing (z1 = 0) leaves look 2 a t-test on the new seeds at the boundary's level: its
    power is statsmodels' for a one-sample t-test at level 2·(1 − Φ(√2·c)), as the combination makes it."""
    alpha = 0.05
    c = decisions.boundary(alpha)
    level = 2 * scipy_stats.norm.sf(math.sqrt(2) * c)
    for extra in (5, 12, 30):
        ours = decisions.conditional_power(0.0, 0.5, 1.0, extra, alpha)
        theirs = TTestPower().power(effect_size=0.5, nobs=extra, alpha=level, alternative="two-sided")
        assert ours == pytest.approx(theirs, abs=2e-3)


def test_a_minimum_effect_replaces_the_observed_one_and_below_resolution_cannot_be_decided():
    first = [0.004, -0.003, 0.006]  # interval [-0.9, +1.4] pp: not inside ±0.5 pp, so still to be decided
    (d,) = decisions.decide([evidence(first)], resolution=1e-4, min_effect=0.005)
    assert d.plan.source == "minimum effect" and d.plan.effect == pytest.approx(0.005)
    assert "(the minimum effect set)" in d.verdict
    (tiny,) = decisions.decide([evidence([0.00004, 0.00001, 0.00006])], resolution=1e-4)
    assert tiny.outcome == "below_resolution" and "cannot be decided" in tiny.verdict and tiny.plan is None


def test_an_interval_inside_the_minimum_effect_is_decided_equivalent():
    """[0.04, -0.01, 0.06] pp: its 95 % interval, 0.03 ± 4.30·0.021 = [-0.06, +0.12] pp, lies inside ±0.5 pp (the
    minimum effect set), so the comparison is decided: equivalent, with no plan. Without a minimum effect the same
    evidence stays open, and so does one whose interval reaches past it."""
    first = [0.0004, -0.0001, 0.0006]
    paired = paired_difference({s: 0.8 + d for s, d in enumerate(first)}, dict.fromkeys(range(3), 0.8))
    half = scipy_stats.t.ppf(0.975, 2) * np.std(first, ddof=1) / math.sqrt(3)
    assert (paired.low, paired.high) == pytest.approx((0.0003 - half, 0.0003 + half))
    assert -0.005 < paired.low and paired.high < 0.005
    (d,) = decisions.decide([evidence(first)], resolution=1e-4, min_effect=0.005)
    assert d.outcome == EQUIVALENT and d.plan is None
    assert d.verdict == "equivalent: within ±0.5 pp, the minimum effect set (95 % interval inside it, n=3)"
    (open_,) = decisions.decide([evidence(first)], resolution=1e-4)
    assert open_.outcome == INDISTINGUISHABLE and open_.plan.source == "observed"
    (hopeless,) = decisions.decide([evidence([0.0006, -0.0006, 0.0005])], resolution=1e-4)
    assert hopeless.plan.extra is None and "report.min_effect_pp: the smallest difference that matters" in (
        hopeless.verdict
    )
    (wide,) = decisions.decide([evidence(first)], resolution=1e-4, min_effect=0.001)
    assert wide.outcome == INDISTINGUISHABLE and wide.plan is not None


def test_the_conditional_power_is_what_simulation_finds():
    rng = np.random.default_rng(1)
    z1, effect, spread, extra = 1.2, 0.01, 0.02, 9
    promised = decisions.conditional_power(z1, effect, spread, extra, 0.05)
    c = decisions.boundary(0.05)
    draws = rng.normal(effect, spread, size=(20_000, extra))
    t = draws.mean(axis=1) / (draws.std(axis=1, ddof=1) / math.sqrt(extra))
    z2 = scipy_stats.norm.ppf(scipy_stats.t.cdf(t, extra - 1))
    found = np.mean(np.abs((z1 + z2) / math.sqrt(2)) > c)
    assert found == pytest.approx(promised, abs=3 * math.sqrt(promised * (1 - promised) / 20_000) + 1e-3)


def simulate_family(rng, effects, spread=0.01, first=3, min_effect=None):
    """One report's family: look 1 on ``first`` seeds, extend each undecided comparison as planned, look 2.
    Returns the decisions of both looks."""
    stage1 = [rng.normal(e, spread, first) for e in effects]
    look1 = decisions.decide([evidence(d) for d in stage1], min_effect=min_effect)
    stage2 = [
        rng.normal(e, spread, d.plan.extra) if d.plan is not None and d.plan.extra is not None else np.array([])
        for e, d in zip(effects, look1)
    ]
    look2 = decisions.decide([evidence(a, b) for a, b in zip(stage1, stage2)], min_effect=min_effect)
    return look1, look2


@pytest.mark.slow
def test_null_families_keep_the_family_wise_error_over_both_looks():
    """600 families of 20 comparisons with no difference anywhere, each looked at, extended as its report asked,
    and looked at again: the share of families with any "better"/"worse" stays at or below 0.05 (within its
    Monte-Carlo error: 3 standard errors)."""
    gc.freeze()  # statsmodels' Holm runs gc.collect(): over a frozen heap it is cheap, as in lossbench's processes
    rng = np.random.default_rng(7)
    families = 600
    wrong = 0
    for _ in range(families):
        look1, look2 = simulate_family(rng, [0.0] * 20)
        wrong += any(d.outcome in (BETTER, WORSE) for d in [*look1, *look2])
    rate = wrong / families
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / families), rate


@pytest.mark.slow
@pytest.mark.parametrize("min_effect", [None, 0.01])
def test_a_real_difference_is_found_at_the_promised_power(min_effect):
    """A true difference of 1 pp (spread 1 pp per seed) on 3 first seeds: of the families left undecided at look 1,
    the share decided at look 2 is at least the power their plans promised (3 standard errors below at worst):
    planned for the difference observed, or for the minimum effect set to the truth."""
    gc.freeze()
    rng = np.random.default_rng(11)
    promised, found = [], []
    for _ in range(300):
        (d1,), (d2,) = simulate_family(rng, [0.01], spread=0.01, first=3, min_effect=min_effect)
        if d1.outcome == INDISTINGUISHABLE and d1.plan is not None and d1.plan.extra is not None:
            promised.append(d1.plan.power)
            found.append(d2.outcome == BETTER)
    assert len(found) > 80
    expected = float(np.mean(promised))
    assert expected >= decisions.POWER
    assert np.mean(found) >= expected - 3 * math.sqrt(expected * (1 - expected) / len(found)), (
        np.mean(found),
        expected,
    )


def test_probability_of_improvement_is_the_mann_whitney_share():
    cand, ref = [0.91, 0.92, 0.90, 0.95], [0.90, 0.89, 0.93]
    wins = sum((c > r) + 0.5 * (c == r) for c in cand for r in ref) / 12
    estimate, low, high = probability_of_improvement(cand, ref)
    assert estimate == pytest.approx(wins) and 0 <= low <= estimate <= high <= 1
    few = probability_of_improvement([0.9, 0.9], [0.8])
    assert few[0] == 1.0 and math.isnan(few[1]) and math.isnan(few[2]), "no interval below 3 seeds a side"


def test_probability_of_improvement_keeps_its_width_when_one_side_wins_every_pair():
    """3 runs against 3, every candidate below every reference: the estimate is 0, and its interval is Newcombe's
    method 5, [0, θ] with (0 - θ)² = z² V(θ), here θ ≈ 0.50 by hand, never the bootstrap's [0, 0]."""
    estimate, low, high = probability_of_improvement([0.80, 0.81, 0.82], [0.83, 0.84, 0.85])
    theta, z = 0.5, 1.959964
    by_hand = theta * (1 - theta) / 9 * (1 + 2 * (1 - theta) / (2 - theta) + 2 * theta / (1 + theta))
    assert math.sqrt(by_hand) * z == pytest.approx(0.499, abs=0.001)
    assert (estimate, low) == (0.0, 0.0) and high == pytest.approx(0.499, abs=0.001)
    mirrored = probability_of_improvement([0.83, 0.84, 0.85], [0.80, 0.81, 0.82])
    assert mirrored == pytest.approx((1.0, 1 - high, 1.0))


def test_probability_of_improvement_interval_covers_the_truth_at_its_level():
    """Normal runs shifted by 0.5 sd, 5 seeds a side: the true P(candidate beats reference) is Φ(0.5/√2); the 95 %
    interval holds it in at least ~93 % of 1,000 simulated reports (Newcombe reports method 5 close to nominal)."""
    from scipy.stats import norm

    rng = np.random.default_rng(7)
    truth = norm.cdf(0.5 / math.sqrt(2))
    hits = 0
    for _ in range(1000):
        _, low, high = probability_of_improvement(rng.normal(0.5, 1, 5), rng.normal(0, 1, 5))
        hits += low <= truth <= high
    assert hits >= 930, hits
