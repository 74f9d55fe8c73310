"""Comparisons between groups of runs that hold up in review: intervals, paired tests, ranks, tuning.

Pure functions over plain numbers (numpy and scipy only; no torch, Lightning or MLflow), so the
report, a notebook or another tool can call them on values read from anywhere.

- :func:`mean_ci`: the mean over seeds with a Student-t confidence interval that never leaves the
  quantity's range, and none below :data:`MIN_SEEDS` seeds.
- :func:`paired_difference`: a candidate against a reference on the seeds both have (a paired
  t-test), with a verdict in words; :func:`probability_of_improvement`, a robust effect size beside it.
  Deciding many comparisons together (multiplicity, a second look, seeds needed): lossbench.decisions.
- :func:`rank_with_ties`: ranks by mean; neighbours whose intervals overlap share a rank.
- :func:`select_tuned`: per group, the hyper-parameter setting with the best mean *validation*
  value, and the budget (settings × seeds) the group got.
- :func:`resolution_of`: one test image's share of the test set, the finest difference it can show.
- :func:`expected_best`: each group's expected best validation value when k of its settings are tried
  (Dodge et al. 2019), the budget curve.

Values are in whatever unit the caller uses (accuracy as a fraction, say); ``resolution`` must be in
the same unit. Missing values (``None`` or NaN) are dropped, never counted as zero.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

LEVEL = 0.95
"""Default confidence level of every interval here."""
MIN_SEEDS = 3
"""Seeds (or seed pairs) an interval or a test needs. With two, Student's t has one degree of freedom and its
95 % interval is ±12.7 standard errors: nothing honest to say beyond the two values themselves."""

# Machine-readable outcomes of a paired comparison (``Paired.outcome``); ``Paired.verdict`` says it in words.
BETTER, WORSE, INDISTINGUISHABLE, BELOW_RESOLUTION, TOO_FEW, EQUIVALENT = (
    "better",
    "worse",
    "indistinguishable",
    "below_resolution",
    "too_few",
    "equivalent",  # decided by lossbench.decisions only: the whole interval inside the minimum effect the user set
)
UNBOUNDED = (-math.inf, math.inf)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _json(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must lie in (0, 1), e.g. 0.95")
    return level


# ------------------------------------------------------------------------------------ intervals


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values with its two-sided Student-t confidence interval ``[low, high]``.

    ``std`` is the sample standard deviation (ddof=1). There is an interval only from :data:`MIN_SEEDS` values
    on (``low``/``high`` are NaN below); it never leaves ``bounds``, the range the quantity lives in (an
    accuracy in [0, 1]): the t-interval intersected with that range, which covers the true mean at least as
    often as the t-interval itself does, since the true mean lies in the range. ``values`` keeps the values
    themselves, which is what one or two seeds can honestly show.
    """

    mean: float
    low: float
    high: float
    n: int
    std: float
    level: float = LEVEL
    values: tuple[float, ...] = ()
    bounds: tuple[float, float] = UNBOUNDED

    @property
    def has_interval(self) -> bool:
        return self.n >= MIN_SEEDS

    def overlaps(self, other: Interval) -> bool:
        """Whether the two closed intervals share a point; a side without an interval overlaps anything."""
        if not (self.has_interval and other.has_interval):
            return True
        return self.low <= other.high and other.low <= self.high

    def format(self, scale: float = 1.0, digits: int = 2, show_n: bool = True) -> str:
        """``"87.52 [86.90, 88.14] (n=3)"`` after multiplying by ``scale``; ``"87.52 (n=2: 86.90, 88.14)"`` for two
        values (the values, no interval); ``"87.52 (n=1)"`` for one; ``"—"`` for none. ``show_n=False`` leaves the
        count out where a report says it once for every row."""
        if self.n == 0:
            return "—"
        mean = f"{self.mean * scale:.{digits}f}"
        if self.n == 1:
            return f"{mean} (n=1)" if show_n else mean
        if not self.has_interval:
            seen = ", ".join(f"{v * scale:.{digits}f}" for v in self.values)
            return f"{mean} (n={self.n}: {seen})"
        n = f" (n={self.n})" if show_n else ""
        return f"{mean} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]{n}"

    def to_json(self) -> dict[str, object]:
        """The fields as JSON values (NaN becomes ``None``); the values themselves when there is no interval."""
        out: dict[str, object] = {
            "mean": _json(self.mean),
            "low": _json(self.low),
            "high": _json(self.high),
            "n": self.n,
            "std": _json(self.std),
            "level": self.level,
        }
        if 0 < self.n < MIN_SEEDS:
            out["values"] = [float(v) for v in self.values]
        return out


def _t_interval(values: np.ndarray, level: float, bounds: tuple[float, float] = UNBOUNDED) -> Interval:
    n = int(values.size)
    kept = tuple(float(v) for v in values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan, level, kept, bounds)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else math.nan
    if n < MIN_SEEDS:
        return Interval(mean, math.nan, math.nan, n, std, level, kept, bounds)
    half = float(_scipy_stats.t.ppf((1 + level) / 2, df=n - 1)) * std / math.sqrt(n)
    low, high = max(mean - half, bounds[0]), min(mean + half, bounds[1])
    return Interval(mean, low, high, n, std, level, kept, bounds)


def mean_ci(values: Iterable[float | None], level: float = LEVEL, bounds: tuple[float, float] = UNBOUNDED) -> Interval:
    """The mean of the finite values with the Student-t interval ``mean ± t_{(1+level)/2, n-1} · s / √n``, kept
    within ``bounds``.

    ``None`` and NaN are dropped first; with fewer than :data:`MIN_SEEDS` values left there is no interval.
    """
    _check_level(level)
    kept = np.asarray([float(v) for v in values if _finite(v)], dtype=float)
    return _t_interval(kept, level, bounds)


# ----------------------------------------------------------------------------- paired differences


def seed_order(seed: Hashable) -> tuple[int, object]:
    """Seeds sort as numbers when they are numbers (or read as one: "10" after "9"), else as text; mixed keys
    never raise."""
    if isinstance(seed, int | float) and not isinstance(seed, bool):
        return (0, seed)
    try:
        return (0, float(str(seed)))
    except ValueError:
        return (1, str(seed))


def _seeds(keys: Iterable[Hashable]) -> tuple[Hashable, ...]:
    return tuple(sorted(keys, key=seed_order))


@dataclass(frozen=True)
class Paired:
    """A candidate minus a reference, on the seeds both have: the mean difference, its interval, the paired
    t-test's two-sided p-value, and a verdict.

    ``outcome`` is one of ``better``, ``worse``, ``indistinguishable``, ``below_resolution``,
    ``too_few``; ``verdict`` says the same in words for a reader (with the number of seeds). A report that
    makes several comparisons decides them together (lossbench.decisions), which replaces outcome and verdict
    with the family's, and fills ``p_adjusted``.
    """

    mean: float
    low: float
    high: float
    n: int
    p_value: float
    outcome: str
    verdict: str
    seeds: tuple[Hashable, ...]
    """Seeds with a value on both sides: the pairs the test used."""
    only_candidate: tuple[Hashable, ...]
    """Seeds with a value for the candidate only (left out)."""
    only_reference: tuple[Hashable, ...]
    """Seeds with a value for the reference only (left out)."""
    level: float = LEVEL
    differences: tuple[float, ...] = ()
    """Candidate minus reference, per paired seed (in :attr:`seeds` order)."""
    p_adjusted: float = math.nan
    """The family's multiplicity-adjusted p-value (lossbench.decisions), NaN until a family decides."""

    @property
    def dropped(self) -> str:
        """Which seeds were left out and why, in words; ``""`` when every seed was paired."""
        parts = []
        if self.only_reference:
            parts.append(f"{_seed_list(self.only_reference)} missing for the candidate")
        if self.only_candidate:
            parts.append(f"{_seed_list(self.only_candidate)} missing for the reference")
        return "; ".join(parts)

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``"+0.17 [-0.05, +0.39], p=0.12 (n=3): not distinguishable at n=3 seeds"`` after multiplying by
        ``scale`` (``p=`` is the adjusted p-value once a family decided), followed by the seeds left out, if any.
        Below :data:`MIN_SEEDS` pairs: the differences themselves, no interval and no p."""
        if self.n == 0:
            text = self.verdict
        elif self.n < MIN_SEEDS:
            seen = ", ".join(f"{d * scale:+.{digits}f}" for d in self.differences)
            text = f"{self.mean * scale:+.{digits}f} (n={self.n}: {seen}): {self.verdict}"
        else:
            p = self.p_adjusted if math.isfinite(self.p_adjusted) else self.p_value
            text = (
                f"{self.mean * scale:+.{digits}f} [{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}], "
                f"p={p:.2g} (n={self.n}): {self.verdict}"
            )
        return f"{text}; {self.dropped}" if self.dropped else text

    def to_json(self) -> dict[str, object]:
        """The fields as JSON values (NaN becomes ``None``; seeds as given)."""
        return {
            "mean": _json(self.mean),
            "low": _json(self.low),
            "high": _json(self.high),
            "n": self.n,
            "p_value": _json(self.p_value),
            "p_adjusted": _json(self.p_adjusted),
            "test": "paired t-test (two-sided) on per-seed differences",
            "level": self.level,
            "outcome": self.outcome,
            "verdict": self.verdict,
            "seeds": list(self.seeds),
            "differences": [float(d) for d in self.differences],
            "only_candidate": list(self.only_candidate),
            "only_reference": list(self.only_reference),
        }


def _seed_list(seeds: Sequence[Hashable]) -> str:
    """``"seed 2"`` or ``"seeds 2, 3"``."""
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def paired_t(d: np.ndarray) -> tuple[float, float]:
    """``(t, two-sided p)`` of Student's one-sample t-test of differences ``d`` against 0, ``t = mean / (s/√n)``
    with ``n − 1`` degrees of freedom (what scipy's ``ttest_rel`` computes on the pairs: tests/test_stats.py
    holds it to that); identical differences give ``(±inf, 0)``, or ``(0, 1)`` when all are zero."""
    mean, std = float(d.mean()), float(d.std(ddof=1))
    if std == 0:
        return (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / (std / math.sqrt(d.size))
    return t, float(2 * _scipy_stats.t.sf(abs(t), df=d.size - 1))


def paired_difference(
    candidate: Mapping[Hashable, float | None],
    reference: Mapping[Hashable, float | None],
    level: float = LEVEL,
    resolution: float | None = None,
    higher_is_better: bool = True,
    bounds: tuple[float, float] = UNBOUNDED,
) -> Paired:
    """Candidate minus reference on the seeds both have, judged on its own by a two-sided paired t-test.

    Runs that share a seed share their initial weights, batch order and data split, so the per-seed
    differences ``d_s = candidate[s] - reference[s]`` cancel what the seed alone decides; the test is
    Student's one-sample t-test of ``d`` against 0 (scipy's ``ttest_rel``), with ``n - 1`` degrees of
    freedom. Seeds with no finite value on one side are left out and named in the result. ``bounds``: the
    range a difference can take (-1..1 for accuracies); the interval stays inside it.

    The verdict, in this order (a report deciding several comparisons at once replaces it:
    lossbench.decisions):

    - fewer than :data:`MIN_SEEDS` pairs: ``"too few paired seeds (n=K)"`` (no interval, no test);
    - ``resolution`` given and the whole interval inside ``(-resolution, +resolution)``: ``"below
      the test set's resolution (< 1 test image) at n=K seeds"``, whatever the p-value;
    - the interval at ``level`` excludes 0 (equivalently p < 1 - level): ``"better"`` if the
      difference is in the good direction (positive when ``higher_is_better``), else ``"worse"``;
    - otherwise ``"not distinguishable at n=K seeds"``.
    """
    _check_level(level)
    if resolution is not None and not resolution > 0:
        raise ValueError(f"resolution={resolution!r} must be > 0 (one test image's share, e.g. resolution_of(10000))")
    have_c = {s for s, v in candidate.items() if _finite(v)}
    have_r = {s for s, v in reference.items() if _finite(v)}
    seeds = _seeds(have_c & have_r)
    only_c, only_r = _seeds(have_c - have_r), _seeds(have_r - have_c)
    d = np.asarray([float(candidate[s]) - float(reference[s]) for s in seeds], dtype=float)
    ci = _t_interval(d, level, bounds)
    n = ci.n
    if n < MIN_SEEDS:
        p, outcome, verdict = math.nan, TOO_FEW, f"too few paired seeds (n={n}; a comparison needs {MIN_SEEDS})"
    else:
        p = paired_t(d)[1]
        if resolution is not None and -resolution < ci.low and ci.high < resolution:
            outcome, verdict = BELOW_RESOLUTION, f"below the test set's resolution (< 1 test image) at n={n} seeds"
        elif ci.low > 0 or ci.high < 0:
            outcome = BETTER if (ci.low > 0) == higher_is_better else WORSE
            verdict = outcome
        else:
            outcome, verdict = INDISTINGUISHABLE, f"not distinguishable at n={n} seeds"
    return Paired(ci.mean, ci.low, ci.high, n, p, outcome, verdict, seeds, only_c, only_r, level, tuple(d))


def resolution_of(n_test: int) -> float:
    """One image's share of a test set of ``n_test`` images: the smallest accuracy difference it can show."""
    if isinstance(n_test, bool) or not isinstance(n_test, int | np.integer) or n_test < 1:
        raise ValueError(f"n_test={n_test!r} must be a positive number of test images, e.g. 10000")
    return 1.0 / int(n_test)


def probability_of_improvement(
    candidate: Sequence[float], reference: Sequence[float], level: float = LEVEL
) -> tuple[float, float, float]:
    """``(estimate, low, high)`` of P(a candidate run beats a reference run): the Mann-Whitney statistic U/(n·m)
    (scipy's ``mannwhitneyu``; ties count one half), with Newcombe's (2006) method-5 interval: the Hanley-McNeil
    variance with both sample sizes replaced by their mean, inverted as Wilson's interval is. It stays inside
    0..1 and keeps its width when one side beats the other in every pair (3 runs against 3, all lower: 0.00
    [0.00, 0.50]), where a percentile bootstrap collapses to [0, 0]. It assumes no normality; 0.5 means no tendency
    either way. NaN without values on both sides; no interval (NaN) below :data:`MIN_SEEDS` per side."""
    c = np.asarray([v for v in candidate if _finite(v)], dtype=float)
    r = np.asarray([v for v in reference if _finite(v)], dtype=float)
    if not (c.size and r.size):
        return math.nan, math.nan, math.nan
    estimate = float(_scipy_stats.mannwhitneyu(c, r).statistic / (c.size * r.size))
    if min(c.size, r.size) < MIN_SEEDS or np.ptp(np.concatenate([c, r])) == 0:
        return estimate, math.nan, math.nan
    low, high = _newcombe_interval(estimate, c.size, r.size, level)
    return estimate, low, high


def _newcombe_interval(estimate: float, m: int, n: int, level: float) -> tuple[float, float]:
    """The two roots of (estimate - θ)² = z² V(θ), V(θ) = θ(1-θ)/(mn) [1 + N(1-θ)/(2-θ) + Nθ/(1+θ)], N = (m+n)/2 - 1
    (Newcombe 2006, Statistics in Medicine 25:559, method 5), one on each side of the estimate."""
    z2 = float(_scipy_stats.norm.ppf((1 + level) / 2)) ** 2
    k = (m + n) / 2 - 1

    def gap(theta: float) -> float:
        variance = theta * (1 - theta) / (m * n) * (1 + k * (1 - theta) / (2 - theta) + k * theta / (1 + theta))
        return (estimate - theta) ** 2 - z2 * variance

    from scipy.optimize import brentq  # only the interval needs a root finder; stats' import stays light

    inside = min(max(estimate, 1e-9), 1 - 1e-9)  # V vanishes at 0 and 1: start the search just inside
    low = 0.0 if estimate <= 0 else brentq(gap, 0.0, inside)
    high = 1.0 if estimate >= 1 else brentq(gap, inside, 1.0)
    return float(low), float(high)


# ------------------------------------------------------------------------------------------ ranks


def rank_with_ties(
    intervals: Mapping[str, Interval], higher_is_better: bool = True, apart: Iterable[frozenset[str]] = ()
) -> dict[str, int]:
    """Rank groups by mean, best first; a group whose interval overlaps that of the group just above
    it shares that group's rank, otherwise its rank is its position (1, 1, 3, ...). ``apart``: pairs of groups
    a sharper test told apart (a paired comparison decided better or worse): they never share a rank, so a
    group decided worse than the reference ranks below it even when their intervals overlap.

    Ties chain: if B overlaps A and C overlaps B, all three share A's rank even when A and C do not
    overlap. A group with one value has no interval and so overlaps everything: it shares the rank
    above it, and the group below it shares its rank (one seed cannot tell it apart from anything).
    Equal means are ordered by name. Groups with no finite value (``n == 0``) get no rank. Overlap
    of 95 % intervals is a conservative, simple screen; :func:`paired_difference` is the sharper test.
    """
    sign = -1.0 if higher_is_better else 1.0
    ordered = sorted(
        ((name, iv) for name, iv in intervals.items() if iv.n > 0 and math.isfinite(iv.mean)),
        key=lambda item: (sign * item[1].mean, item[0]),
    )
    separated = set(apart)
    ranks: dict[str, int] = {}
    for position, (name, iv) in enumerate(ordered, start=1):
        above = ordered[position - 2][0] if position > 1 else None
        tied = [other for other, rank in ranks.items() if above is not None and rank == ranks[above]]
        if above and iv.overlaps(intervals[above]) and not any(frozenset((name, o)) in separated for o in tied):
            ranks[name] = ranks[above]
        else:
            ranks[name] = position
    return ranks


# ----------------------------------------------------------------------------------------- tuning


def setting_of(params: Mapping[str, object]) -> str:
    """The canonical text of a hyper-parameter setting: ``key=value`` pairs sorted by key, joined by ``", "``."""
    return ", ".join(f"{key}={params[key]}" for key in sorted(params))


@dataclass(frozen=True)
class Trial:
    """One finished run as tuning sees it: its group (e.g. the loss), its setting (see
    :func:`setting_of`), its seed, its validation value and its run id. No test metric, by design."""

    group: str
    setting: str
    seed: Hashable
    val: float | None
    run_id: str


@dataclass(frozen=True)
class Tuned:
    """A group's chosen setting: the one with the best mean validation value over its seeds.

    ``setting`` is ``None`` (and ``val`` NaN) when no run of the group has a validation value.
    ``candidates`` lists every setting tried as ``(setting, mean val, runs with a value, runs)``.
    ``budget`` is the number of runs the group got, all settings and seeds together.
    """

    group: str
    setting: str | None
    val: float
    run_ids: tuple[str, ...]
    """Run ids of every run of the chosen setting, in seed order: the runs the tuned view reports."""
    seeds: tuple[Hashable, ...]
    n_settings: int
    candidates: tuple[tuple[str, float, int, int], ...]
    budget: int

    @property
    def seeds_per_setting(self) -> dict[str, int]:
        """Runs per setting tried."""
        return {setting: runs for setting, _, _, runs in self.candidates}

    def to_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "setting": self.setting,
            "val": _json(self.val),
            "run_ids": list(self.run_ids),
            "seeds": list(self.seeds),
            "n_settings": self.n_settings,
            "seeds_per_setting": self.seeds_per_setting,
            "budget": self.budget,
            "candidates": [{"setting": s, "val": _json(v), "n_val": k, "runs": r} for s, v, k, r in self.candidates],
        }


def select_tuned(trials: Iterable[Trial], higher_is_better: bool = True) -> dict[str, Tuned]:
    """Per group, the setting whose mean validation value over its seeds is best.

    The mean is over the runs with a finite value; a setting with none cannot be chosen. Ties in
    the mean go to the setting with more such runs, then to the first setting in sorted text order,
    so the choice never depends on input order. Test metrics are not an input: selection cannot see
    them. A repeated (group, setting, seed) is an error (it would count one seed twice).
    """
    by_group: dict[str, dict[str, list[Trial]]] = {}
    seen: set[tuple[str, str, Hashable]] = set()
    for trial in trials:
        key = (trial.group, trial.setting, trial.seed)
        if key in seen:
            raise ValueError(
                f"trial group={trial.group!r} setting={trial.setting!r} seed={trial.seed!r} appears twice: "
                "keep one run per seed (the newest)"
            )
        seen.add(key)
        by_group.setdefault(trial.group, {}).setdefault(trial.setting, []).append(trial)

    sign = -1.0 if higher_is_better else 1.0
    tuned = {}
    for group in sorted(by_group):
        settings = by_group[group]
        candidates = []
        for setting in sorted(settings):
            vals = [float(t.val) for t in settings[setting] if _finite(t.val)]
            mean = float(np.mean(vals)) if vals else math.nan
            candidates.append((setting, mean, len(vals), len(settings[setting])))
        valid = [c for c in candidates if c[2] > 0]
        if valid:
            best = min(valid, key=lambda c: (sign * c[1], -c[2], c[0]))
            chosen = sorted(settings[best[0]], key=lambda t: seed_order(t.seed))
            setting, val = best[0], best[1]
            run_ids, seeds = tuple(t.run_id for t in chosen), tuple(t.seed for t in chosen)
        else:
            setting, val, run_ids, seeds = None, math.nan, (), ()
        tuned[group] = Tuned(
            group=group,
            setting=setting,
            val=val,
            run_ids=run_ids,
            seeds=seeds,
            n_settings=len(settings),
            candidates=tuple(candidates),
            budget=sum(len(runs) for runs in settings.values()),
        )
    return tuned


# ----------------------------------------------------------------------------------------- budget


@dataclass(frozen=True)
class Budget:
    """The expected best validation value when ``k`` settings of a group are tried, for k = 1..N (Dodge et al.,
    "Show Your Work", EMNLP 2019, Eq. 1): how much a result depends on the tuning budget."""

    group: str
    settings: tuple[float, ...]
    """The N settings' validation values (each the mean over its seeds), sorted from worst to best."""
    expected: tuple[float, ...]
    """Expected best of k settings drawn at random (with replacement), k = 1..N."""
    std: tuple[float, ...]
    """Its standard deviation: the spread of the best of k draws."""

    def to_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "settings": list(self.settings),
            "expected_best": list(self.expected),
            "std": list(self.std),
            "k": list(range(1, len(self.expected) + 1)),
        }


def expected_best(group: str, values: Iterable[float | None], higher_is_better: bool = True) -> Budget:
    """:class:`Budget` of one group from its settings' validation values (NaN dropped).

    With the N values sorted worst to best, v_(1) .. v_(N), the best of k draws with replacement is v_(i) with
    probability ``(i/N)^k - ((i-1)/N)^k`` (the order statistic of the empirical distribution), so
    ``E[best of k] = Σ_i v_(i) [(i/N)^k - ((i-1)/N)^k]`` and its variance follows from ``E[best²]`` the same way.
    """
    kept = sorted((float(v) for v in values if _finite(v)), reverse=not higher_is_better)
    n = len(kept)
    v = np.asarray(kept, dtype=float)
    expected, spread = [], []
    for k in range(1, n + 1):
        i = np.arange(1, n + 1)
        weight = (i / n) ** k - ((i - 1) / n) ** k
        mean = float(np.sum(weight * v))
        expected.append(mean)
        spread.append(float(math.sqrt(max(0.0, float(np.sum(weight * v**2)) - mean**2))))
    return Budget(group, tuple(kept), tuple(expected), tuple(spread))
