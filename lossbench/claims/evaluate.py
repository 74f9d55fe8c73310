"""Each claim's predictions, measured figures and notes, from the tidy table of every protocol's runs. Pure functions:
:func:`evaluate` is what ``python -m lossbench.claims`` calls, and each ``claim_<n>`` can be called on a synthetic
table (tests/test_claims.py builds ones that support, contradict and leave a claim undecided).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from lossbench import stats
from lossbench.claims import claim1, rules
from lossbench.claims.protocols import written as written_specs
from lossbench.claims.results import (
    CONFIDENT_WRONG,
    CONFIDENT_WRONG_GRAD,
    CONFIDENT_WRONG_LOSS,
    ECE_TS,
    INPUT_MARGIN,
    NLL_TS,
    OVERFIT_ACC,
    OWN_ECE,
    OWN_ECE_TS,
    OWN_NLL,
    OWN_NLL_TS,
    STILL_IMPROVING,
    TRAIN_INPUT_MARGIN,
    Row,
)
from lossbench.claims.rules import (
    EPOCHS_TO_TARGET,
    HOLDS,
    MEASURES,
    REACHED,
    RULE_DETECTOR,
    RULE_PAIRED,
    RULE_RANK,
    SENSITIVITY,
    SPECIFICITY,
    Case,
    Finding,
    Measured,
    Prediction,
    Tested,
    claim_by_number,
    decide_text,
    detector,
    detector_case,
    measure_groups,
    prediction_of,
    select,
    test_predictions,
    verdict,
    with_censored_epochs,
)
from lossbench.names import (
    SUMMARY_LOSS_HAS_ONSET,
    TEST_ACC,
    TEST_LAST_ACC,
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
    count = {o: sum(t.outcome == o for t in tested) for o in rules.OUTCOMES}
    first = min(tested, key=lambda t: (t.outcome not in rules.DECIDED, _p(t)))
    where = ", ".join(str(v) for k, v in first.prediction.block.items() if k not in ("loss", "against"))
    counts = ", ".join(f"{count[o]} {o}" for o in rules.OUTCOMES[1:] if count[o])
    return (
        f"{count[HOLDS]}/{len(tested)} hold{', ' + counts if counts else ''}; "
        f"e.g. {where}: {first.prediction.label} = {_short(first)}"
    )


def _p(t: Tested) -> float:
    p = getattr(t.decision, "p_holm", math.nan)
    return p if math.isfinite(p) else math.inf


def paired_finding(
    number: int, rows: Sequence[Row], predictions: Sequence[Prediction], measured: list[Measured], notes: list[str]
) -> Finding:
    """A claim decided by paired predictions: test them as one family, read the verdict."""
    tested = test_predictions(rows, predictions)
    cases = [Case(t.prediction.block, t.outcome, t.plan) for t in tested]
    rank = any(p.test == "rank" for p in predictions)
    rule = (RULE_RANK if rank else RULE_PAIRED).format(n=len(predictions))
    if predictions and all(p.protocol for p in predictions):  # read from conf/claims.yaml, not made up in code
        rule = "Predictions written before the run (conf/claims.yaml): " + rule
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


def written(number: int | str, rows: Sequence[Row] = ()) -> list[Prediction]:
    """Claim ``number``'s predictions as conf/claims.yaml wrote them before the run (``controls``: the positive
    controls), each accuracy prediction with its test set's resolution (one image's share) from ``rows``."""
    specs = written_specs()["controls"] if number == "controls" else written_specs()["claims"].get(number, [])
    out = []
    for spec in specs:
        sizes = [r["test_images"] for r in select(rows, protocol=spec["protocol"]) if r.get("test_images")]
        accuracy = spec["measure"] in (TEST_ACC, TEST_LAST_ACC)
        out.append(prediction_of(spec, stats.resolution_of(min(sizes)) if accuracy and sizes else None))
    return out


def _protocol_rows(rows: Sequence[Row], predictions: Sequence[Prediction]) -> list[Row]:
    protocols = {p.protocol for p in predictions}
    return with_censored_epochs([r for r in rows if r["protocol"] in protocols])


def improving_note(rows: Sequence[Row]) -> list[str]:
    """How many runs of each loss may still have been improving at the end (their best validation accuracy within
    ``analysis.patience`` epochs of the last): the check that the protocol trains long enough."""
    parts = []
    for loss in _values(rows, "loss"):
        judged = [r for r in select(rows, loss=loss) if math.isfinite(r.get(STILL_IMPROVING, math.nan))]
        if judged:
            parts.append(f"{loss} {sum(r[STILL_IMPROVING] == 1 for r in judged)} of {len(judged)}")
    if not parts:
        return []
    return [
        "Runs still improving at the end (best validation accuracy within the last analysis.patience epochs): "
        + ", ".join(parts)
        + "."
    ]


def claim_2(rows: Sequence[Row]) -> Finding:
    """MAE needs more epochs than MSE to reach the target validation accuracy, on each model (censored runs kept)."""
    predictions = written(2, rows)
    rows = _protocol_rows(rows, predictions)
    shown = [
        {**r, EPOCHS_TO_TARGET: r[EPOCHS_TO_TARGET] if math.isfinite(r[EPOCHS_TO_TARGET]) else math.nan} for r in rows
    ]
    by = ("model", "loss")
    measured = measure_groups(shown, EPOCHS_TO_TARGET, by) + measure_groups(rows, REACHED, by)
    targets = _values(rows, "target_acc")
    notes = [
        f"Target: validation accuracy {', '.join(f'{t:.0%}' for t in targets) or '(none set)'}. The epochs shown are "
        "those of the runs that reached it; the test ranks every run, one that never reached it behind all that did."
    ]
    for model in _values(rows, "model"):
        for loss in _values(rows, "loss"):
            mine = [r for r in select(rows, loss=loss, model=model) if math.isfinite(r["target_acc"])]
            censored = sum(1 for r in mine if r[REACHED] == 0)
            if censored:
                notes.append(
                    f"{model}: {censored} of {len(mine)} {loss} runs never reached it (censored: kept, ranked last)."
                )
    return paired_finding(2, rows, predictions, measured, notes + improving_note(rows))


def claim_3(rows: Sequence[Row]) -> Finding:
    """CE gives confident mistakes a larger loss and a larger gradient, relative to its average, than MSE and MAE."""
    predictions = written(3, rows)
    rows = _protocol_rows(rows, predictions)
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
    if missing and any(math.isfinite(r[CONFIDENT_WRONG_LOSS]) for r in rows):
        notes.append(f"{missing} runs had no test image wrong with confidence ≥ 0.9: no value, their seeds left out.")
    return paired_finding(3, rows, predictions, measured, notes)


def claim_4(rows: Sequence[Row]) -> Finding:
    """Under an L2 penalty, hinge's training images lie further from the nearest boundary than CE's and MSE's."""
    predictions = written(4, rows)
    rows = _protocol_rows(rows, predictions)
    by = ("weight_decay", "loss")
    measured = measure_groups(rows, TRAIN_INPUT_MARGIN, by) + measure_groups(rows, INPUT_MARGIN, by)
    notes = [
        "Margin: the distance from an image to the nearest decision boundary over all classes, in the (normalised) "
        "input space, negative when wrong (exact for the linear model); the L2 penalty is optimizer.weight_decay, "
        "the SVM's C swept (weight decay 0: no penalty, shown, not predicted).",
        *improving_note(rows),
    ]
    return paired_finding(4, rows, predictions, measured, notes)


def claim_5(rows: Sequence[Row]) -> Finding:
    """CE's own probabilities have a lower test NLL than each other loss's own (BCE's sigmoids), raw."""
    predictions = written(5, rows)
    rows = _protocol_rows(rows, predictions)
    by = ("model", "loss")
    measured = [
        g for m in (OWN_NLL, OWN_ECE, OWN_NLL_TS, OWN_ECE_TS, NLL_TS, ECE_TS) for g in measure_groups(rows, m, by)
    ]
    notes = [
        "Own probabilities: the ones each loss trains (BCE's sigmoids; the softmax for CE, MSE and MAE, which train "
        "it); hinge trains none. Temperature scaling (one temperature fitted on validation) leaves the ranking of "
        "the predictions unchanged: what remains of a gap after it is not calibration.",
        *improving_note(rows),
    ]
    return paired_finding(5, rows, predictions, measured, notes)


def claim_6(rows: Sequence[Row]) -> Finding:
    """The claim's rule on a loss's own val/loss detects overfitting defined on accuracy (sensitivity and
    specificity above 1/2, Wilson intervals), for each loss."""
    spec = written_specs()["detector"]
    rows = select(rows, protocol=spec["protocol"])
    measured, cases, notes = [], [], []
    for loss in _values(rows, "loss"):
        sensitivity, specificity = detector(rows, loss, SUMMARY_LOSS_HAS_ONSET, OVERFIT_ACC)
        measured += [
            Measured({"loss": loss}, SENSITIVITY, {}, sensitivity),
            Measured({"loss": loss}, SPECIFICITY, {}, specificity),
        ]
        cases.append(detector_case(loss, sensitivity, specificity, float(spec["floor"])))
        mine = select(rows, loss=loss)
        truth = sum(r[OVERFIT_ACC] == 1 for r in mine)
        flagged = sum(r[SUMMARY_LOSS_HAS_ONSET] == 1 for r in mine)
        notes.append(f"{loss}: {truth} of {len(mine)} runs overfit on accuracy; its own val/loss flags {flagged}.")
    if rows and not any(math.isfinite(r[OVERFIT_ACC]) for r in rows):
        notes.append("Not measured: no run's validation and training accuracy curves were read.")
    return Finding(
        claim_by_number(6),
        verdict(cases, RULE_DETECTOR, lambda d: DIMENSION_WORDS.get(d, d)),
        measured,
        [],
        notes + improving_note(rows),
        _detector_key(measured),
    )


def _detector_key(measured: Sequence[Measured]) -> str:
    by_loss: dict[str, list[str]] = {}
    for m in measured:
        by_loss.setdefault(m.group["loss"], []).append(f"{MEASURES[m.measure].short} {m.text}")
    return "; ".join(f"{loss}: {', '.join(parts)}" for loss, parts in by_loss.items()) or "no runs"


def claim_7(rows: Sequence[Row]) -> Finding:
    """Two classes: one sigmoid logit and a softmax over two logits tie (equivalent within the margin); ten classes:
    CE ahead of BCE's one-vs-rest sigmoids (test accuracy at the selected epoch, paired by seed)."""
    predictions = written(7, rows)
    rows = [r for r in _protocol_rows(rows, predictions) if r["loss"] in ("ce", "bce", "bce_single")]
    by = ("classes", "model", "loss")
    measured = measure_groups(rows, TEST_ACC, by)
    notes = [
        "On two classes, a softmax over two logits depends only on their difference: the same model as one logistic "
        "unit (bce_single), so theory predicts a tie; what differs is the parametrisation the optimizer sees. On ten "
        "classes BCE trains ten one-vs-rest sigmoids.",
        *improving_note(rows),
    ]
    return paired_finding(7, rows, predictions, measured, notes)


def claim_8(rows: Sequence[Row]) -> Finding:
    """Claim 1's classification form: MAE loses less test accuracy to flipped labels than CE (paired by seed)."""
    rows, predictions, measured, notes = claim1.label_noise_parts(rows)
    return paired_finding(8, rows, predictions, measured, notes)


# ------------------------------------------------------------------------------------ positive controls


def controls(rows: Sequence[Row]) -> list[Tested]:
    """The positive controls (conf/claims.yaml), each decided on its own at α: all must hold for the verdicts to
    stand (an intersection-union test: no multiplicity correction is due)."""
    out = []
    for p in written("controls", rows):
        out += test_predictions(_protocol_rows(rows, [p]), [p])
    return out


def standing(tested: Sequence[Tested]) -> str:
    """Empty when every positive control held; else what failed, the reason the verdicts have no standing."""
    failed = [t for t in tested if t.outcome != HOLDS]
    if not failed:
        return ""
    return "no standing: " + "; ".join(f"{_control_name(t)} {t.outcome}" for t in failed)


def _control_name(t: Tested) -> str:
    return f"control {t.prediction.expects} on {MEASURES[t.prediction.measure].short}"


CLAIM_RULES = (claim_1, claim_2, claim_3, claim_4, claim_5, claim_6, claim_7, claim_8)


def evaluate(rows: Sequence[Row]) -> list[Finding]:
    """Every claim's finding, in order; each verdict without standing when a positive control did not hold."""
    without = standing(controls(rows))
    findings = [rule(rows) for rule in CLAIM_RULES]
    return [replace(f, verdict=replace(f.verdict, standing=without)) for f in findings]
