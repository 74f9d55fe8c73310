"""Each claim's predictions, measured figures and notes, from the tidy table of every protocol's runs. Pure functions:
:func:`evaluate` is what ``python -m lossbench.claims`` calls, and each ``claim_<n>`` can be called on a synthetic
table (tests/test_claims.py builds ones that support, contradict and leave a claim undecided).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lossbench import stats
from lossbench.claims import claim1
from lossbench.claims.results import (
    CONFIDENT_WRONG,
    CONFIDENT_WRONG_GRAD,
    CONFIDENT_WRONG_LOSS,
    INPUT_MARGIN,
    SUMMARY_HAS_ONSET,
    Row,
)
from lossbench.claims.rules import (
    AGREEMENT,
    EPOCHS_TO_TARGET,
    HOLDS,
    MEASURES,
    MISSED,
    REVERSED,
    RULE_AGREEMENT,
    RULE_PAIRED,
    UNDECIDED,
    Case,
    Finding,
    Measured,
    Prediction,
    Tested,
    agreement,
    agreement_case,
    claim_by_number,
    decide_text,
    measure_groups,
    select,
    test_predictions,
    verdict,
    with_censored_epochs,
)
from lossbench.names import (
    SUMMARY_EPOCHS_TO_TARGET,
    SUMMARY_LOSS_HAS_ONSET,
    SUMMARY_SECONDS_TO_TARGET,
    TEST_ACC,
    TEST_ECE,
    TEST_MARGIN_GE1,
    TEST_NLL,
)

DIMENSION_WORDS = {"against": "the loss compared", "classes": "the number of classes", "loss": "the loss"}


def _values(rows: Sequence[Row], column: str) -> list:
    return sorted({r[column] for r in rows if r.get(column) is not None}, key=str)


def _short(t: Tested) -> str:
    """A tested difference without its p: ``+3.2 [+1.1, +5.3] epochs``."""
    return t.difference.split(", p=")[0]


def key_figure(tested: Sequence[Tested]) -> str:
    """``2/4 hold, 0 reversed, 2 undecided; e.g. mlp: mae − mse = +3.2 [1.1, 5.3] epochs`` (the most decided one)."""
    if not tested:
        return "no predictions tested"
    count = {o: sum(t.outcome == o for t in tested) for o in (HOLDS, REVERSED, UNDECIDED)}
    first = min(tested, key=lambda t: (t.outcome == UNDECIDED, _p(t)))
    where = ", ".join(str(v) for k, v in first.prediction.block.items() if k not in ("loss", "against"))
    return (
        f"{count[HOLDS]}/{len(tested)} hold, {count[REVERSED]} reversed, {count[UNDECIDED]} undecided; "
        f"e.g. {where}: {first.prediction.label} = {_short(first)}"
    )


def _p(t: Tested) -> float:
    return t.decision.p_holm if math.isfinite(t.decision.p_holm) else math.inf


def paired_finding(
    number: int, rows: Sequence[Row], predictions: Sequence[Prediction], measured: list[Measured], notes: list[str]
) -> Finding:
    """A claim decided by paired predictions: test them as one family, read the verdict."""
    tested = test_predictions(rows, predictions)
    cases = [Case(t.prediction.block, t.outcome, t.plan) for t in tested]
    rule = RULE_PAIRED.format(n=len(predictions))
    judged = verdict(cases, rule, lambda d: DIMENSION_WORDS.get(d, d), decide_text(tested))
    return Finding(claim_by_number(number), judged, measured, tested, notes, key_figure(tested))


def claim_1(rows: Sequence[Row]) -> Finding:
    """MSE's clean-target error rises more than MAE's and Huber's with outlier training targets (regression, paired by
    seed; lossbench.claims.claim1)."""
    rows, predictions, measured, notes = claim1.parts(rows)
    return paired_finding(1, rows, predictions, measured, notes)


def spread_notes(rows: Sequence[Row], measure: str, wide: float = 0.05) -> list[str]:
    """A note for each loss and model whose runs differ by more than ``wide`` (5 pp) across seeds on clean data:
    a spread that large swamps the differences a claim predicts at a few seeds."""
    notes = []
    for loss in _values(rows, "loss"):
        for model in _values(rows, "model"):
            values = [r[measure] for r in select(rows, loss=loss, model=model) if math.isfinite(r[measure])]
            if len(values) > 1 and max(values) - min(values) > wide:
                notes.append(
                    f"{loss} on {model}, clean data: {MEASURES[measure].label} from {min(values):.1%} to "
                    f"{max(values):.1%} across seeds, a spread larger than most differences the claim predicts."
                )
    return notes


def claim_2(rows: Sequence[Row]) -> Finding:
    """MAE needs more epochs than MSE to reach the target validation accuracy, on each model."""
    rows = with_censored_epochs(select(rows, protocol="claim_losses"))
    predictions = [Prediction((("model", m),), EPOCHS_TO_TARGET, "mae", "mse", +1) for m in _values(rows, "model")]
    by = ("model", "loss")
    measured = measure_groups(rows, EPOCHS_TO_TARGET, by) + measure_groups(rows, SUMMARY_SECONDS_TO_TARGET, by)
    targets = _values(rows, "target_acc")
    notes = [f"Target: validation accuracy {', '.join(f'{t:.0%}' for t in targets) or '(none set)'}."]
    for loss in _values(rows, "loss"):
        mine = select(rows, loss=loss)
        censored = sum(
            1 for r in mine if math.isfinite(r["target_acc"]) and not math.isfinite(r[SUMMARY_EPOCHS_TO_TARGET])
        )
        if censored:
            notes.append(
                f"{censored} of {len(mine)} {loss} runs never reached it (counted as one epoch past their last)."
            )
    return paired_finding(2, rows, predictions, measured, notes)


def claim_3(rows: Sequence[Row]) -> Finding:
    """CE gives confident mistakes a larger loss and a larger gradient, relative to its average, than MSE and MAE."""
    rows = select(rows, protocol="claim_losses")
    predictions = [
        Prediction((("model", m),), measure, "ce", other, +1)
        for m in _values(rows, "model")
        for measure in (CONFIDENT_WRONG_LOSS, CONFIDENT_WRONG_GRAD)
        for other in ("mse", "mae")
    ]
    by = ("model", "loss")
    measured = [
        g
        for measure in (CONFIDENT_WRONG, CONFIDENT_WRONG_LOSS, CONFIDENT_WRONG_GRAD)
        for g in measure_groups(rows, measure, by)
    ]
    missing = sum(1 for r in rows if not math.isfinite(r[CONFIDENT_WRONG_LOSS]))
    notes = [
        "Relative to the average test image, so that losses on different scales compare: 1 = a confident mistake is "
        "treated like any image. Gradients are with respect to the logits."
    ]
    if missing:
        notes.append(f"{missing} runs had no test image wrong with confidence ≥ 0.9: no value, their seeds left out.")
    return paired_finding(3, rows, predictions, measured, notes)


def claim_4(rows: Sequence[Row]) -> Finding:
    """Hinge's test images lie further from the decision boundary (in input space) than CE's and MSE's."""
    rows = select(rows, protocol="claim_losses")
    predictions = [
        Prediction((("model", m),), INPUT_MARGIN, "hinge", other, +1)
        for m in _values(rows, "model")
        for other in ("ce", "mse")
    ]
    by = ("model", "loss")
    measured = measure_groups(rows, INPUT_MARGIN, by) + measure_groups(rows, TEST_MARGIN_GE1, by)
    notes = [
        "Input margin: the logit margin z_y − max_{k≠y} z_k over the norm of its gradient with respect to the "
        "(normalised) image, negative when wrong; in input units, so it compares across losses. The logit margin "
        "≥ 1 is in each loss's own logit scale and does not."
    ]
    return paired_finding(4, rows, predictions, measured, notes)


def claim_5(rows: Sequence[Row]) -> Finding:
    """CE's probabilities are better (lower NLL and ECE) than those of each other loss."""
    rows = select(rows, protocol="claim_losses")
    others = [loss for loss in ("mse", "mae", "hinge", "bce") if select(rows, loss=loss)]
    predictions = [
        Prediction((("model", m),), measure, other, "ce", +1)
        for m in _values(rows, "model")
        for measure in (TEST_NLL, TEST_ECE)
        for other in others
    ]
    by = ("model", "loss")
    measured = measure_groups(rows, TEST_NLL, by) + measure_groups(rows, TEST_ECE, by)
    notes = ["The probabilities are the softmax of each model's logits, whatever the loss trained them."]
    return paired_finding(5, rows, predictions, measured, notes)


def claim_6(rows: Sequence[Row]) -> Finding:
    """A loss's own val/loss rule agrees with the yardsticks' overfitting verdict in most of its runs."""
    rows = select(rows, protocol="claim_overfitting")
    measured, cases, notes = [], [], []
    for loss in _values(rows, "loss"):
        share, missed = agreement(rows, loss)
        measured += [Measured({"loss": loss}, AGREEMENT, {}, share), Measured({"loss": loss}, MISSED, {}, missed)]
        mine = select(rows, loss=loss)
        yard = sum(r[SUMMARY_HAS_ONSET] == 1 for r in mine)
        cases.append(agreement_case(loss, share, yard))
        own = sum(r[SUMMARY_LOSS_HAS_ONSET] == 1 for r in mine)
        notes.append(f"{loss}: the yardsticks call {yard} of {len(mine)} runs overfitting, its own val/loss {own}.")
    return Finding(
        claim_by_number(6),
        verdict(cases, RULE_AGREEMENT, lambda d: DIMENSION_WORDS.get(d, d)),
        measured,
        [],
        notes,
        _agreement_key(measured),
    )


def _agreement_key(measured: Sequence[Measured]) -> str:
    shares = [m for m in measured if m.measure == AGREEMENT]
    return "; ".join(f"{m.group['loss']} {m.text}" for m in shares) or "no runs"


def claim_7(rows: Sequence[Row]) -> Finding:
    """CE is ahead of BCE on ten classes, BCE ahead of CE on two, on each model (test accuracy, paired by seed)."""
    rows = select(rows, protocol="claim_losses") + select(rows, protocol="claim_binary")
    rows = [r for r in rows if r["loss"] in ("ce", "bce")]
    predictions = []
    for classes in _values(rows, "classes"):
        for m in _values(select(rows, classes=classes), "model"):
            sizes = [r["test_images"] for r in select(rows, classes=classes, model=m) if r["test_images"]]
            ahead, behind = ("bce", "ce") if classes == 2 else ("ce", "bce")
            resolution = stats.resolution_of(min(sizes)) if sizes else None
            predictions.append(
                Prediction((("classes", classes), ("model", m)), TEST_ACC, ahead, behind, +1, resolution)
            )
    by = ("classes", "model", "loss")
    measured = measure_groups(rows, TEST_ACC, by) + measure_groups(rows, TEST_NLL, by)
    notes = [
        "On two classes, softmax CE over two logits is the same model as one logistic unit on their difference; BCE "
        "trains two one-vs-rest sigmoids. On ten classes BCE trains ten one-vs-rest sigmoids."
    ]
    return paired_finding(7, rows, predictions, measured, notes)


def claim_8(rows: Sequence[Row]) -> Finding:
    """Claim 1's classification form: MAE loses less test accuracy to flipped labels than CE (paired by seed)."""
    rows, predictions, measured, notes = claim1.label_noise_parts(rows)
    return paired_finding(8, rows, predictions, measured, notes)


CLAIM_RULES = (claim_1, claim_2, claim_3, claim_4, claim_5, claim_6, claim_7, claim_8)


def evaluate(rows: Sequence[Row]) -> list[Finding]:
    """Every claim's finding, in order."""
    return [rule(rows) for rule in CLAIM_RULES]
