"""Comparisons between groups of runs that hold up in review: intervals, paired tests, ranks, tuning.

Pure functions over plain numbers (numpy and scipy only; no torch, Lightning or MLflow), so the
report, a notebook or another tool can call them on values read from anywhere.

- :func:`mean_ci`: the mean over seeds with a Student-t confidence interval.
- :func:`paired_difference`: a candidate against a reference on the seeds both have (a paired
  t-test), with a verdict in words.
- :func:`rank_with_ties`: ranks by mean; neighbours whose intervals overlap share a rank.
- :func:`select_tuned`: per group, the hyper-parameter setting with the best mean *validation*
  value, and the budget (settings × seeds) the group got.
- :func:`resolution_of`: one test image's share of the test set, the finest difference it can show.

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

# Machine-readable outcomes of a paired comparison (``Paired.outcome``); ``Paired.verdict`` says it in words.
BETTER, WORSE, INDISTINGUISHABLE, BELOW_RESOLUTION, TOO_FEW = (
    "better",
    "worse",
    "indistinguishable",
    "below_resolution",
    "too_few",
)


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

    ``std`` is the sample standard deviation (ddof=1). ``low``, ``high`` and ``std`` are NaN when
    ``n < 2`` (one value has no spread to estimate); everything is NaN when ``n == 0``.
    """

    mean: float
    low: float
    high: float
    n: int
    std: float
    level: float = LEVEL

    @property
    def has_interval(self) -> bool:
        return self.n >= 2

    def overlaps(self, other: Interval) -> bool:
        """Whether the two closed intervals share a point; a side without an interval overlaps anything."""
        if not (self.has_interval and other.has_interval):
            return True
        return self.low <= other.high and other.low <= self.high

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``"87.52 [86.90, 88.14] (n=3)"`` after multiplying by ``scale``; ``"87.52 (n=1, no
        interval)"`` for one value; ``"—"`` for none."""
        if self.n == 0:
            return "—"
        mean = f"{self.mean * scale:.{digits}f}"
        if not self.has_interval:
            return f"{mean} (n={self.n}, no interval)"
        return f"{mean} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}] (n={self.n})"

    def to_json(self) -> dict[str, float | int | None]:
        """The fields as JSON values (NaN becomes ``None``)."""
        return {
            "mean": _json(self.mean),
            "low": _json(self.low),
            "high": _json(self.high),
            "n": self.n,
            "std": _json(self.std),
            "level": self.level,
        }


def _t_interval(values: np.ndarray, level: float) -> Interval:
    n = int(values.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan, level)
    mean = float(values.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan, level)
    std = float(values.std(ddof=1))
    half = float(_scipy_stats.t.ppf((1 + level) / 2, df=n - 1)) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std, level)


def mean_ci(values: Iterable[float | None], level: float = LEVEL) -> Interval:
    """The mean of the finite values with the Student-t interval ``mean ± t_{(1+level)/2, n-1} · s / √n``.

    ``None`` and NaN are dropped first; with fewer than two values left there is no interval.
    """
    _check_level(level)
    kept = np.asarray([float(v) for v in values if _finite(v)], dtype=float)
    return _t_interval(kept, level)


# ----------------------------------------------------------------------------- paired differences


def _seed_order(seed: Hashable) -> tuple[int, object]:
    """Seeds sort as numbers when they are numbers, else as text (mixed keys never raise)."""
    return (0, seed) if isinstance(seed, int | float) and not isinstance(seed, bool) else (1, str(seed))


def _seeds(keys: Iterable[Hashable]) -> tuple[Hashable, ...]:
    return tuple(sorted(keys, key=_seed_order))


@dataclass(frozen=True)
class Paired:
    """A candidate minus a reference, on the seeds both have: the mean difference, its interval,
    the paired t-test's two-sided p-value, and a verdict.

    ``outcome`` is one of ``better``, ``worse``, ``indistinguishable``, ``below_resolution``,
    ``too_few``; ``verdict`` says the same in words for a reader (with the number of seeds).
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
        """``"+0.17 [-0.05, +0.39], p=0.12 (n=3): not distinguishable at n=3 seeds"`` after
        multiplying by ``scale``, followed by the seeds left out, if any."""
        if self.n == 0:
            text = self.verdict
        elif self.n == 1:
            text = f"{self.mean * scale:+.{digits}f} (n=1): {self.verdict}"
        else:
            text = (
                f"{self.mean * scale:+.{digits}f} [{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}], "
                f"p={self.p_value:.2g} (n={self.n}): {self.verdict}"
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
            "test": "paired t-test (two-sided) on per-seed differences",
            "level": self.level,
            "outcome": self.outcome,
            "verdict": self.verdict,
            "seeds": list(self.seeds),
            "only_candidate": list(self.only_candidate),
            "only_reference": list(self.only_reference),
        }


def _seed_list(seeds: Sequence[Hashable]) -> str:
    """``"seed 2"`` or ``"seeds 2, 3"``."""
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def _two_sided_p(d: np.ndarray) -> float:
    """The paired t-test's p-value from the differences; identical differences give 0 (or 1 if all zero)."""
    mean, std = float(d.mean()), float(d.std(ddof=1))
    if std == 0:
        return 1.0 if mean == 0 else 0.0
    t = mean / (std / math.sqrt(d.size))
    return float(2 * _scipy_stats.t.sf(abs(t), df=d.size - 1))


def paired_difference(
    candidate: Mapping[Hashable, float | None],
    reference: Mapping[Hashable, float | None],
    level: float = LEVEL,
    resolution: float | None = None,
    higher_is_better: bool = True,
) -> Paired:
    """Candidate minus reference on the seeds both have, judged by a two-sided paired t-test.

    Runs that share a seed share their initial weights, batch order and data split, so the per-seed
    differences ``d_s = candidate[s] - reference[s]`` cancel what the seed alone decides; the test is
    Student's one-sample t-test of ``d`` against 0 (scipy's ``ttest_rel``), with ``n - 1`` degrees of
    freedom. Seeds with no finite value on one side are left out and named in the result.

    The verdict, in this order:

    - fewer than 2 pairs: ``"too few paired seeds (n=K)"`` (no spread, no test);
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
    ci = _t_interval(d, level)
    n = ci.n

    if n < 2:
        p, outcome, verdict = math.nan, TOO_FEW, f"too few paired seeds (n={n})"
    else:
        p = _two_sided_p(d)
        if resolution is not None and -resolution < ci.low and ci.high < resolution:
            outcome, verdict = BELOW_RESOLUTION, f"below the test set's resolution (< 1 test image) at n={n} seeds"
        elif ci.low > 0 or ci.high < 0:
            outcome = BETTER if (ci.low > 0) == higher_is_better else WORSE
            verdict = outcome
        else:
            outcome, verdict = INDISTINGUISHABLE, f"not distinguishable at n={n} seeds"
    return Paired(ci.mean, ci.low, ci.high, n, p, outcome, verdict, seeds, only_c, only_r, level)


def resolution_of(n_test: int) -> float:
    """One image's share of a test set of ``n_test`` images: the smallest accuracy difference it can show."""
    if isinstance(n_test, bool) or not isinstance(n_test, int | np.integer) or n_test < 1:
        raise ValueError(f"n_test={n_test!r} must be a positive number of test images, e.g. 10000")
    return 1.0 / int(n_test)


# ------------------------------------------------------------------------------------------ ranks


def rank_with_ties(intervals: Mapping[str, Interval], higher_is_better: bool = True) -> dict[str, int]:
    """Rank groups by mean, best first; a group whose interval overlaps that of the group just above
    it shares that group's rank, otherwise its rank is its position (1, 1, 3, ...).

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
    ranks: dict[str, int] = {}
    for position, (name, iv) in enumerate(ordered, start=1):
        if position > 1 and iv.overlaps(ordered[position - 2][1]):
            ranks[name] = ranks[ordered[position - 2][0]]
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
            chosen = sorted(settings[best[0]], key=lambda t: _seed_order(t.seed))
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
