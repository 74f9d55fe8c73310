"""From the tidy table of runs (lossbench.claims.results) to each claim's figures, tests and verdict. Pure functions.

A claim is tested through *predictions*: on the runs of one block (a model, a corruption, a number of classes),
a measure of one loss minus the same measure of another, paired by seed, should have a given sign. A claim's
predictions are decided together as one family (lossbench.decisions: paired t-tests, Holm, seeds needed), and
:func:`verdict` reads the family's outcomes:

- **supported**: every prediction holds (decided in the claim's direction);
- **contradicted**: every prediction is reversed (decided against it);
- **depends**: they differ, and the verdict names the dimension(s) that separate them (model, data, noise rate, ...);
- **inconclusive**: none is decided; it says what would decide it (the seeds lossbench.decisions plans for).

Claim 6 is about verdicts, not differences: its predictions are per-loss agreement shares with Wilson intervals.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from statsmodels.stats.proportion import proportion_confint

from lossbench import decisions, stats
from lossbench.claims.protocols import CLAIMS, Claim
from lossbench.claims.results import (
    CONFIDENT_WRONG,
    CONFIDENT_WRONG_GRAD,
    CONFIDENT_WRONG_LOSS,
    INPUT_MARGIN,
    SUMMARY_HAS_ONSET,
    Row,
)
from lossbench.names import (
    SUMMARY_EPOCHS_TO_TARGET,
    SUMMARY_LOSS_HAS_ONSET,
    SUMMARY_SECONDS_TO_TARGET,
    TEST_ACC,
    TEST_ECE,
    TEST_LAST_ACC,
    TEST_MARGIN_GE1,
    TEST_NLL,
)

HOLDS, REVERSED, UNDECIDED = "holds", "reversed", "undecided"
"""What became of one prediction."""
SUPPORTED, CONTRADICTED, DEPENDS, INCONCLUSIVE = "supported", "contradicted", "depends", "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, DEPENDS, INCONCLUSIVE)

DROP, EPOCHS_TO_TARGET, AGREEMENT, MISSED = "accuracy_lost", "epochs_to_target", "agreement", "missed_overfitting"
"""Columns derived here (:func:`with_drops`, :func:`with_censored_epochs`) and claim 6's per-loss shares."""


@dataclass(frozen=True)
class Measure:
    """How one column reads: its words, the factor to its unit, the unit, digits, and its range."""

    label: str
    short: str
    """A few words, for verdicts (``NLL``)."""
    scale: float = 1.0
    unit: str = ""
    digits: int = 3
    bounds: tuple[float, float] = stats.UNBOUNDED

    def format(self, interval: stats.Interval) -> str:
        """``87.52 [86.90, 88.14] (n=3)`` in the measure's unit (which the table's header says)."""
        return interval.format(self.scale, self.digits)

    @property
    def difference_unit(self) -> str:
        """The unit of a difference of two such values: percentage points for a share in %."""
        return "pp" if self.unit == "%" else self.unit


_SHARE = (0.0, 1.0)
MEASURES: dict[str, Measure] = {
    DROP: Measure("test accuracy lost to the corruption (last epoch)", "accuracy lost", 100, "pp", 2, (-1.0, 1.0)),
    TEST_LAST_ACC: Measure("test accuracy (last epoch)", "last-epoch accuracy", 100, "%", 2, _SHARE),
    TEST_ACC: Measure("test accuracy (selected epoch)", "test accuracy", 100, "%", 2, _SHARE),
    EPOCHS_TO_TARGET: Measure(
        "epochs to the target validation accuracy", "epochs to target", 1, "epochs", 1, (1.0, math.inf)
    ),
    SUMMARY_SECONDS_TO_TARGET: Measure(
        "seconds to the target validation accuracy", "seconds to target", 1, "s", 1, (0.0, math.inf)
    ),
    CONFIDENT_WRONG_LOSS: Measure(
        "loss on confident mistakes ÷ mean loss", "loss on confident mistakes", 1, "×", 2, (0.0, math.inf)
    ),
    CONFIDENT_WRONG_GRAD: Measure(
        "gradient norm on confident mistakes ÷ mean", "gradient on confident mistakes", 1, "×", 2, (0.0, math.inf)
    ),
    CONFIDENT_WRONG: Measure("test images wrong with confidence ≥ 0.9", "confidently wrong", 100, "%", 2, _SHARE),
    INPUT_MARGIN: Measure("median distance to the decision boundary (input space)", "input margin", 1, "", 3),
    TEST_MARGIN_GE1: Measure("test images with a logit margin ≥ 1", "logit margin ≥ 1", 100, "%", 1, _SHARE),
    TEST_NLL: Measure("test NLL (selected epoch)", "NLL", 1, "", 3, (0.0, math.inf)),
    TEST_ECE: Measure("test ECE (selected epoch)", "ECE", 100, "%", 2, _SHARE),
    AGREEMENT: Measure("runs whose own-loss verdict agrees with the yardsticks'", "agreement", 100, "%", 0, _SHARE),
    MISSED: Measure("yardstick overfitting the own loss missed", "missed", 100, "%", 0, _SHARE),
}

RULE_PAIRED = (
    "each prediction is a paired comparison over seeds (t-test on the per-seed differences; the claim's {n} "
    "predictions decided as one family with Holm's correction, α = 0.05; lossbench.decisions). Supported: every "
    "prediction decided in the claim's direction; contradicted: every one decided against it; depends: they differ "
    "(named by what separates them); inconclusive: none decided."
)
RULE_AGREEMENT = (
    "for each loss, the share of runs in which the claim's rule on the loss's own val/loss (rises while the own "
    "training loss falls) gives the same verdict as lossbench's yardsticks (validation NLL or accuracy worse while "
    "the training data's improve), with a 95 % Wilson interval: it holds when the interval lies above 1/2 and the "
    "yardsticks call at least one of the loss's runs overfitting (agreeing that nothing overfits is no evidence that "
    "val/loss detects overfitting), is reversed when the interval lies below 1/2, undecided otherwise. Supported: it "
    "holds for every loss; contradicted: reversed for every loss; depends: they differ (the losses named); "
    "inconclusive: none decided."
)


# ------------------------------------------------------------------------------------ derived columns


def select(rows: Sequence[Row], **where: object) -> list[Row]:
    """The rows whose columns equal ``where``'s values."""
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def corruption(row: Row) -> str:
    """``none``, ``labels`` (label noise), ``images`` (corrupted inputs) or ``both``, from the row's rates."""
    labels, images = row["label_noise"] > 0, row["input_noise"] > 0
    return {(False, False): "none", (True, False): "labels", (False, True): "images"}.get((labels, images), "both")


def with_drops(rows: Sequence[Row], measure: str = TEST_LAST_ACC) -> list[Row]:
    """Every row with its ``corruption``; a corrupted one also with :data:`DROP`, the clean run's ``measure`` (same
    loss, model and seed) minus its own (NaN without a clean twin). Positive: the corruption cost accuracy."""
    out = [{**r, "corruption": corruption(r)} for r in rows]
    clean = {(r["loss"], r["model"], r["seed"]): r[measure] for r in out if r["corruption"] == "none"}
    for r in out:
        if r["corruption"] != "none":
            r[DROP] = clean.get((r["loss"], r["model"], r["seed"]), math.nan) - r[measure]
    return out


def with_censored_epochs(rows: Sequence[Row]) -> list[Row]:
    """Every row with :data:`EPOCHS_TO_TARGET`: the epoch validation accuracy first reached the target, or one past
    the run's last epoch when it never did (the run is censored: it would have needed at least that); NaN when no
    target was set."""
    out = []
    for r in rows:
        reached = r[SUMMARY_EPOCHS_TO_TARGET]
        censored = r["max_epochs"] + 1 if math.isfinite(r["target_acc"]) else math.nan
        out.append({**r, EPOCHS_TO_TARGET: reached if math.isfinite(reached) else censored})
    return out


# ------------------------------------------------------------------------------------ measured figures


@dataclass(frozen=True)
class Measured:
    """One measure of one group of runs (one loss in one block): the values by seed and their interval."""

    group: dict[str, str]
    measure: str
    values: dict[Hashable, float]
    interval: stats.Interval

    @property
    def text(self) -> str:
        return MEASURES[self.measure].format(self.interval)


def measure_groups(rows: Sequence[Row], measure: str, by: Sequence[str]) -> list[Measured]:
    """``measure`` per group of ``by`` (ending with ``loss``), over seeds: mean and interval within its range."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        if measure in r:
            groups.setdefault(tuple(str(r[k]) for k in by), []).append(r)
    out = []
    for key, members in groups.items():
        values = {r["seed"]: r[measure] for r in sorted(members, key=lambda r: stats.seed_order(r["seed"]))}
        interval = stats.mean_ci(values.values(), bounds=MEASURES[measure].bounds)
        out.append(Measured(dict(zip(by, key)), measure, values, interval))
    return out


# ------------------------------------------------------------------------------------ predictions


@dataclass(frozen=True)
class Prediction:
    """On the rows matching ``where``: ``measure`` of ``candidate`` minus that of ``reference``, paired by seed, has
    the sign ``sign`` (+1: larger)."""

    where: tuple[tuple[str, object], ...]
    measure: str
    candidate: str
    reference: str
    sign: int
    resolution: float | None = None
    """One test image's share, for accuracies (a smaller difference cannot be told apart)."""

    @property
    def block(self) -> dict[str, str]:
        """What distinguishes this prediction from its claim's others: its rows, measure and reference."""
        where = {k: f"{v} classes" if k == "classes" else str(v) for k, v in self.where}
        return {
            **where,
            "measure": MEASURES[self.measure].short,
            "loss": self.candidate,
            "against": f"against {self.reference}",
        }

    @property
    def label(self) -> str:
        return f"{self.candidate} − {self.reference}"


@dataclass(frozen=True)
class Tested:
    """A prediction as its family decided it."""

    prediction: Prediction
    decision: decisions.Decision

    @property
    def outcome(self) -> str:
        if self.decision.outcome not in (stats.BETTER, stats.WORSE):
            return UNDECIDED
        positive = (
            self.decision.outcome == stats.BETTER
        )  # decided with higher_is_better: BETTER is a positive difference
        return HOLDS if positive == (self.prediction.sign > 0) else REVERSED

    @property
    def difference(self) -> str:
        """``+3.2 [+1.1, +5.3] epochs, p=0.004 (Holm), n=3``; the values themselves below three seeds."""
        m, p = MEASURES[self.prediction.measure], self.decision.paired
        unit = f" {m.difference_unit}" if m.difference_unit else ""
        if p.n == 0:
            return "no paired seeds"
        if p.n < stats.MIN_SEEDS:
            seen = ", ".join(f"{d * m.scale:+.{m.digits}f}" for d in p.differences)
            return f"{p.mean * m.scale:+.{m.digits}f}{unit} (n={p.n}: {seen}; no test below {stats.MIN_SEEDS})"
        low, high = p.low * m.scale, p.high * m.scale
        return (
            f"{p.mean * m.scale:+.{m.digits}f} [{low:+.{m.digits}f}, {high:+.{m.digits}f}]{unit}, "
            f"p={self.decision.p_holm:.2g} (Holm), n={p.n}"
        )

    @property
    def plan(self) -> str:
        """What would decide it, when undecided: the seeds lossbench.decisions plans for, or why none do."""
        if self.outcome != UNDECIDED:
            return ""
        if self.decision.outcome == stats.TOO_FEW:
            return f"at least {stats.MIN_SEEDS} paired seeds (has {self.decision.paired.n})"
        plan = self.decision.plan
        if plan is None:
            return self.decision.verdict
        if plan.extra is not None:
            return f"{plan.extra} more seeds"
        if plan.reason.startswith("more than"):  # lossbench.decisions says it in pp, as for an accuracy
            m = MEASURES[self.prediction.measure]
            size = f"{abs(plan.effect) * m.scale:.{m.digits}f}" + (f" {m.difference_unit}" if m.difference_unit else "")
            return f"more than {decisions.MAX_EXTRA_SEEDS} more seeds for a difference of {size}"
        return plan.reason


def _by_seed(rows: Sequence[Row], where: Mapping[str, object], loss: str, measure: str) -> dict[Hashable, float]:
    return {r["seed"]: r.get(measure, math.nan) for r in select(rows, **where, loss=loss)}


def _stage(rows: Sequence[Row], where: Mapping[str, object], p: Prediction) -> dict[Hashable, int]:
    """Seed -> 2 when either run of the pair was added by an extension (tracking.stage=2), else 1."""
    stage: dict[Hashable, int] = {}
    for r in select(rows, **where):
        if r["loss"] in (p.candidate, p.reference):
            stage[r["seed"]] = max(stage.get(r["seed"], 1), int(r.get("stage", 1)))
    return stage


def test_predictions(rows: Sequence[Row], predictions: Sequence[Prediction]) -> list[Tested]:
    """Decide a claim's predictions as one family (paired by seed; Holm; seeds needed for the undecided)."""
    family = []
    for p in predictions:
        where = dict(p.where)
        bounds = MEASURES[p.measure].bounds
        paired = stats.paired_difference(
            _by_seed(rows, where, p.candidate, p.measure),
            _by_seed(rows, where, p.reference, p.measure),
            bounds=(bounds[0] - bounds[1], bounds[1] - bounds[0]),
        )
        family.append(decisions.evidence(paired, _stage(rows, where, p), p.resolution))
    return [Tested(p, d) for p, d in zip(predictions, decisions.decide(family))]


# ------------------------------------------------------------------------------------ verdicts


@dataclass(frozen=True)
class Case:
    """One prediction's outcome, for :func:`verdict`: where it was made, what became of it, what would decide it."""

    block: dict[str, str]
    outcome: str
    plan: str = ""


@dataclass(frozen=True)
class Verdict:
    kind: str
    """One of :data:`VERDICTS`."""
    text: str
    """The verdict in a sentence: what depends on what, or what would decide it."""
    rule: str
    """The rule that decided it."""
    decide: str = ""
    """What would decide what is undecided (empty when everything is decided)."""


def separating(cases: Sequence[Case]) -> list[str]:
    """The fewest dimensions whose values alone determine every case's outcome (the first such, in block order)."""
    varying = [d for d in dict.fromkeys(k for c in cases for k in c.block) if len({c.block.get(d) for c in cases}) > 1]
    for size in range(1, len(varying) + 1):
        for dims in itertools.combinations(varying, size):
            seen: dict[tuple, str] = {}
            if all(seen.setdefault(tuple(c.block.get(d) for d in dims), c.outcome) == c.outcome for c in cases):
                return list(dims)
    return varying


def _where(cases: Sequence[Case], dims: Sequence[str]) -> str:
    found = dict.fromkeys(" / ".join(f"{c.block.get(d)}" for d in dims) for c in cases)
    return ", ".join(found)


def verdict(cases: Sequence[Case], rule: str, name: Callable[[str], str] = str, decide: str | None = None) -> Verdict:
    """The claim's verdict from its predictions' outcomes (see the module's docstring). ``name`` turns a dimension
    into words (``against`` -> ``the loss compared``); ``decide`` says what would decide the undecided (default: their
    plans, listed)."""
    if decide is None:
        decide = "; ".join(sorted({c.plan for c in cases if c.outcome == UNDECIDED and c.plan}))
    kinds = {c.outcome for c in cases}
    if not cases:
        return Verdict(INCONCLUSIVE, "no finished runs test this claim", rule, "run its protocol")
    if kinds == {HOLDS}:
        return Verdict(
            SUPPORTED, "its prediction holds" if len(cases) == 1 else f"all {len(cases)} predictions hold", rule
        )
    if kinds == {REVERSED}:
        text = "its prediction is reversed" if len(cases) == 1 else f"all {len(cases)} predictions are reversed"
        return Verdict(CONTRADICTED, text, rule)
    if kinds == {UNDECIDED}:
        text = (
            "the one prediction is not decided"
            if len(cases) == 1
            else f"none of the {len(cases)} predictions is decided"
        )
        return Verdict(INCONCLUSIVE, text, rule, decide)
    dims = separating(cases)
    parts = [
        f"{outcome} for {_where([c for c in cases if c.outcome == outcome], dims)}"
        for outcome in (HOLDS, REVERSED, UNDECIDED)
        if outcome in kinds
    ]
    text = f"depends on {' and '.join(name(d) for d in dims)}: " + "; ".join(parts)
    return Verdict(DEPENDS, text, rule, decide)


# ------------------------------------------------------------------------------------ claim 6: agreement


def wilson(count: int, n: int) -> stats.Interval:
    """A share ``count / n`` with its 95 % Wilson score interval (statsmodels), as an Interval in [0, 1]."""
    if n == 0:
        return stats.Interval(math.nan, math.nan, math.nan, 0, math.nan, bounds=(0.0, 1.0))
    low, high = proportion_confint(count, n, alpha=1 - stats.LEVEL, method="wilson")
    return stats.Interval(count / n, float(low), float(high), n, math.nan, bounds=(0.0, 1.0))


def agreement(rows: Sequence[Row], loss: str) -> tuple[stats.Interval, stats.Interval]:
    """For one loss's runs: the share whose own-loss verdict equals the yardsticks', and the share of the runs the
    yardsticks call overfitting that the own loss did not (each with its Wilson interval)."""
    judged = [
        r
        for r in select(rows, loss=loss)
        if math.isfinite(r[SUMMARY_HAS_ONSET]) and math.isfinite(r[SUMMARY_LOSS_HAS_ONSET])
    ]
    same = sum(r[SUMMARY_HAS_ONSET] == r[SUMMARY_LOSS_HAS_ONSET] for r in judged)
    overfit = [r for r in judged if r[SUMMARY_HAS_ONSET] == 1]
    missed = sum(r[SUMMARY_LOSS_HAS_ONSET] == 0 for r in overfit)
    return wilson(same, len(judged)), wilson(missed, len(overfit))


def agreement_case(loss: str, share: stats.Interval, overfit: int) -> Case:
    """Claim 6's prediction for one loss: holds when the agreement's interval lies above 1/2 and the yardsticks call
    at least one (``overfit``) of its runs overfitting, reversed when the interval lies below 1/2."""
    if share.n == 0:
        return Case({"loss": loss}, UNDECIDED, "runs with both verdicts")
    if share.high < 0.5:
        return Case({"loss": loss}, REVERSED)
    if share.low > 0.5 and overfit:
        return Case({"loss": loss}, HOLDS)
    if share.low > 0.5:
        return Case({"loss": loss}, UNDECIDED, f"runs of {loss} that overfit (none did: nothing to detect)")
    return Case({"loss": loss}, UNDECIDED, f"more runs of {loss} (its {share.n} leave the share's interval around 1/2)")


@dataclass(frozen=True)
class Finding:
    """Everything one claim's section says: the claim, its verdict, the figures measured, the tests, notes."""

    claim: Claim
    verdict: Verdict
    measured: list[Measured]
    tested: list[Tested] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    key: str = ""
    """The figure the verdict table shows beside the verdict."""


def decide_text(tested: Sequence[Tested]) -> str:
    """What would decide a claim's undecided predictions, in one sentence: the seeds lossbench.decisions plans for
    (80 % power at Holm's level), how many need a third seed first, and how many no budget decides."""
    open_ = [t for t in tested if t.outcome == UNDECIDED]
    too_few = [t for t in open_ if t.decision.outcome == stats.TOO_FEW]
    planned = sorted(t.decision.plan.extra for t in open_ if t.decision.plan is not None and t.decision.plan.extra)
    hopeless = len(open_) - len(too_few) - len(planned)
    parts = []
    if too_few:
        parts.append(f"{len(too_few)} need at least {stats.MIN_SEEDS} paired seeds before any test")
    if planned:
        span = f"{planned[0]}" if planned[0] == planned[-1] else f"{planned[0]}–{planned[-1]}"
        parts.append(f"{len(planned)} need {span} more seeds each (80 % power, lossbench.decisions)")
    if hopeless:
        parts.append(
            f"{hopeless} cannot be decided by more seeds at this budget (a difference below the test set's resolution, "
            f"or more than {decisions.MAX_EXTRA_SEEDS} seeds)"
        )
    return "; ".join(parts)


def claim_by_number(number: int) -> Claim:
    return next(c for c in CLAIMS if c.number == number)
