"""From the tidy table of runs (lossbench.claims.results) to each claim's figures, tests and verdict. Pure functions.

A claim is tested through *predictions* written before the run (conf/claims.yaml): on the runs of one block (a
model, a weight decay, a number of classes), a measure of one loss minus the same measure of another should have a
given sign, or (sign 0) be equivalent within a stated margin. A claim's predictions are decided together as one family
(lossbench.decisions: paired t-tests, Holm, equivalence within each prediction's margin, seeds needed; or, for times
that may be censored, Mann-Whitney U with Holm), and :func:`verdict` reads the family's outcomes:

- **supported**: every prediction holds;
- **contradicted**: every prediction is decided against the claim (reversed, or no difference where it predicts one);
- **equivalent**: every prediction of a difference is decided "no difference" within its margin;
- **depends**: *decided* predictions disagree (some hold, some are decided against); named by what separates them;
- **not yet decided**: anything else (some or all undecided, none disagreeing): how many are decided, and what
  would decide the rest. A mix of decided and undecided predictions is never "depends": that is lack of power.

Claim 6 is about a detector, not a difference: per loss, sensitivity and specificity with Wilson intervals.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as _stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from lossbench import decisions, stats
from lossbench.claims.protocols import CLAIMS, Claim
from lossbench.claims.results import (
    CONFIDENT_WRONG,
    CONFIDENT_WRONG_GRAD,
    CONFIDENT_WRONG_LOSS,
    ECE_TS,
    INPUT_MARGIN,
    NLL_TS,
    OWN_ECE,
    OWN_ECE_TS,
    OWN_NLL,
    OWN_NLL_TS,
    STILL_IMPROVING,
    TRAIN_INPUT_MARGIN,
    Row,
)
from lossbench.names import (
    MEMORISED,
    SUMMARY_EPOCHS_TO_TARGET,
    SUMMARY_SECONDS_TO_TARGET,
    TEST_ACC,
    TEST_ECE,
    TEST_LAST_ACC,
    TEST_MARGIN_GE1,
    TEST_NLL,
)

HOLDS, REVERSED, NO_DIFFERENCE, UNDECIDED, NOT_MEASURED = (
    "holds",
    "reversed",
    "no difference",
    "undecided",
    "not measured",
)
"""What became of one prediction: holds; reversed (decided the other way, or a difference where a tie was
predicted); no difference (equivalent within its margin where a difference was predicted); undecided; not measured
(the runs did not record its measure)."""
OUTCOMES = (HOLDS, REVERSED, NO_DIFFERENCE, UNDECIDED, NOT_MEASURED)
DECIDED = (HOLDS, REVERSED, NO_DIFFERENCE)
AGAINST = (REVERSED, NO_DIFFERENCE)
SUPPORTED, CONTRADICTED, EQUIVALENT, DEPENDS, NOT_DECIDED = (
    "supported",
    "contradicted",
    "equivalent",
    "depends",
    "not yet decided",
)
INCONCLUSIVE = NOT_DECIDED  # the name claim 1's code used
VERDICTS = (SUPPORTED, CONTRADICTED, EQUIVALENT, DEPENDS, NOT_DECIDED)

DROP, EPOCHS_TO_TARGET, AGREEMENT, MISSED = "accuracy_lost", "epochs_to_target", "agreement", "missed_overfitting"
"""Columns derived here (:func:`with_drops`, :func:`with_censored_epochs`) and claim 6's per-loss shares."""
REACHED, SENSITIVITY, SPECIFICITY = "reached_target", "sensitivity", "specificity"
"""Claim 2's share of runs that reached the target; claim 6's per-loss shares of the detector."""


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
    REACHED: Measure("runs that reached the target", "reached", 100, "%", 0, _SHARE),
    SENSITIVITY: Measure("overfitting runs val/loss flags (sensitivity)", "sensitivity", 100, "%", 0, _SHARE),
    SPECIFICITY: Measure("other runs val/loss leaves alone (specificity)", "specificity", 100, "%", 0, _SHARE),
    STILL_IMPROVING: Measure("runs still improving at the end", "still improving", 100, "%", 0, _SHARE),
    TRAIN_INPUT_MARGIN: Measure(
        "median distance to the nearest boundary, training images", "training margin", 1, "", 3
    ),
    OWN_NLL: Measure("test NLL of the loss's own probabilities", "own NLL", 1, "", 3, (0.0, math.inf)),
    OWN_ECE: Measure("test ECE of the loss's own probabilities", "own ECE", 100, "%", 2, _SHARE),
    OWN_NLL_TS: Measure("own NLL, temperature-scaled", "own NLL (TS)", 1, "", 3, (0.0, math.inf)),
    OWN_ECE_TS: Measure("own ECE, temperature-scaled", "own ECE (TS)", 100, "%", 2, _SHARE),
    NLL_TS: Measure("softmax NLL, temperature-scaled", "NLL (TS)", 1, "", 3, (0.0, math.inf)),
    ECE_TS: Measure("softmax ECE, temperature-scaled", "ECE (TS)", 100, "%", 2, _SHARE),
    MEMORISED: Measure("flipped training labels memorised (last epoch)", "memorised", 100, "%", 1, _SHARE),
}

_OUTCOMES = (
    "Supported: every prediction holds; contradicted: every one decided against the claim; equivalent: every predicted "
    "difference decided absent; depends: decided predictions disagree (named by what separates them); not yet "
    "decided: anything else, with how many are decided and what would decide the rest."
)
RULE_PAIRED = (
    "each prediction is a paired comparison over seeds (t-test on the "
    "per-seed differences; the claim's {n} predictions decided as one family with Holm's correction, α = 0.05, "
    "lossbench.decisions); a difference whose 95 % interval lies inside the prediction's margin is decided "
    "equivalent (TOST at 2.5 % a side): where the claim predicts a tie that is its holding, where it predicts a "
    "difference that is 'no difference'. " + _OUTCOMES
)
RULE_RANK = (
    "each prediction compares the two losses' epochs to the target with "
    "a two-sided Mann-Whitney U test (scipy), a run that never reached it counted as never (+inf: censored, kept, not "
    "dropped); the claim's {n} predictions decided as one family with Holm's correction, α = 0.05. " + _OUTCOMES
)
RULE_DETECTOR = (
    "for each loss, the claim's rule read on its own val/loss (rises while the own training loss falls; "
    "summary/loss_has_onset) as a detector of overfitting defined on accuracy (validation accuracy ends worse than "
    "its smoothed best by analysis.margin_acc while the training data's improves): its sensitivity (overfitting runs "
    "flagged) and specificity (other runs left alone), each with a 95 % Wilson interval. It holds for a loss when both "
    "lower limits exceed 1/2, is reversed when either upper limit lies below 1/2 (an always-yes detector: specificity "
    "0), undecided otherwise. " + _OUTCOMES
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
    """Every row with :data:`EPOCHS_TO_TARGET`: the epoch validation accuracy first reached the target, or +inf when
    it never did (the run is censored: kept, and ranked behind every run that reached it; never dropped), and
    :data:`REACHED` (1 or 0); NaN for both when no target was set."""
    out = []
    for r in rows:
        reached = r[SUMMARY_EPOCHS_TO_TARGET]
        if not math.isfinite(r["target_acc"]):
            out.append({**r, EPOCHS_TO_TARGET: math.nan, REACHED: math.nan})
        else:
            out.append(
                {
                    **r,
                    EPOCHS_TO_TARGET: reached if math.isfinite(reached) else math.inf,
                    REACHED: float(math.isfinite(reached)),
                }
            )
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
        iv, m = self.interval, MEASURES[self.measure]
        if not self.values and 0 < iv.n < stats.MIN_SEEDS:  # a Wilson share: its interval holds at any count
            return f"{iv.mean * m.scale:.{m.digits}f} [{iv.low * m.scale:.{m.digits}f}, {iv.high * m.scale:.{m.digits}f}] (n={iv.n})"
        return m.format(iv)


def measure_groups(rows: Sequence[Row], measure: str, by: Sequence[str]) -> list[Measured]:
    """``measure`` per group of ``by`` (ending with ``loss``), over seeds: mean and interval within its range."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        if measure in r and not math.isnan(r[measure]):
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
    """On the rows matching ``where``: ``measure`` of ``candidate`` minus that of ``reference`` has the sign ``sign``
    (+1: larger, -1: smaller) or, with ``sign`` 0, is equivalent within ``margin``. Written before the run
    (conf/claims.yaml, :func:`prediction_of`)."""

    where: tuple[tuple[str, object], ...]
    measure: str
    candidate: str
    reference: str
    sign: int
    resolution: float | None = None
    """One test image's share, for accuracies (a smaller difference cannot be told apart)."""
    margin: float | None = None
    """The smallest difference that matters, in the measure's unit: an interval inside ±margin is "no difference"."""
    test: str = "paired"
    """``paired`` (t-test on per-seed differences, lossbench.decisions) or ``rank`` (Mann-Whitney U, censored kept)."""
    seeds: int = 0
    """The seeds the protocol promised it (0: not stated)."""
    protocol: str = ""

    @property
    def block(self) -> dict[str, str]:
        """What distinguishes this prediction from its claim's others: its rows, measure and reference."""
        where = {k: _where_word(k, v) for k, v in self.where}
        return {
            **where,
            "measure": MEASURES[self.measure].short,
            "loss": self.candidate,
            "against": f"against {self.reference}",
        }

    @property
    def label(self) -> str:
        return f"{self.candidate} − {self.reference}"

    @property
    def expects(self) -> str:
        """``mae > mse``, ``bce_single ≈ ce (±1.00 pp)``."""
        if self.sign == 0:
            return f"{self.candidate} ≈ {self.reference} (±{_amount(self.measure, self.margin)})"
        return f"{self.candidate} {'>' if self.sign > 0 else '<'} {self.reference}"


def _where_word(key: str, value: object) -> str:
    if key == "classes":
        return f"{value} classes"
    if key in ("weight_decay", "label_noise", "train_size"):
        return f"{key.replace('_', ' ')} {value:g}" if isinstance(value, float) else f"{key.replace('_', ' ')} {value}"
    return str(value)


def _amount(measure: str, value: float | None) -> str:
    m = MEASURES[measure]
    unit = f" {m.difference_unit}" if m.difference_unit else ""
    return "—" if value is None else f"{value * m.scale:.{m.digits}f}{unit}"


def prediction_of(spec: Mapping[str, object], resolution: float | None = None) -> Prediction:
    """A prediction as conf/claims.yaml writes it (a mapping: protocol, where, measure, candidate, reference, sign,
    margin, test, seeds)."""
    test = str(spec.get("test", "paired"))
    if test not in ("paired", "rank") or int(spec["sign"]) not in (-1, 0, 1) or str(spec["measure"]) not in MEASURES:
        raise ValueError(f"conf/claims.yaml: a prediction needs test paired|rank, sign -1|0|1, a known measure: {spec}")
    margin = spec.get("margin")
    if int(spec["sign"]) == 0 and margin is None:
        raise ValueError(f"conf/claims.yaml: an equivalence (sign 0) needs its margin: {spec}")
    return Prediction(
        tuple(dict(spec.get("where") or {}).items()),
        str(spec["measure"]),
        str(spec["candidate"]),
        str(spec["reference"]),
        int(spec["sign"]),
        resolution,
        None if margin is None else float(margin),
        test,
        int(spec.get("seeds", 0)),
        str(spec.get("protocol", "")),
    )


@dataclass(frozen=True)
class Ranked:
    """A rank prediction as its family decided it (Mann-Whitney U; a run that never reached the target is +inf)."""

    candidate: tuple[float, ...]
    reference: tuple[float, ...]
    p_value: float
    p_holm: float
    outcome: str
    """stats.BETTER (candidate larger), stats.WORSE, stats.INDISTINGUISHABLE or stats.TOO_FEW."""
    extra: int | None = None
    """More seeds per loss with which the test decides with 80 % power (resampling these values), when undecided."""

    @property
    def plan(self) -> None:  # the interface of decisions.Decision that the claims read: no paired plan
        return None

    def to_json(self) -> dict[str, object]:
        return {
            "test": "Mann-Whitney U (two-sided), never reached = +inf",
            "candidate": ["inf" if v == math.inf else v for v in self.candidate],
            "reference": ["inf" if v == math.inf else v for v in self.reference],
            "p_value": self.p_value,
            "p_holm": self.p_holm,
            "outcome": self.outcome,
            "extra_seeds": self.extra,
        }


@dataclass(frozen=True)
class Tested:
    """A prediction as its family decided it, with the per-seed values it read (candidate, reference)."""

    prediction: Prediction
    decision: decisions.Decision | Ranked | None
    """None: the runs did not record the measure (not measured)."""
    values: dict[Hashable, tuple[float, float]] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        if self.decision is None:
            return NOT_MEASURED
        sign, kind = self.prediction.sign, self.decision.outcome
        if kind == stats.EQUIVALENT or self.within_margin:
            return HOLDS if sign == 0 else NO_DIFFERENCE
        if kind not in (stats.BETTER, stats.WORSE):
            return UNDECIDED
        if sign == 0:
            return REVERSED
        return HOLDS if (kind == stats.BETTER) == (sign > 0) else REVERSED

    @property
    def within_margin(self) -> bool:
        """The paired difference's 95 % interval lies inside ±margin: equivalent (TOST), even where the t-test also
        finds it non-zero (a difference too small to matter, e.g. two parametrisations of one model)."""
        margin, d = self.prediction.margin, self.decision
        if margin is None or not isinstance(d, decisions.Decision) or d.paired.n < stats.MIN_SEEDS:
            return False
        return -margin < d.paired.low and d.paired.high < margin

    @property
    def difference(self) -> str:
        """``+3.2 [+1.1, +5.3] epochs, p=0.004 (Holm), n=3``; the values themselves below three seeds."""
        m, d = MEASURES[self.prediction.measure], self.decision
        if d is None:
            return "not measured (the runs did not record it)"
        if isinstance(d, Ranked):
            return _ranked_text(d, m)
        p = d.paired
        unit = f" {m.difference_unit}" if m.difference_unit else ""
        if p.n == 0:
            return "no paired seeds"
        if p.n < stats.MIN_SEEDS:
            seen = ", ".join(f"{x * m.scale:+.{m.digits}f}" for x in p.differences)
            return f"{p.mean * m.scale:+.{m.digits}f}{unit} (n={p.n}: {seen}; no test below {stats.MIN_SEEDS})"
        low, high = p.low * m.scale, p.high * m.scale
        return (
            f"{p.mean * m.scale:+.{m.digits}f} [{low:+.{m.digits}f}, {high:+.{m.digits}f}]{unit}, "
            f"p={d.p_holm:.2g} (Holm), n={p.n}"
        )

    @property
    def plan(self) -> str:
        """What would decide it, when undecided: the seeds lossbench.decisions plans for, or why none do."""
        if self.outcome == NOT_MEASURED:
            return f"runs that record {self.prediction.measure}"
        if self.outcome != UNDECIDED:
            return ""
        d = self.decision
        if d.outcome == stats.TOO_FEW:
            return f"at least {stats.MIN_SEEDS} seeds per loss"
        if isinstance(d, Ranked):
            return f"{d.extra} more seeds per loss" if d.extra else f"more than {MAX_RANK_SEEDS} seeds per loss"
        plan = d.plan
        if plan is None:
            return d.verdict
        if plan.extra is not None:
            return f"{plan.extra} more seeds"
        if plan.reason.startswith("more than"):  # lossbench.decisions says it in pp, as for an accuracy
            m = MEASURES[self.prediction.measure]
            size = f"{abs(plan.effect) * m.scale:.{m.digits}f}" + (f" {m.difference_unit}" if m.difference_unit else "")
            return f"more than {decisions.MAX_EXTRA_SEEDS} more seeds for a difference of {size}"
        return plan.reason

    @property
    def extra_seeds(self) -> int | None:
        """The seeds more this prediction asks for (None: none planned)."""
        if self.outcome != UNDECIDED or self.decision is None:
            return None
        if isinstance(self.decision, Ranked):
            return self.decision.extra
        return self.decision.plan.extra if self.decision.plan is not None else None


def _ranked_text(d: Ranked, m: Measure) -> str:
    def side(values: tuple[float, ...]) -> str:
        finite = [v for v in values if math.isfinite(v)]
        median = float(np.median(values)) if values else math.nan
        shown = "never" if math.isinf(median) else f"{median * m.scale:.{m.digits}f}"
        return f"median {shown} ({len(values) - len(finite)} of {len(values)} never)"

    if d.outcome == stats.TOO_FEW:
        return f"{side(d.candidate)} vs {side(d.reference)}; no test below {stats.MIN_SEEDS} per loss"
    return f"{side(d.candidate)} vs {side(d.reference)}, p={d.p_holm:.2g} (Mann-Whitney, Holm)"


def _by_seed(rows: Sequence[Row], where: Mapping[str, object], loss: str, measure: str) -> dict[Hashable, float]:
    return {r["seed"]: r.get(measure, math.nan) for r in select(rows, **where, loss=loss)}


def _stage(rows: Sequence[Row], where: Mapping[str, object], p: Prediction) -> dict[Hashable, int]:
    """Seed -> 2 when either run of the pair was added by an extension (tracking.stage=2), else 1."""
    stage: dict[Hashable, int] = {}
    for r in select(rows, **where):
        if r["loss"] in (p.candidate, p.reference):
            stage[r["seed"]] = max(stage.get(r["seed"], 1), int(r.get("stage", 1)))
    return stage


def _scope(p: Prediction) -> dict[str, object]:
    """The rows a prediction reads: its block, in its protocol's runs (when it names one)."""
    return {**dict(p.where), **({"protocol": p.protocol} if p.protocol else {})}


def _values(rows: Sequence[Row], p: Prediction) -> dict[Hashable, tuple[float, float]]:
    where = _scope(p)
    c, r = _by_seed(rows, where, p.candidate, p.measure), _by_seed(rows, where, p.reference, p.measure)
    return {s: (c.get(s, math.nan), r.get(s, math.nan)) for s in sorted(set(c) | set(r), key=stats.seed_order)}


def measured(rows: Sequence[Row], p: Prediction) -> bool:
    """Whether any run of the prediction's block recorded its measure (a rank test's never-reached counts)."""
    return any(math.isfinite(a) or math.isfinite(b) for a, b in _values(rows, p).values()) or any(
        r.get(p.measure) == math.inf for r in select(rows, **_scope(p))
    )


def test_predictions(rows: Sequence[Row], predictions: Sequence[Prediction]) -> list[Tested]:
    """Decide a claim's predictions as one family (Holm over it): paired ones by lossbench.decisions (with each
    prediction's own equivalence margin), rank ones by Mann-Whitney U. A prediction whose measure no run recorded
    is "not measured" and spends none of the family's budget. A family is of one kind of test."""
    if len({p.test for p in predictions}) > 1:
        raise ValueError("a claim's predictions are decided as one family: one kind of test (paired or rank)")
    live = [p for p in predictions if measured(rows, p)]
    if live and live[0].test == "rank":
        decided = dict(zip(map(id, live), rank_family(rows, live)))
    else:
        family = []
        for p in live:
            bounds = MEASURES[p.measure].bounds
            where = _scope(p)
            paired = stats.paired_difference(
                _by_seed(rows, where, p.candidate, p.measure),
                _by_seed(rows, where, p.reference, p.measure),
                bounds=(bounds[0] - bounds[1], bounds[1] - bounds[0]),
            )
            family.append(decisions.evidence(paired, _stage(rows, where, p), p.resolution, p.margin))
        decided = dict(zip(map(id, live), decisions.decide(family)))
    return [Tested(p, decided.get(id(p)), _values(rows, p)) for p in predictions]


# ------------------------------------------------------------------------------------ rank tests (censored times)

MAX_RANK_SEEDS = 40
"""A rank prediction that needs more seeds per loss than this is called undecidable at this budget."""


def _u_test(candidate: Sequence[float], reference: Sequence[float]) -> tuple[float, int]:
    """Mann-Whitney U's two-sided p-value and the direction (+1: candidate larger), +inf values ranked last (ties
    among them shared): scipy's exact test when nothing ties, its normal approximation with the tie correction else."""
    result = _stats.mannwhitneyu(candidate, reference, alternative="two-sided", method="auto")
    centre = len(candidate) * len(reference) / 2
    return float(result.pvalue), (1 if result.statistic > centre else -1 if result.statistic < centre else 0)


def rank_family(rows: Sequence[Row], predictions: Sequence[Prediction], alpha: float = decisions.ALPHA) -> list[Ranked]:
    """Each prediction's Mann-Whitney U test on the two losses' values (NaN dropped, +inf kept: censored), Holm over
    the family, and for the undecided the seeds per loss that decide it with 80 % power (:func:`rank_seeds_needed`)."""
    pairs = []
    for p in predictions:
        where = _scope(p)
        pairs.append(
            tuple(
                tuple(v for v in _by_seed(rows, where, loss, p.measure).values() if not math.isnan(v))
                for loss in (p.candidate, p.reference)
            )
        )
    testable = [i for i, (c, r) in enumerate(pairs) if min(len(c), len(r)) >= stats.MIN_SEEDS]
    tests = {i: _u_test(*pairs[i]) for i in testable}
    holm = {}
    if testable:
        holm = dict(zip(testable, multipletests([tests[i][0] for i in testable], alpha=alpha, method="holm")[1]))
    open_count = max(1, sum(1 for i in testable if holm[i] > alpha))
    out = []
    for i, (c, r) in enumerate(pairs):
        if i not in tests:
            out.append(Ranked(c, r, math.nan, math.nan, stats.TOO_FEW))
            continue
        p_value, direction = tests[i]
        if holm[i] <= alpha and direction:
            out.append(Ranked(c, r, p_value, float(holm[i]), stats.BETTER if direction > 0 else stats.WORSE))
            continue
        extra = rank_seeds_needed(c, r, alpha / open_count)
        out.append(Ranked(c, r, p_value, float(holm[i]), stats.INDISTINGUISHABLE, extra))
    return out


def rank_seeds_needed(
    candidate: Sequence[float], reference: Sequence[float], alpha: float, draws: int = 200
) -> int | None:
    """The fewest more seeds per loss with which a Mann-Whitney test at ``alpha`` decides with 80 % power, if the
    runs to come resemble these (each loss's values resampled with replacement; fixed random state); None when
    :data:`MAX_RANK_SEEDS` seeds do not."""
    rng = np.random.default_rng(0)
    c, r = np.asarray(candidate, dtype=float), np.asarray(reference, dtype=float)
    have = min(c.size, r.size)
    for n in range(have + 1, MAX_RANK_SEEDS + 1):
        hits = 0
        for _ in range(draws):
            a, b = rng.choice(c, n), rng.choice(r, n)
            if np.all(a == a[0]) and np.all(b == a[0]):
                continue
            hits += _u_test(a, b)[0] <= alpha
        if hits >= decisions.POWER * draws:
            return n - have
    return None


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
    standing: str = ""
    """Empty when the positive controls reproduced; else why this verdict has no standing."""


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


def _outcomes(cases: Sequence[Case], dims: Sequence[str]) -> str:
    return "; ".join(
        f"{outcome} for {_where([c for c in cases if c.outcome == outcome], dims)}"
        for outcome in (HOLDS, REVERSED, NO_DIFFERENCE, UNDECIDED, NOT_MEASURED)
        if any(c.outcome == outcome for c in cases)
    )


def verdict(cases: Sequence[Case], rule: str, name: Callable[[str], str] = str, decide: str | None = None) -> Verdict:
    """The claim's verdict from its predictions' outcomes (see the module's docstring). ``name`` turns a dimension
    into words (``against`` -> ``the loss compared``); ``decide`` says what would decide the undecided (default: their
    plans, listed). "Depends" needs two *decided* predictions that disagree; undecided ones never make it."""
    if decide is None:
        decide = "; ".join(sorted({c.plan for c in cases if c.outcome in (UNDECIDED, NOT_MEASURED) and c.plan}))
    if not cases:
        return Verdict(NOT_DECIDED, "no finished runs test this claim", rule, "run its protocol")
    decided = [c for c in cases if c.outcome in DECIDED]
    kinds = {c.outcome for c in decided}
    every = "its prediction" if len(cases) == 1 else f"all {len(cases)} predictions"
    if len(decided) == len(cases):
        if kinds == {HOLDS}:
            return Verdict(SUPPORTED, f"{every} {'holds' if len(cases) == 1 else 'hold'}", rule)
        if kinds == {NO_DIFFERENCE}:
            return Verdict(EQUIVALENT, f"{every}: no difference, within the stated margins", rule)
        if HOLDS not in kinds:
            return Verdict(CONTRADICTED, f"{every} decided against the claim ({_outcomes(cases, _dims(cases))})", rule)
    if HOLDS in kinds and kinds & set(AGAINST):
        dims = separating(decided)
        text = f"depends on {' and '.join(name(d) for d in dims)}: {_outcomes(decided, dims)}"
        rest = len(cases) - len(decided)
        if rest:
            text += f"; {rest} of {len(cases)} not yet decided"
        return Verdict(DEPENDS, text, rule, decide)
    if not decided:
        what = "the one prediction is" if len(cases) == 1 else f"none of the {len(cases)} predictions is"
        return Verdict(NOT_DECIDED, f"{what} decided", rule, decide)
    dims = _dims(cases)
    text = f"{len(decided)} of {len(cases)} predictions decided ({_outcomes(cases, dims)})"
    return Verdict(NOT_DECIDED, text, rule, decide)


def _dims(cases: Sequence[Case]) -> list[str]:
    return separating(cases) or ["measure"]


# ------------------------------------------------------------------------------------ claim 6: a detector


def wilson(count: int, n: int) -> stats.Interval:
    """A share ``count / n`` with its 95 % Wilson score interval (statsmodels), as an Interval in [0, 1]."""
    if n == 0:
        return stats.Interval(math.nan, math.nan, math.nan, 0, math.nan, bounds=(0.0, 1.0))
    low, high = proportion_confint(count, n, alpha=1 - stats.LEVEL, method="wilson")
    return stats.Interval(count / n, float(low), float(high), n, math.nan, bounds=(0.0, 1.0))


def detector(rows: Sequence[Row], loss: str, flagged: str, truth: str) -> tuple[stats.Interval, stats.Interval]:
    """For one loss's runs, how the detector ``flagged`` (1: says overfitting) does against ``truth`` (1: overfits):
    its sensitivity (the overfitting runs it flags) and specificity (the other runs it leaves alone), each a share
    with its Wilson interval. Runs missing either column are left out."""
    judged = [r for r in select(rows, loss=loss) if math.isfinite(r[flagged]) and math.isfinite(r[truth])]
    positive = [r for r in judged if r[truth] == 1]
    negative = [r for r in judged if r[truth] == 0]
    return (
        wilson(sum(r[flagged] == 1 for r in positive), len(positive)),
        wilson(sum(r[flagged] == 0 for r in negative), len(negative)),
    )


def detector_case(loss: str, sensitivity: stats.Interval, specificity: stats.Interval, floor: float = 0.5) -> Case:
    """Claim 6's prediction for one loss: it holds when both lower limits exceed ``floor`` (the detector tells
    overfitting from its absence), is reversed when either upper limit lies below it (an always-yes detector:
    specificity 0), undecided otherwise; undecided too when the design gave the loss no run of one kind."""
    block = {"loss": loss}
    if sensitivity.n == 0 or specificity.n == 0:
        missing = "overfitting" if sensitivity.n == 0 else "non-overfitting"
        return Case(block, UNDECIDED, f"{missing} runs of {loss} (the design gave none)")
    if sensitivity.high < floor or specificity.high < floor:
        return Case(block, REVERSED)
    if sensitivity.low > floor and specificity.low > floor:
        return Case(block, HOLDS)
    return Case(
        block, UNDECIDED, f"more runs of {loss} ({sensitivity.n} + {specificity.n} leave an interval across {floor:g})"
    )


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
    (80 % power at Holm's level), how many need a third seed first, how many no budget decides, and which measures
    the runs did not record."""
    open_ = [t for t in tested if t.outcome == UNDECIDED]
    missing = sorted({t.prediction.measure for t in tested if t.outcome == NOT_MEASURED})
    too_few = [t for t in open_ if t.decision.outcome == stats.TOO_FEW]
    planned = sorted(t.extra_seeds for t in open_ if t.extra_seeds)
    hopeless = len(open_) - len(too_few) - len(planned)
    parts = [f"runs that record {', '.join(missing)} (not measured)"] if missing else []
    if too_few:
        parts.append(f"{len(too_few)} need at least {stats.MIN_SEEDS} paired seeds before any test")
    if planned:
        span = f"{planned[0]}" if planned[0] == planned[-1] else f"{planned[0]}–{planned[-1]}"
        parts.append(f"{len(planned)} need {span} more seeds each (80 % power)")
    if hopeless:
        parts.append(
            f"{hopeless} cannot be decided by more seeds at this budget (a difference below the test set's resolution, "
            f"or more than {decisions.MAX_EXTRA_SEEDS} seeds)"
        )
    return "; ".join(parts)


def claim_by_number(number: int) -> Claim:
    return next(c for c in CLAIMS if c.number == number)
