"""Overfitting verdicts on synthetic curves whose answer is known by construction, and on recorded real curves.

tests/data/real_curves.json holds Fashion-MNIST curves recorded with lossbench (the commands are in
its ``_about``): a change of rule is judged against what those runs plainly show.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lossbench import analysis
from lossbench.analysis import Rule
from lossbench.names import GAP_ACC, GAP_NLL, NLL_DRIFT, SUMMARY_KEYS, VAL_NLL_RISE

NAN = math.nan
REAL = {
    k: v
    for k, v in json.loads((Path(__file__).parent / "data" / "real_curves.json").read_text()).items()
    if not k.startswith("_")
}


def overfitting_curves() -> dict[str, list[float]]:
    """Val NLL falls to its minimum at epoch 4 (epochs count from 1), then rises for 6 epochs while train NLL keeps falling."""
    return {
        "val/nll": [1.0, 0.6, 0.45, 0.40, 0.42, 0.47, 0.55, 0.60, 0.66, 0.72],
        "train_eval/nll": [1.1, 0.6, 0.40, 0.30, 0.25, 0.20, 0.15, 0.10, 0.08, 0.06],
        "val/acc": [0.70, 0.80, 0.85, 0.87, 0.88, 0.875, 0.87, 0.865, 0.86, 0.86],
        "train_eval/acc": [0.68, 0.81, 0.88, 0.91, 0.93, 0.95, 0.97, 0.98, 0.99, 0.99],
    }


def test_smoothing_is_a_centred_mean_that_keeps_gaps() -> None:
    assert analysis.smoothed([1.0, 2.0, 3.0, 10.0], 3) == pytest.approx([1.5, 2.0, 5.0, 6.5])
    assert analysis.smoothed([1.0, 2.0], 1) == [1.0, 2.0]
    out = analysis.smoothed([1.0, NAN, 3.0], 3)
    assert out[0] == 1.0 and math.isnan(out[1]) and out[2] == 3.0


def test_a_clean_rise_after_the_minimum_is_overfitting_from_that_epoch() -> None:
    verdict = analysis.judge(overfitting_curves())
    # Smoothed val NLL: minimum at epoch 4 ((0.45 + 0.40 + 0.42) / 3 = 0.4233), end (0.66 + 0.72) / 2 = 0.69.
    assert verdict.kind == "overfits" and verdict.onset_epoch == 4
    assert verdict.nll.val_best == pytest.approx((0.45 + 0.40 + 0.42) / 3)
    assert verdict.nll.val_end == pytest.approx((0.66 + 0.72) / 2)
    assert verdict.text.startswith(
        "overfits after epoch 4 (smoothed val NLL lowest at epoch 4, +63 % by epoch 10 while train_eval NLL -78 %"
    )
    assert verdict.gap_last.acc == pytest.approx(0.99 - 0.86)
    # Without smoothing the raw minimum (epoch 4) decides too.
    assert analysis.judge(overfitting_curves(), Rule(smooth=1)).onset_epoch == 4


def test_a_noisy_plateau_is_not_overfitting() -> None:
    wobble = [0.0, 0.03, -0.02, 0.04, -0.03, 0.02, -0.01, 0.03, -0.02, 0.01, 0.02, -0.02]
    curves = {
        "val/nll": [1.0, 0.7, 0.55] + [0.50 + w for w in wobble],
        "train_eval/nll": [1.0, 0.65, 0.5] + [0.45 - 0.01 * i for i in range(len(wobble))],
        "val/acc": [0.7, 0.8, 0.84] + [0.85 - w / 10 for w in wobble],
        "train_eval/acc": [0.7, 0.8, 0.85] + [0.86 + 0.002 * i for i in range(len(wobble))],
    }
    verdict = analysis.judge(curves)
    assert verdict.kind == "stable" and verdict.onset_epoch is None
    # The old rule's failure mode: one strict rise after a dip. Any single wobble here is +4 % to +8 %.
    assert not verdict.nll.worse


def test_nll_rising_on_train_and_validation_together_is_drift_not_overfitting() -> None:
    curves = {
        "val/nll": [1.2, 1.0, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5],
        "train_eval/nll": [1.1, 0.9, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4],
        "val/acc": [0.70, 0.75, 0.78, 0.79, 0.80, 0.80, 0.805, 0.80, 0.81],
        "train_eval/acc": [0.70, 0.76, 0.79, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86],
    }
    verdict = analysis.judge(curves)
    assert verdict.kind == "drift" and verdict.onset_epoch is None
    assert verdict.nll.worse and not verdict.nll.train_better
    assert verdict.text.startswith("no overfitting; NLL drifts with train")
    summary = analysis.summarize(curves)
    assert summary["summary/drift"] == 1.0 and summary["summary/has_onset"] == 0.0
    assert summary["summary/val_nll_rise"] == pytest.approx(((1.4 + 1.5) / 2) / ((0.9 + 1.0 + 1.0) / 3) - 1)


def test_monotone_improvement_is_still_improving() -> None:
    curves = {
        "val/nll": [1.0, 0.8, 0.6, 0.5, 0.45, 0.42],
        "train_eval/nll": [1.0, 0.7, 0.5, 0.4, 0.3, 0.25],
        "val/acc": [0.6, 0.7, 0.75, 0.78, 0.8, 0.81],
        "train_eval/acc": [0.6, 0.72, 0.78, 0.82, 0.85, 0.87],
    }
    verdict = analysis.judge(curves)
    assert verdict.kind == "improving" and verdict.onset_epoch is None
    assert analysis.judge({}).kind == "unknown"


def test_validation_accuracy_falling_while_train_accuracy_rises_is_overfitting() -> None:
    curves = {
        "val/acc": [0.70, 0.80, 0.85, 0.84, 0.83, 0.82, 0.81, 0.80],
        "train_eval/acc": [0.70, 0.82, 0.88, 0.91, 0.94, 0.96, 0.98, 0.99],
    }
    verdict = analysis.judge(curves)
    # Smoothed val acc peaks at epoch 4 ((0.85 + 0.84 + 0.83) / 3 = 0.84) and ends at 0.805 at epoch 8.
    assert verdict.kind == "overfits" and verdict.onset_epoch == 4 and verdict.nll is None
    assert "smoothed val acc highest at epoch 4, -3.5 pp by epoch 8 while train_eval acc +7.5 pp" in verdict.text


def test_a_rise_too_close_to_the_end_is_not_yet_overfitting() -> None:
    curves = {k: v[:7] for k, v in overfitting_curves().items()}  # minimum at 4, 3 epochs after it (+20 %)
    assert analysis.judge(curves).kind == "overfits"
    assert analysis.judge(curves, Rule(patience=4)).kind == "peaked"
    assert (
        "peaked at epoch 5 of 7, too close to the end to judge (patience 4)"
        in analysis.judge(curves, Rule(patience=4)).text
    )


def test_the_margin_decides_how_large_a_rise_counts() -> None:
    curves = overfitting_curves()
    assert analysis.judge(curves, Rule(margin_nll=0.6, margin_acc=0.5)).kind == "overfits"
    assert analysis.judge(curves, Rule(margin_nll=0.7, margin_acc=0.5)).kind == "stable"
    with pytest.raises(ValueError, match="at least 1"):
        Rule(smooth=0)
    assert Rule.from_config(
        {"smooth": 5, "patience": 2, "margin_nll": 0.2, "margin_acc": 0.02, "figures": True}
    ) == Rule(5, 2, 0.2, 0.02)


@pytest.mark.parametrize("seed", ["s0", "s1"])
def test_recorded_cross_entropy_on_2000_images_overfits_between_epochs_4_and_12(seed: str) -> None:
    curves = REAL[f"overfit25/ce/{seed}"]
    verdict = analysis.judge(curves)
    assert verdict.kind == "overfits" and 5 <= verdict.onset_epoch <= 13
    assert verdict.nll.val_change / verdict.nll.val_best > 0.3, "val NLL ends far above its minimum"
    assert verdict.nll.train_end < 0.3 * verdict.nll.train_at_best, "while train NLL keeps falling"


@pytest.mark.parametrize("seed", ["s0", "s1"])
def test_recorded_mae_drifts_and_is_selected_late_by_accuracy(seed: str) -> None:
    curves = REAL[f"overfit25/mae/{seed}"]
    verdict = analysis.judge(curves)
    assert verdict.kind == "drift", verdict.text
    assert verdict.nll.train_change > 0, "training NLL rises too"
    selected_by_acc = analysis.best_epoch(curves, "val/acc", "max")
    selected_by_nll = analysis.best_epoch(curves, "val/nll", "min")
    assert selected_by_acc >= 16 and selected_by_nll <= 8


@pytest.mark.parametrize("name", ["full10/ce/s0", "full10/ce/s1", "full10/mae/s0", "full10/mae/s1"])
def test_recorded_runs_on_10000_images_for_10_epochs_do_not_overfit(name: str) -> None:
    verdict = analysis.judge(REAL[name])
    assert verdict.kind != "overfits", verdict.text
    assert verdict.kind == ("peaked" if "/ce/" in name else "drift"), "ce's smoothed val acc peaks at epoch 9 of 10"
    if "/ce/" in name:
        assert "peaked at epoch 9 of 10" in verdict.text and "still improving" not in verdict.text


def test_old_rule_missed_the_recorded_overfitting() -> None:
    """The rule this replaced ("val NLL rises 3 epochs in a row while train NLL falls") found nothing here."""
    for seed in ("s0", "s1"):
        curves = REAL[f"overfit25/ce/{seed}"]
        val, train = curves["val/nll"], curves["train_eval/nll"]
        streak, found = 0, False
        for e in range(1, len(val)):
            streak = streak + 1 if val[e] > val[e - 1] and train[e] < train[e - 1] else 0
            found = found or streak == 3
        assert not found
        assert analysis.judge(curves).kind == "overfits"


def test_best_epoch_skips_nan_and_breaks_ties_early() -> None:
    assert analysis.best_epoch({"val/nll": [NAN, 0.5, 0.3, NAN, 0.3]}, "val/nll", "min") == 3
    assert analysis.best_epoch({"val/acc": [0.5, 0.8, 0.8]}) == 2
    assert analysis.best_epoch({"val/nll": [NAN, NAN]}, "val/nll", "min") is None
    with pytest.raises(ValueError, match="mode"):
        analysis.best_epoch({"val/nll": [1.0]}, "val/nll", "lowest")


def test_gap_is_positive_when_overfitting_for_both_metrics() -> None:
    gap = analysis.generalisation_gap(overfitting_curves(), 4)
    assert gap.acc == pytest.approx(0.91 - 0.87)
    assert gap.nll == pytest.approx(0.40 - 0.30)
    curves = {"val/acc": [0.5, 0.6], "train_eval/acc": [0.5], "val/nll": [1.0, 0.9], "train_eval/nll": [1.0, NAN]}
    gap = analysis.generalisation_gap(curves, 2)
    assert math.isnan(gap.acc) and math.isnan(gap.nll)
    assert analysis.generalisation_gap(curves, 1) == (0.0, 0.0)
    assert all(math.isnan(x) for x in analysis.generalisation_gap(curves, None))


def test_summarize_names_and_values() -> None:
    curves = overfitting_curves()
    summary = analysis.summarize(curves)
    assert summary == pytest.approx(
        {
            "summary/epochs": 10.0,
            "summary/selected_epoch": 5.0,  # highest val/acc
            "summary/best_epoch_nll": 4.0,
            "summary/best_epoch_acc": 5.0,
            "summary/best_val_nll": 0.40,
            "summary/best_val_acc": 0.88,
            "summary/gap_acc_selected": 0.93 - 0.88,
            "summary/gap_nll_selected": 0.42 - 0.25,
            "summary/gap_acc_last": 0.99 - 0.86,
            "summary/gap_nll_last": 0.72 - 0.06,
            "summary/val_nll_rise": 0.69 / ((0.45 + 0.40 + 0.42) / 3) - 1,
            "summary/train_nll_change": 0.07 / ((0.40 + 0.30 + 0.25) / 3) - 1,
            "summary/has_onset": 1.0,
            "summary/onset_epoch": 4.0,
            "summary/drift": 0.0,
        }
    )
    assert list(summary) == [k for k in SUMMARY_KEYS if k in summary]
    assert analysis.summarize(curves, monitor="val/nll", mode="min")["summary/selected_epoch"] == 4.0


def test_summarize_leaves_out_what_is_undefined() -> None:
    # A run that diverged in epoch 2: validation missing from then on, no train_eval accuracy.
    curves = {"val/nll": [0.9, 0.7, NAN], "val/acc": [0.6, 0.7, NAN], "train_eval/nll": [0.95, 0.6, NAN]}
    summary = analysis.summarize(curves)
    assert summary["summary/epochs"] == 2.0
    assert summary["summary/selected_epoch"] == 2.0
    assert summary["summary/gap_nll_last"] == pytest.approx(0.1)
    assert summary["summary/has_onset"] == 0.0
    assert "summary/onset_epoch" not in summary
    assert "summary/gap_acc_selected" not in summary and "summary/gap_acc_last" not in summary
    assert all(math.isfinite(v) for v in summary.values())
    assert analysis.summarize({}) == {"summary/epochs": 0.0, "summary/has_onset": 0.0, "summary/drift": 0.0}


def test_last_epoch_ignores_trailing_missing_validation() -> None:
    assert analysis.last_epoch({"val/nll": [1.0, 0.9, NAN, NAN], "val/acc": [0.1, 0.2, 0.3]}) == 3
    assert analysis.last_epoch({"train/loss": [1.0]}) is None


def test_dense_curve_fills_gaps_and_keeps_the_latest_duplicate() -> None:
    curve = analysis.dense_curve([(1, 1.0), (3, 3.0), (2, 2.0), (3, 2.5)])  # MLflow steps are epoch numbers
    assert curve == [1.0, 2.0, 2.5]
    gappy = analysis.dense_curve([(1, 1.0), (4, 4.0)])
    assert gappy[0] == 1.0 and math.isnan(gappy[1]) and math.isnan(gappy[2]) and gappy[3] == 4.0
    assert analysis.dense_curve([]) == []
    # A run recorded before epochs were numbered from 1 logged its first epoch at step 0.
    assert analysis.dense_curve([(0, 1.0), (1, 2.0)], first_step=0) == [1.0, 2.0]


def test_memorisation_drop() -> None:
    assert analysis.memorisation_drop({"test/acc": 0.9, "test_last/acc": 0.8}) == pytest.approx(0.1)
    assert analysis.memorisation_drop({"test/acc": 0.9}) is None
    assert analysis.memorisation_drop({"test/acc": 0.9, "test_last/acc": NAN}) is None


def test_overfit_curves_put_every_loss_on_one_scale() -> None:
    """Gaps per epoch, and val NLL relative to its lowest, read at each epoch on the curves up to it (unsmoothed here,
    so hand-computed): two curves whose NLLs differ tenfold (a bounded loss at 2-4, cross-entropy at 0.3-0.5) but rise
    alike read alike; with training NLL falling the rise is overfitting, with it rising too the same rise is drift."""
    raw = Rule(smooth=1)
    low = {"val/nll": [0.5, 0.4, 0.44, 0.48], "train_eval/nll": [0.5, 0.3, 0.2, 0.1]}
    high = {"val/nll": [5.0, 4.0, 4.4, 4.8], "train_eval/nll": [5.0, 3.0, 2.0, 1.0]}
    low.update({"val/acc": [0.6, 0.7, 0.7, 0.69], "train_eval/acc": [0.6, 0.75, 0.8, 0.9]})
    out = analysis.overfit_curves(low, raw)
    assert out[VAL_NLL_RISE] == pytest.approx([0.0, 0.0, 0.1, 0.2])
    assert out[NLL_DRIFT] == [0.0] * 4
    assert analysis.overfit_curves(high, raw)[VAL_NLL_RISE] == pytest.approx(out[VAL_NLL_RISE])
    assert out[GAP_ACC] == pytest.approx([0.0, 0.05, 0.1, 0.21])
    assert out[GAP_NLL] == pytest.approx([0.0, 0.1, 0.24, 0.38])
    drifting = analysis.overfit_curves({**low, "train_eval/nll": [0.5, 0.3, 0.35, 0.4]}, raw)
    assert drifting[NLL_DRIFT] == pytest.approx([0.0, 0.0, 0.1, 0.2]) and drifting[VAL_NLL_RISE] == [0.0] * 4
    gappy = analysis.overfit_curves({"val/nll": [NAN, 0.5, NAN, 0.6], "train_eval/nll": [NAN, 0.5, NAN, 0.4]}, raw)
    assert math.isnan(gappy[VAL_NLL_RISE][0]) and gappy[VAL_NLL_RISE][1] == 0.0
    assert gappy[VAL_NLL_RISE][3] == pytest.approx(0.2)
    alone = analysis.overfit_curves({"val/nll": [0.5, 0.6]}, raw)
    assert set(alone) == {VAL_NLL_RISE, NLL_DRIFT}, "without train_eval there is no gap to give"
    assert all(math.isnan(v) for v in alone[VAL_NLL_RISE] + alone[NLL_DRIFT]), "nor a rise to call either kind"


def test_the_overview_signal_ends_at_the_verdicts_figure_on_every_recorded_run() -> None:
    """The chart's last point is the verdict's: the rise judge() measured, on the overfitting side exactly when the
    verdict says overfits (by NLL) and on the drift side when it says drift; the report's column reads the same."""
    for name, curves in REAL.items():
        verdict, signals = analysis.judge(curves), analysis.overfit_curves(curves)
        rise = verdict.nll.val_change / verdict.nll.val_best
        overfit, drift = signals[VAL_NLL_RISE][-1], signals[NLL_DRIFT][-1]
        assert (overfit, drift) == pytest.approx((rise, 0.0) if verdict.nll.train_better else (0.0, rise)), name
        assert tuple(analysis.nll_rise(curves)) == (overfit, drift)
        if verdict.kind == "overfits":
            assert overfit > Rule().margin_nll, name
        if verdict.kind == "drift":
            assert overfit == 0.0 and drift > Rule().margin_nll, name


def test_on_recorded_curves_the_loss_that_overfits_is_the_one_the_chart_raises() -> None:
    """On 2,000 Fashion-MNIST images for 25 epochs ce overfits and mae drifts (its val NLL rises as far as ce's, the
    old chart drew it as high): on the overfitting side, ce's mean over seeds is the tallest line at the end and at
    its highest, mae never reaches ce's end; on the drift side, mae stands out and ce is flat at 0."""

    def mean(loss: str, name: str) -> list[float]:
        runs = [analysis.overfit_curves(REAL[f"overfit25/{loss}/{s}"])[name] for s in ("s0", "s1")]
        return [sum(values) / len(values) for values in zip(*runs)]

    assert [analysis.judge(REAL[f"overfit25/ce/{s}"]).kind for s in ("s0", "s1")] == ["overfits"] * 2
    assert [analysis.judge(REAL[f"overfit25/mae/{s}"]).kind for s in ("s0", "s1")] == ["drift"] * 2
    ce, mae = mean("ce", VAL_NLL_RISE), mean("mae", VAL_NLL_RISE)
    assert ce[-1] > Rule().margin_nll and max(mae) < ce[-1] and mae[-1] == 0.0
    raw_mae = [analysis.value_at(REAL["overfit25/mae/s0"], "val/nll", e) for e in (8, 25)]
    assert raw_mae[1] / raw_mae[0] - 1 > ce[-1], "the raw rise the old chart drew put mae above ce"
    assert mean("ce", NLL_DRIFT) == [0.0] * 25 and mean("mae", NLL_DRIFT)[-1] > Rule().margin_nll
