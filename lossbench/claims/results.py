"""The protocols' runs read back from MLflow, as one tidy table: one row per FINISHED run, one column per fact.

The runs are those the sweep's jobs say they ran or reused (their outcome files name the run): a job skipped because
its config FINISHED in an earlier sweep still counts, with the run that finished it. Reading goes through the
report's loader (lossbench.report.runs): the same runs count, the same way (the newest per config).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lossbench import analysis
from lossbench.names import (
    CONFIDENCE,
    MEMORISED,
    SUMMARY_EPOCHS,
    SUMMARY_EPOCHS_TO_TARGET,
    SUMMARY_FIGURES,
    SUMMARY_KEYS,
    SUMMARY_LOSS_HAS_ONSET,
    SUMMARY_LOSS_RISE,
    SUMMARY_SECONDS_TO_TARGET,
    TEST_ACC,
    TEST_CALIBRATION,
    TEST_CONFIDENCE,
    TEST_ECE,
    TEST_INPUT_MARGIN_Q,
    TEST_LAST_ACC,
    TEST_MAE_DEG,
    TEST_MARGIN_GE1,
    TEST_MARGIN_Q,
    TEST_NLL,
    TEST_RMSE_DEG,
    TRAIN_EVAL_ACC,
    TRAIN_EVAL_INPUT_MARGIN_Q,
    VAL_ACC,
)
from lossbench.report.runs import INPUT_NOISE_PARAM, NOISE_PARAM, RunRecord, Selection, load_runs, select_runs

SUMMARY_HAS_ONSET = SUMMARY_KEYS[SUMMARY_FIGURES.index("has_onset")]
SUMMARY_VAL_NLL_RISE = SUMMARY_KEYS[SUMMARY_FIGURES.index("val_nll_rise")]
CONFIDENT_WRONG, CONFIDENT_WRONG_LOSS, CONFIDENT_WRONG_GRAD = (TEST_CONFIDENCE[name] for name in CONFIDENCE[1:])
INPUT_MARGIN, LOGIT_MARGIN = TEST_INPUT_MARGIN_Q[50], TEST_MARGIN_Q[50]
SUMMARY_BEST_EPOCH_ACC = SUMMARY_KEYS[SUMMARY_FIGURES.index("best_epoch_acc")]
SUMMARY_BEST_VAL_ACC = SUMMARY_KEYS[SUMMARY_FIGURES.index("best_val_acc")]
TRAIN_INPUT_MARGIN = TRAIN_EVAL_INPUT_MARGIN_Q[50]
OWN_NLL, OWN_ECE, OWN_NLL_TS, OWN_ECE_TS, NLL_TS, ECE_TS = TEST_CALIBRATION.values()
OVERFIT_ACC, STILL_IMPROVING = "overfits_on_accuracy", "still_improving"
"""Columns derived from a run's curves and summary (:func:`row_of`): 1 when validation accuracy ended worse than its
smoothed best by the margin while the training data's improved (lossbench.analysis.trend on val/acc and
train_eval/acc: claim 6's truth), and 1 when its best validation accuracy came within ``analysis.patience`` epochs of
the end (the run may still have been improving)."""
CURVES = (VAL_ACC, TRAIN_EVAL_ACC)
"""The curves the claims read (claim 6's truth); the rest is each run's summary."""

METRICS: tuple[str, ...] = (
    TEST_ACC,
    TEST_LAST_ACC,
    TEST_NLL,
    TEST_ECE,
    CONFIDENT_WRONG,
    CONFIDENT_WRONG_LOSS,
    CONFIDENT_WRONG_GRAD,
    INPUT_MARGIN,
    LOGIT_MARGIN,
    TEST_MARGIN_GE1,
    SUMMARY_EPOCHS,
    SUMMARY_EPOCHS_TO_TARGET,
    SUMMARY_SECONDS_TO_TARGET,
    SUMMARY_HAS_ONSET,
    SUMMARY_LOSS_HAS_ONSET,
    SUMMARY_LOSS_RISE,
    SUMMARY_VAL_NLL_RISE,
    TEST_RMSE_DEG,
    TEST_MAE_DEG,
    SUMMARY_BEST_EPOCH_ACC,
    SUMMARY_BEST_VAL_ACC,
    TRAIN_INPUT_MARGIN,
    OWN_NLL,
    OWN_ECE,
    OWN_NLL_TS,
    OWN_ECE_TS,
    NLL_TS,
    ECE_TS,
    MEMORISED,
)
"""The per-run metrics the claims read, each a column of the table under its own name (lossbench.names)."""

# Params a row's dimensions come from (a run records its whole config as params).
_PARAMS = {
    "label_noise": NOISE_PARAM,
    "input_noise": INPUT_NOISE_PARAM,
    "classes": "data.num_classes",
    "max_epochs": "trainer.max_epochs",
    "target_acc": "analysis.target_acc",
    "outliers": "data.outliers.rate",  # a regression run's outlier targets (lossbench.regression; claim 1)
    "patience": "analysis.patience",
    "weight_decay": "optimizer.weight_decay",
    "lr": "optimizer.lr",
    "train_size": "data.train_size",
}
Row = dict[str, Any]


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:  # "None": not set
        return math.nan


def row_of(protocol: str, run: RunRecord) -> Row:
    """One run as a row: protocol, run id and name, loss, model, seed, label- and input-noise rates, classes, its
    epochs and target, test-set size, then :data:`METRICS` (NaN where the run did not record one)."""
    row: Row = {
        "protocol": protocol,
        "run_id": run.run_id,
        "run": run.name,
        "loss": run.dimension("loss"),
        "model": run.dimension("model"),
        "seed": run.seed,
        "test_images": run.test_size,
    }
    row.update({name: _number(run.params.get(param)) for name, param in _PARAMS.items()})
    row["label_noise"] = 0.0 if math.isnan(row["label_noise"]) else row["label_noise"]
    row["input_noise"] = 0.0 if math.isnan(row["input_noise"]) else row["input_noise"]
    row["outliers"] = 0.0 if math.isnan(row["outliers"]) else row["outliers"]
    row["classes"] = int(row["classes"]) if math.isfinite(row["classes"]) else None
    row["stage"] = run.stage
    row.update({name: float(run.metrics.get(name, math.nan)) for name in METRICS})
    patience = int(row["patience"]) if math.isfinite(row["patience"]) else analysis.Rule().patience
    best, epochs = row[SUMMARY_BEST_EPOCH_ACC], row[SUMMARY_EPOCHS]
    row[STILL_IMPROVING] = float(epochs - best < patience) if math.isfinite(best + epochs) else math.nan
    row[OVERFIT_ACC] = overfits_on_accuracy(run.curves, patience)
    return row


def overfits_on_accuracy(curves: Mapping[str, Sequence[float]], patience: int) -> float:
    """1.0 when validation accuracy ends worse than its smoothed best by ``analysis.margin_acc`` while training
    accuracy (train_eval) improved (lossbench.analysis.trend, the rule every report uses, read on accuracy alone),
    0.0 when not, NaN without the curves."""
    if VAL_ACC not in curves:
        return math.nan
    trend = analysis.trend(curves, VAL_ACC, TRAIN_EVAL_ACC, "max", analysis.Rule(patience=patience))
    return math.nan if trend is None else float(trend.worse and trend.train_better)


def tidy(protocol: str, runs: Iterable[RunRecord]) -> list[Row]:
    """The table of one protocol's counted runs (already selected: :func:`read`)."""
    return [row_of(protocol, run) for run in runs]


def run_ids(outcomes: Sequence[Mapping[str, Any]]) -> list[str]:
    """The runs a sweep's jobs ran or reused (finished or skipped), from their outcome files."""
    return [o["run_id"] for o in outcomes if o.get("run_id") and o["status"] in ("finished", "skipped")]


def read(
    client: Any, experiment_id: str, ids: Sequence[str], chunk: int = 100, curves: Sequence[str] = ()
) -> Selection:
    """The runs ``ids`` of one experiment, split as a report splits them (lossbench.report.runs.select_runs), with
    the ``curves`` a protocol's claims read (:data:`CURVES` for claim 6; none otherwise: each run's summary)."""
    records: list[RunRecord] = []
    for start in range(0, len(ids), chunk):
        quoted = ", ".join(f"'{i}'" for i in ids[start : start + chunk])
        records += load_runs(client, experiment_id, f"attributes.run_id IN ({quoted})", curve_metrics=curves)
    return select_runs(records)
