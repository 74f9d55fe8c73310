"""Overfitting figures on synthetic curves whose best epoch, gap and onset are known by construction."""

from __future__ import annotations

import math

import pytest

from lossbench import analysis
from lossbench.analysis import Gap

NAN = math.nan


def overfitting_curves() -> dict[str, list[float]]:
    """Val NLL falls to its minimum at epoch 3, then rises for 4 epochs while train NLL keeps falling.

    Val accuracy peaks at epoch 4 (one epoch after the NLL minimum, as often happens).
    """
    return {
        "val/nll": [1.0, 0.6, 0.45, 0.40, 0.42, 0.47, 0.55, 0.60],
        "train_eval/nll": [1.1, 0.6, 0.40, 0.30, 0.25, 0.20, 0.15, 0.10],
        "val/acc": [0.70, 0.80, 0.85, 0.87, 0.88, 0.875, 0.87, 0.86],
        "train_eval/acc": [0.68, 0.81, 0.88, 0.91, 0.93, 0.95, 0.97, 0.99],
    }


def test_best_epochs_by_nll_and_by_accuracy() -> None:
    curves = overfitting_curves()
    assert analysis.best_epoch_nll(curves) == 3
    assert analysis.best_epoch_acc(curves) == 4
    assert analysis.best_epoch(curves, "train_eval/nll", "min") == 7


def test_best_epoch_skips_nan_and_breaks_ties_early() -> None:
    assert analysis.best_epoch_nll({"val/nll": [NAN, 0.5, 0.3, NAN, 0.3]}) == 2
    assert analysis.best_epoch_nll({"val/nll": [NAN, NAN]}) is None
    assert analysis.best_epoch_nll({}) is None
    with pytest.raises(ValueError, match="mode"):
        analysis.best_epoch({"val/nll": [1.0]}, "val/nll", "lowest")


def test_gap_is_positive_when_overfitting_for_both_metrics() -> None:
    gap = analysis.generalisation_gap(overfitting_curves(), 3)
    assert gap.acc == pytest.approx(0.91 - 0.87)
    assert gap.nll == pytest.approx(0.40 - 0.30)
    assert gap.acc > 0 and gap.nll > 0


def test_gap_is_nan_where_a_value_is_missing() -> None:
    curves = {"val/acc": [0.5, 0.6], "train_eval/acc": [0.5], "val/nll": [1.0, 0.9], "train_eval/nll": [1.0, NAN]}
    gap = analysis.generalisation_gap(curves, 1)
    assert math.isnan(gap.acc) and math.isnan(gap.nll)
    assert all(math.isnan(x) for x in analysis.generalisation_gap(curves, None))


def test_onset_is_the_last_epoch_before_the_rise() -> None:
    assert analysis.overfitting_onset(overfitting_curves(), patience=3) == 3
    assert analysis.overfitting_onset(overfitting_curves(), patience=4) == 3


def test_no_onset_when_validation_keeps_improving() -> None:
    curves = {"val/nll": [1.0, 0.8, 0.6, 0.5, 0.45], "train_eval/nll": [1.0, 0.7, 0.5, 0.4, 0.3]}
    assert analysis.overfitting_onset(curves) is None
    assert analysis.overfitting_onset({}) is None


def test_no_onset_when_train_nll_rises_with_validation() -> None:
    # Both rise: the run is diverging, not overfitting.
    curves = {"val/nll": [0.5, 0.4, 0.5, 0.6, 0.7], "train_eval/nll": [0.5, 0.4, 0.45, 0.5, 0.6]}
    assert analysis.overfitting_onset(curves, patience=1) is None


def test_onset_at_the_patience_boundary() -> None:
    # The rise after epoch 3 lasts exactly 4 epochs (to the end of the run): found with k=4, not k=5.
    curves = overfitting_curves()
    assert analysis.overfitting_onset(curves, patience=4) == 3
    assert analysis.overfitting_onset(curves, patience=5) is None
    # One epoch shorter: the 3-epoch rise ends on the last epoch and still counts.
    short = {k: v[:7] for k, v in curves.items()}
    assert analysis.overfitting_onset(short, patience=3) == 3
    assert analysis.overfitting_onset(short, patience=4) is None


def test_an_interrupted_rise_restarts_the_count() -> None:
    # Rises 2 epochs after epoch 1, dips at epoch 4, then rises 3 epochs after epoch 4.
    curves = {
        "val/nll": [1.0, 0.5, 0.6, 0.7, 0.55, 0.6, 0.7, 0.8],
        "train_eval/nll": [1.0, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1],
    }
    assert analysis.overfitting_onset(curves, patience=3) == 4
    assert analysis.overfitting_onset(curves, patience=2) == 1


def test_onset_with_patience_one() -> None:
    curves = {"val/nll": [1.0, 0.5, 0.6, 0.4], "train_eval/nll": [1.0, 0.5, 0.4, 0.3]}
    assert analysis.overfitting_onset(curves, patience=1) == 1
    with pytest.raises(ValueError, match="patience"):
        analysis.overfitting_onset(curves, patience=0)


def test_nan_breaks_an_onset_streak() -> None:
    # Val NLL rises from epoch 1 on, but epoch 3 is missing: the count starts again at epoch 4.
    curves = {
        "val/nll": [1.0, 0.5, 0.6, NAN, 0.7, 0.8, 0.9, 1.0],
        "train_eval/nll": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
    }
    assert analysis.overfitting_onset(curves, patience=3) == 4
    assert analysis.overfitting_onset(curves, patience=1) == 1
    # A missing train value breaks it too.
    curves = overfitting_curves()
    curves["train_eval/nll"][5] = NAN
    assert analysis.overfitting_onset(curves, patience=3) is None
    assert analysis.overfitting_onset(curves, patience=1) == 3


def test_summarize_names_and_values() -> None:
    summary = analysis.summarize(overfitting_curves(), onset_patience=3)
    assert summary == pytest.approx({
        "summary/epochs": 8.0,
        "summary/best_epoch_nll": 3.0,
        "summary/best_epoch_acc": 4.0,
        "summary/best_val_nll": 0.40,
        "summary/best_val_acc": 0.88,
        "summary/gap_acc_best": 0.91 - 0.87,
        "summary/gap_nll_best": 0.40 - 0.30,
        "summary/gap_acc_last": 0.99 - 0.86,
        "summary/gap_nll_last": 0.60 - 0.10,
        "summary/has_onset": 1.0,
        "summary/onset_epoch": 3.0,
    })
    assert list(summary) == [k for k in analysis.SUMMARY_KEYS if k in summary]


def test_summarize_leaves_out_what_is_undefined() -> None:
    # A run that diverged in epoch 2: validation missing from then on, no train_eval accuracy.
    curves = {"val/nll": [0.9, 0.7, NAN], "val/acc": [0.6, 0.7, NAN], "train_eval/nll": [0.95, 0.6, NAN]}
    summary = analysis.summarize(curves)
    assert summary["summary/epochs"] == 2.0
    assert summary["summary/best_epoch_nll"] == 1.0
    assert summary["summary/gap_nll_last"] == pytest.approx(0.1)
    assert summary["summary/has_onset"] == 0.0
    assert "summary/onset_epoch" not in summary
    assert "summary/gap_acc_best" not in summary and "summary/gap_acc_last" not in summary
    assert all(math.isfinite(v) for v in summary.values())
    assert analysis.summarize({}) == {"summary/epochs": 0.0, "summary/has_onset": 0.0}


def test_last_epoch_ignores_trailing_missing_validation() -> None:
    assert analysis.last_epoch({"val/nll": [1.0, 0.9, NAN, NAN], "val/acc": [0.1, 0.2, 0.3]}) == 2
    assert analysis.last_epoch({"train/loss": [1.0]}) is None


def test_dense_curve_fills_gaps_and_keeps_the_latest_duplicate() -> None:
    curve = analysis.dense_curve([(0, 1.0), (2, 3.0), (1, 2.0), (2, 2.5)])
    assert curve == [1.0, 2.0, 2.5]
    gappy = analysis.dense_curve([(0, 1.0), (3, 4.0)])
    assert gappy[0] == 1.0 and math.isnan(gappy[1]) and math.isnan(gappy[2]) and gappy[3] == 4.0
    assert analysis.dense_curve([]) == []


def test_memorisation_drop() -> None:
    assert analysis.memorisation_drop({"test/acc": 0.9, "test_last/acc": 0.8}) == pytest.approx(0.1)
    assert analysis.memorisation_drop({"test/acc": 0.9}) is None
    assert analysis.memorisation_drop({"test/acc": 0.9, "test_last/acc": NAN}) is None
    assert analysis.summarize_test({"test/acc": 0.9, "test_last/acc": 0.85}) == pytest.approx(
        {"summary/memorisation_drop": 0.05})
    assert analysis.summarize_test({}) == {}


def test_gap_is_a_named_tuple() -> None:
    assert Gap(acc=0.1, nll=0.2) == (0.1, 0.2)
