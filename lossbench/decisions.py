r"""A comparison is a decision: a report's paired comparisons decided together, with one extension allowed.

A report that compares k losses with a reference makes k claims, and "not distinguishable at n=3" should end in
a way forward, not a shrug. Three parts, each from a library where one does it:

**Multiplicity.** The family-wise error rate (the chance of at least one false "better" or "worse" among the
k claims) is held at :data:`ALPHA` by Holm's step-down procedure (statsmodels' ``multipletests``), which
needs no assumption about how the comparisons depend on each other (they share the reference's runs).

**Two looks, one error rate.** A report may be read now (look 1) and once more after the sweep was extended
with the seeds it asked for (look 2). Deciding at both looks at the plain level would raise the error rate, so
the comparisons follow a two-stage group-sequential design fixed in advance: each stage's paired t statistic
is made a standard normal score, ``z = Φ⁻¹(F_t(t; n−1))`` (exactly N(0, 1) when there is no difference,
whatever the stage's size), the two stages are combined with equal weights, ``z_c = (z₁ + z₂)/√2`` (the
inverse-normal combination test of Lehmacher & Wassmer, 1999: valid whatever stage 2's size, even when it was
chosen from stage 1's data), and a comparison is decided when ``|z₁|`` or ``|z_c|`` crosses one boundary ``c``
(Pocock's, 1977: the same at both looks) with ``P(max(|Z₁|, |Z_c|) > c) = α`` under no difference. Its
*sequential p-value*, :func:`sequential_p`, is that probability at the observed maximum; Holm runs on these, so
the family holds α over both looks together (the graphical group-sequential procedure of Maurer & Bretz, 2013,
with Holm's weights). The price: at look 1 a comparison needs p < 0.0294 from its t-test (for α = 0.05, one
comparison), not 0.05. A third look is not covered.

**Seeds needed.** For each undecided comparison at look 1: the fewest extra paired seeds with which look 2
decides, with :data:`POWER` probability, a difference of the size observed at look 1 (or the smallest the user
cares about), given look 1's own score and spread (the conditional power of the combination test, from
scipy's noncentral t), at the level Holm would give it if nothing else were decided (``α / k``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize
from scipy import stats as _stats
from statsmodels.stats.multitest import multipletests

from lossbench.stats import (
    BELOW_RESOLUTION,
    BETTER,
    EQUIVALENT,
    INDISTINGUISHABLE,
    MIN_SEEDS,
    TOO_FEW,
    WORSE,
    Paired,
    paired_t,
)

ALPHA = 0.05
"""The family-wise error rate every report holds, over its comparisons and both looks."""
POWER = 0.8
"""The chance with which the seeds a report asks for decide the difference it plans for."""
MAX_EXTRA_SEEDS = 100
"""A comparison that needs more extra seeds than this is called undecidable at this budget."""
WEIGHTS = (math.sqrt(0.5), math.sqrt(0.5))
"""The two stages' weights in the combination test, fixed before any data (equal)."""
PROCEDURE = (
    f"Holm over the family, on sequential p-values of a two-look group-sequential design (Pocock boundary, "
    f"inverse-normal combination of the stages' paired t-tests); family-wise error {ALPHA:g} over both looks"
)


# ------------------------------------------------------------------------------- the two-look design


def stage_z(differences: Sequence[float]) -> float:
    """One stage's paired t statistic as a standard normal score ``Φ⁻¹(F_t(t; n−1))`` (signed; ±inf when every
    difference is equal and non-zero). Needs at least 2 differences."""
    d = np.asarray(differences, dtype=float)
    t = paired_t(d)[0]
    if math.isinf(t):
        return t
    return float(_stats.norm.ppf(_stats.t.cdf(t, df=d.size - 1)))


_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(96)  # Gauss-Legendre quadrature on [-1, 1]


def both_inside(z: float | np.ndarray) -> float | np.ndarray:
    """P(|Z₁| ≤ z and |Z_c| ≤ z) for the design's bivariate normal (correlation ρ = the first weight):
    ``∫_{-z}^{z} φ(x) [Φ((z − ρx)/√(1−ρ²)) − Φ((−z − ρx)/√(1−ρ²))] dx`` by 96-point Gauss-Legendre quadrature,
    vectorised over ``z`` (tests/test_decisions.py holds it to scipy's ``multivariate_normal.cdf``)."""
    rho = WEIGHTS[0]
    z = np.asarray(z, dtype=float)
    x = z[..., None] * _NODES  # quadrature points on [-z, z]
    s = math.sqrt(1 - rho**2)
    inner = _stats.norm.cdf((z[..., None] - rho * x) / s) - _stats.norm.cdf((-z[..., None] - rho * x) / s)
    out = z * np.sum(_WEIGHTS * _stats.norm.pdf(x) * inner, axis=-1)
    return float(out) if out.ndim == 0 else out


def sequential_p(z1: float, zc: float | None = None) -> float:
    """The two-look design's p-value: ``P(max(|Z₁|, |Z_c|) ≥ m)`` with ``m`` the largest score observed so far
    (``z1`` at look 1; ``max(|z1|, |zc|)`` at look 2), when there is no difference."""
    observed = max(abs(z1), abs(zc) if zc is not None else 0.0)
    if math.isinf(observed):
        return 0.0
    return min(1.0, max(0.0, 1.0 - both_inside(observed)))


@functools.lru_cache(maxsize=256)
def boundary(alpha: float) -> float:
    """Pocock's boundary ``c`` for level ``alpha``: ``P(max(|Z₁|, |Z_c|) > c) = alpha``."""
    return float(optimize.brentq(lambda c: (1.0 - both_inside(c)) - alpha, 0.5, 12.0, xtol=1e-10))


def conditional_power(z1: float, effect: float, spread: float, extra, alpha: float):
    """The chance that look 2 decides, given look 1's score ``z1``, if the true mean difference is ``effect``
    with per-seed spread ``spread`` and ``extra`` new paired seeds (a number or an array of them), at ``alpha``.

    Look 2 decides when ``|w₁z₁ + w₂z₂| > c``; with ``T₂`` the new seeds' t statistic (noncentral t with
    ``extra − 1`` degrees of freedom and noncentrality ``effect·√extra / spread``) and ``z₂ = Φ⁻¹(F_t(T₂))``,
    that is ``T₂`` above ``F_t⁻¹(Φ((c − w₁z₁)/w₂))`` or below ``F_t⁻¹(Φ((−c − w₁z₁)/w₂))``.
    """
    n = np.asarray(extra, dtype=float)
    if not spread > 0 or np.any(n < 2):
        return math.nan if n.ndim == 0 else np.full(n.shape, math.nan)
    c, (w1, w2), df = boundary(alpha), WEIGHTS, n - 1
    high = _stats.t.ppf(_stats.norm.cdf((c - w1 * z1) / w2), df)
    low = _stats.t.ppf(_stats.norm.cdf((-c - w1 * z1) / w2), df)
    shift = effect * np.sqrt(n) / spread
    power = _stats.nct.sf(high, df, shift) + _stats.nct.cdf(low, df, shift)
    return float(power) if power.ndim == 0 else power


# ------------------------------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class Plan:
    """How many more paired seeds a comparison needs to be decided at look 2 (``extra`` None: it cannot be)."""

    extra: int | None
    effect: float
    """The mean difference planned for (a fraction, like the differences)."""
    source: str
    """``observed`` (look 1's mean difference) or ``minimum effect`` (the user's)."""
    power: float
    """The chance that ``extra`` seeds decide it (conditional power), NaN when ``extra`` is None."""
    alpha: float
    reason: str = ""
    """Why it cannot be decided, when ``extra`` is None."""

    def to_json(self) -> dict[str, object]:
        return {
            "extra_seeds": self.extra,
            "effect": self.effect,
            "effect_from": self.source,
            "power": None if math.isnan(self.power) else self.power,
            "alpha": self.alpha,
            "reason": self.reason or None,
        }


@dataclass(frozen=True)
class Decision:
    """One comparison as its family decided it: the pooled paired difference (every seed, its 95 % interval),
    the look it was decided at, the sequential and Holm-adjusted p-values, the outcome, and a plan when
    undecided at look 1."""

    paired: Paired
    look: int
    z: tuple[float, ...]
    """``(z₁,)`` at look 1, ``(z₁, z_c)`` at look 2."""
    p_sequential: float
    p_holm: float
    outcome: str
    verdict: str
    plan: Plan | None = None
    stage_seeds: tuple[tuple[Hashable, ...], ...] = ()
    """The paired seeds of each stage."""

    def to_json(self) -> dict[str, object]:
        return {
            **replace(self.paired, outcome=self.outcome, verdict=self.verdict, p_adjusted=self.p_holm).to_json(),
            "look": self.look,
            "z": [None if math.isinf(z) else z for z in self.z],
            "p_sequential": None if math.isnan(self.p_sequential) else self.p_sequential,
            "p_holm": None if math.isnan(self.p_holm) else self.p_holm,
            "procedure": PROCEDURE,
            "stage_seeds": [list(s) for s in self.stage_seeds],
            "plan": None if self.plan is None else self.plan.to_json(),
        }


@dataclass(frozen=True)
class Evidence:
    """What one comparison brings to its family: the pooled paired difference and each stage's differences."""

    paired: Paired
    stages: tuple[tuple[float, ...], ...]
    """Per stage (1, then 2), candidate minus reference on the seeds paired in that stage."""
    stage_seeds: tuple[tuple[Hashable, ...], ...]
    resolution: float | None = None
    """One test image's share of this comparison's test set (None: the family's, :func:`decide`'s argument)."""
    min_effect: float | None = None
    """This comparison's own equivalence margin, in the differences' unit (None: the family's ``min_effect``): a
    claim states one per prediction (lossbench.claims)."""


def evidence(
    paired: Paired, stage_of: Mapping[Hashable, int], resolution: float | None = None, min_effect: float | None = None
) -> Evidence:
    """Split a pooled paired difference by stage: a seed belongs to stage 2 when ``stage_of`` says so (either run
    of the pair was added by the extension), else to stage 1."""
    stages: dict[int, list[tuple[Hashable, float]]] = {1: [], 2: []}
    for seed, d in zip(paired.seeds, paired.differences):
        stages[2 if stage_of.get(seed, 1) >= 2 else 1].append((seed, d))
    return Evidence(
        paired,
        tuple(tuple(d for _, d in stages[k]) for k in (1, 2)),
        tuple(tuple(s for s, _ in stages[k]) for k in (1, 2)),
        resolution,
        min_effect,
    )


def _scores(e: Evidence) -> tuple[int, tuple[float, ...]]:
    first, second = e.stages
    if len(first) < MIN_SEEDS:
        return 0, ()
    z1 = stage_z(first)
    if len(second) < 2:
        return 1, (z1,)
    w1, w2 = WEIGHTS
    return 2, (z1, w1 * z1 + w2 * stage_z(second))


def decide(
    family: Sequence[Evidence],
    resolution: float | None = None,
    min_effect: float | None = None,
    alpha: float = ALPHA,
    higher_is_better: bool = True,
) -> list[Decision]:
    """Decide every comparison of a report at once (Holm over the testable ones), and plan the undecided ones.

    ``resolution``: one test image's share (a smaller difference cannot be told apart by this test set);
    ``min_effect``: the smallest difference the user cares about (a fraction), which plans replace the observed
    difference with.
    """
    scored = [_scores(e) for e in family]
    testable = [i for i, (look, _) in enumerate(scored) if look > 0]
    p_seq = {i: sequential_p(*scored[i][1]) for i in testable}
    p_holm: dict[int, float] = {}
    if testable:
        reject, adjusted, _, _ = multipletests([p_seq[i] for i in testable], alpha=alpha, method="holm")
        p_holm = {i: float(a) for i, a in zip(testable, adjusted)}
    open_count = sum(1 for i in testable if p_holm[i] > alpha)
    decisions = []
    for i, e in enumerate(family):
        look, z = scored[i]
        decision = Decision(
            e.paired, look, z, p_seq.get(i, math.nan), p_holm.get(i, math.nan), TOO_FEW, "", stage_seeds=e.stage_seeds
        )
        finest = e.resolution if e.resolution is not None else resolution
        margin = e.min_effect if e.min_effect is not None else min_effect
        decisions.append(_judged(decision, e, finest, margin, alpha, open_count, higher_is_better))
    return decisions


def _judged(
    d: Decision,
    e: Evidence,
    resolution: float | None,
    min_effect: float | None,
    alpha: float,
    open_count: int,
    higher_is_better: bool,
) -> Decision:
    paired, n = d.paired, d.paired.n
    if d.look == 0:
        return replace(d, outcome=TOO_FEW, verdict=f"too few paired seeds (n={n}; a comparison needs {MIN_SEEDS})")
    if d.p_holm <= alpha:
        outcome = BETTER if (max(d.z, key=abs) > 0) == higher_is_better else WORSE
        return replace(d, outcome=outcome, verdict=f"{outcome} (Holm-adjusted p={d.p_holm:.2g}, n={n})")
    if resolution is not None and -resolution < paired.low and paired.high < resolution:
        text = f"below the test set's resolution (< 1 test image) at n={n}: cannot be decided"
        return replace(d, outcome=BELOW_RESOLUTION, verdict=text)
    if min_effect is not None and -min_effect < paired.low and paired.high < min_effect:
        text = f"equivalent: within ±{min_effect * 100:.2g} pp, the minimum effect set (95 % interval inside it, n={n})"
        return replace(d, outcome=EQUIVALENT, verdict=text)
    if d.look == 2:
        text = f"not distinguishable after the sweep's one extension (n={n}): smaller than this design resolves"
        return replace(d, outcome=INDISTINGUISHABLE, verdict=text)
    plan = seeds_needed(e.stages[0], d.z[0], max(1, open_count), resolution, min_effect, alpha)
    return replace(d, outcome=INDISTINGUISHABLE, verdict=_undecided_text(n, plan), plan=plan)


def _undecided_text(n: int, plan: Plan) -> str:
    if plan.extra is None:
        return f"not distinguishable at n={n}: {plan.reason}"
    size = f"{abs(plan.effect) * 100:.2f} pp" + (" (the minimum effect set)" if plan.source == "minimum effect" else "")
    power = f"{plan.power * 100:.0f} %"
    return f"not distinguishable at n={n}; {plan.extra} more seeds decide a {size} difference with {power} power"


SPREAD_CONFIDENCE = 0.8
"""Plans use this upper confidence limit of stage 1's spread (Browne, 1995): a spread from three seeds is often
too small, and a plan from it would promise more power than the seeds deliver."""


def planning_spread(differences: np.ndarray) -> float:
    """The spread a plan assumes: the :data:`SPREAD_CONFIDENCE` upper confidence limit of the standard deviation of
    ``differences``, ``s·√((n−1) / χ²_{1−0.8, n−1})`` (NaN below 2 values)."""
    n = differences.size
    if n < 2:
        return math.nan
    s = float(differences.std(ddof=1))
    return s * math.sqrt((n - 1) / _stats.chi2.ppf(1 - SPREAD_CONFIDENCE, n - 1))


def seeds_needed(
    first: Sequence[float],
    z1: float,
    open_count: int,
    resolution: float | None = None,
    min_effect: float | None = None,
    alpha: float = ALPHA,
) -> Plan:
    """The fewest extra paired seeds (at least :data:`MIN_SEEDS`) with which look 2 decides, with :data:`POWER`
    probability, the planned difference: ``min_effect`` if given (in either direction), else stage 1's mean
    difference, with stage 1's spread, at Holm's first level among ``open_count`` undecided comparisons
    (``alpha / open_count``), assuming the spread :func:`planning_spread` (an upper limit of stage 1's, so the
    promise holds more often than not)."""
    d = np.asarray(first, dtype=float)
    spread = planning_spread(d)
    observed = float(d.mean()) if d.size else math.nan
    source = "minimum effect" if min_effect is not None else "observed"
    effect = abs(min_effect) if min_effect is not None else observed
    local = alpha / open_count
    if resolution is not None and abs(effect) < resolution:
        reason = "the difference is below the test set's resolution (< 1 test image); no number of seeds decides it"
        return Plan(None, effect, source, math.nan, local, reason)
    if not spread > 0:
        return Plan(None, effect, source, math.nan, local, "no spread between seeds to plan from")
    extras = np.arange(MIN_SEEDS, MAX_EXTRA_SEEDS + 1)
    # A minimum effect counts in either direction: the plan must find it whichever way it goes.
    signs = (1.0, -1.0) if min_effect is not None else (1.0,)
    powers = np.min([conditional_power(z1, sign * effect, spread, extras, local) for sign in signs], axis=0)
    enough = np.flatnonzero(powers >= POWER)
    if enough.size:
        return Plan(int(extras[enough[0]]), effect, source, float(powers[enough[0]]), local)
    reason = f"more than {MAX_EXTRA_SEEDS} extra seeds would be needed for {abs(effect) * 100:.2f} pp"
    if min_effect is None:
        reason += " (report.min_effect_pp: the smallest difference that matters, to plan for it or call it equivalent)"
    return Plan(None, effect, source, math.nan, local, reason)
