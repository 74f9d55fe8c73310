"""Overfitting figures from a run's curves: best epochs, generalisation gaps, overfitting onset.

Pure functions, no I/O. A run's *curves* map a metric name to its per-epoch values, index = epoch
(0-based, the MLflow step), with ``NaN`` where an epoch has no value::

    curves = {"val/nll": [0.9, 0.5, 0.4, 0.45], "train_eval/nll": [0.95, 0.5, 0.35, 0.3], ...}

Curves may have different lengths; an epoch past a curve's end counts as missing (``NaN``).
The yardsticks used here are those every run records whatever its loss (see DESIGN.md):
``val/nll``, ``val/acc`` and the eval-mode training subset ``train_eval/nll``, ``train_eval/acc``.

Sign convention for gaps: **positive means overfitting** for both metrics,

- accuracy gap = ``train_eval/acc - val/acc``
- NLL gap      = ``val/nll - train_eval/nll``  (flipped from "train minus validation" on purpose,
  so that both gaps read the same way).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

Curves = Mapping[str, Sequence[float]]
"""Metric name -> per-epoch values (index = epoch, ``NaN`` where missing)."""

VAL_NLL = "val/nll"
VAL_ACC = "val/acc"
TRAIN_EVAL_NLL = "train_eval/nll"
TRAIN_EVAL_ACC = "train_eval/acc"
TEST_ACC = "test/acc"
TEST_LAST_ACC = "test_last/acc"

SUMMARY_KEYS: tuple[str, ...] = (
    "summary/epochs",
    "summary/best_epoch_nll",
    "summary/best_epoch_acc",
    "summary/best_val_nll",
    "summary/best_val_acc",
    "summary/gap_acc_best",
    "summary/gap_nll_best",
    "summary/gap_acc_last",
    "summary/gap_nll_last",
    "summary/has_onset",
    "summary/onset_epoch",
)
"""Every key :func:`summarize` can return, in a stable order."""


class Gap(NamedTuple):
    """Generalisation gap at one epoch; positive means overfitting, ``NaN`` where undefined."""

    acc: float
    """``train_eval/acc - val/acc``."""
    nll: float
    """``val/nll - train_eval/nll``."""


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def value_at(curves: Curves, name: str, epoch: int) -> float:
    """The value of metric ``name`` at ``epoch``; ``NaN`` when the metric, the epoch or the value is missing."""
    values = curves.get(name)
    if values is None or epoch < 0 or epoch >= len(values):
        return math.nan
    value = values[epoch]
    return float(value) if value is not None else math.nan


def dense_curve(points: Iterable[tuple[int, float]]) -> list[float]:
    """Turn ``(step, value)`` pairs into a per-epoch list, ``NaN`` for steps never logged.

    When a step occurs more than once (an epoch logged again by a resumed run), the last pair wins,
    so pass the points in the order they were logged. Negative steps are ignored.
    """
    by_step: dict[int, float] = {}
    for step, value in points:
        if step >= 0:
            by_step[int(step)] = float(value)
    if not by_step:
        return []
    out = [math.nan] * (max(by_step) + 1)
    for step, value in by_step.items():
        out[step] = value
    return out


def best_epoch(curves: Curves, metric: str = VAL_NLL, mode: str = "min") -> int | None:
    """The epoch at which ``metric`` is lowest (``mode="min"``) or highest (``mode="max"``).

    ``NaN`` values are skipped; ties go to the earliest epoch. ``None`` when the metric has no
    finite value.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
    best: int | None = None
    best_value = math.nan
    for epoch, raw in enumerate(curves.get(metric, ())):
        value = float(raw) if raw is not None else math.nan
        if not math.isfinite(value):
            continue
        if best is None or (value < best_value if mode == "min" else value > best_value):
            best, best_value = epoch, value
    return best


def best_epoch_nll(curves: Curves) -> int | None:
    """The epoch with the lowest validation NLL (``val/nll``); ``None`` when there is none."""
    return best_epoch(curves, VAL_NLL, "min")


def best_epoch_acc(curves: Curves) -> int | None:
    """The epoch with the highest validation accuracy (``val/acc``); ``None`` when there is none."""
    return best_epoch(curves, VAL_ACC, "max")


def last_epoch(curves: Curves) -> int | None:
    """The last epoch with a validation result (a finite ``val/nll`` or ``val/acc``); ``None`` if none.

    Trailing epochs whose validation is missing (a run that diverged mid-epoch) do not count.
    """
    last: int | None = None
    for metric in (VAL_NLL, VAL_ACC):
        for epoch, raw in enumerate(curves.get(metric, ())):
            if raw is not None and math.isfinite(raw) and (last is None or epoch > last):
                last = epoch
    return last


def generalisation_gap(curves: Curves, epoch: int | None) -> Gap:
    """The train-vs-validation gap at ``epoch``, positive when the model does better on training data.

    - ``acc = train_eval/acc - val/acc``
    - ``nll = val/nll - train_eval/nll`` (validation minus train, the opposite order to accuracy, so
      that a positive NLL gap also means overfitting)

    ``train_eval/*`` is the fixed training subset evaluated in eval mode, not the running training
    loss. Either component is ``NaN`` when one of its two values is missing or ``epoch`` is ``None``.
    """
    if epoch is None:
        return Gap(math.nan, math.nan)
    acc = value_at(curves, TRAIN_EVAL_ACC, epoch) - value_at(curves, VAL_ACC, epoch)
    nll = value_at(curves, VAL_NLL, epoch) - value_at(curves, TRAIN_EVAL_NLL, epoch)
    return Gap(acc, nll)


def overfitting_onset(curves: Curves, patience: int = 3) -> int | None:
    """The epoch after which validation NLL rises for ``patience`` epochs in a row while train NLL falls.

    Returns the smallest epoch ``e`` such that for every ``i`` in ``1..patience``::

        val/nll[e + i]        >  val/nll[e + i - 1]          (validation NLL rises, strictly)
        train_eval/nll[e + i] <  train_eval/nll[e + i - 1]   (train NLL falls, strictly)

    i.e. ``e`` is the last epoch before the rise begins: the epoch at which validation NLL was at its
    lowest just before the ``patience``-epoch rise (not necessarily the global minimum). The rise must
    be complete within the curves: with ``patience=3`` and onset at epoch ``e``, epochs up to
    ``e + 3`` must exist. Any ``NaN`` among the values involved breaks the streak. ``None`` when it
    never happens (including when either curve is missing).
    """
    if patience < 1:
        raise ValueError(f"patience must be at least 1, not {patience}")

    def diverging(epoch: int) -> bool:
        """From ``epoch - 1`` to ``epoch``: validation NLL rose and train NLL fell (all values finite)."""
        v0, v1 = value_at(curves, VAL_NLL, epoch - 1), value_at(curves, VAL_NLL, epoch)
        t0, t1 = value_at(curves, TRAIN_EVAL_NLL, epoch - 1), value_at(curves, TRAIN_EVAL_NLL, epoch)
        return all(map(math.isfinite, (v0, v1, t0, t1))) and v1 > v0 and t1 < t0

    n = min(len(curves.get(VAL_NLL, ())), len(curves.get(TRAIN_EVAL_NLL, ())))
    streak = 0
    for epoch in range(1, n):
        streak = streak + 1 if diverging(epoch) else 0
        if streak == patience:
            return epoch - patience
    return None


def summarize(curves: Curves, onset_patience: int = 3) -> dict[str, float]:
    """Everything above as MLflow-ready metrics (all values finite; undefined ones are left out).

    Keys (see :data:`SUMMARY_KEYS`):

    - ``summary/epochs``: number of epochs with a validation result (last such epoch + 1; 0 if none)
    - ``summary/best_epoch_nll``, ``summary/best_val_nll``: epoch and value of the lowest ``val/nll``
    - ``summary/best_epoch_acc``, ``summary/best_val_acc``: epoch and value of the highest ``val/acc``
    - ``summary/gap_acc_best``, ``summary/gap_nll_best``: :func:`generalisation_gap` at the best
      epoch by validation NLL (the epoch whose checkpoint is tested as ``test/*``)
    - ``summary/gap_acc_last``, ``summary/gap_nll_last``: the same at :func:`last_epoch`
    - ``summary/has_onset``: 1.0 when :func:`overfitting_onset` found an onset, else 0.0 (always present)
    - ``summary/onset_epoch``: that epoch, **omitted when there is none**

    A value that cannot be computed (a missing curve, a diverged run) is omitted rather than given
    as ``NaN``, so the dict can be passed straight to ``mlflow.log_metrics`` and MLflow's UI sorts
    it sensibly. ``summary/epochs`` and ``summary/has_onset`` are always present.
    """
    out: dict[str, float] = {}

    def put(key: str, value: float | None) -> None:
        if _finite(value):
            out[key] = float(value)  # type: ignore[arg-type]

    last = last_epoch(curves)
    out["summary/epochs"] = float(last + 1) if last is not None else 0.0
    e_nll = best_epoch_nll(curves)
    e_acc = best_epoch_acc(curves)
    if e_nll is not None:
        put("summary/best_epoch_nll", e_nll)
        put("summary/best_val_nll", value_at(curves, VAL_NLL, e_nll))
    if e_acc is not None:
        put("summary/best_epoch_acc", e_acc)
        put("summary/best_val_acc", value_at(curves, VAL_ACC, e_acc))
    gap_best = generalisation_gap(curves, e_nll)
    gap_last = generalisation_gap(curves, last)
    put("summary/gap_acc_best", gap_best.acc)
    put("summary/gap_nll_best", gap_best.nll)
    put("summary/gap_acc_last", gap_last.acc)
    put("summary/gap_nll_last", gap_last.nll)
    onset = overfitting_onset(curves, onset_patience)
    out["summary/has_onset"] = 0.0 if onset is None else 1.0
    put("summary/onset_epoch", onset)
    return {key: out[key] for key in SUMMARY_KEYS if key in out}


def memorisation_drop(metrics: Mapping[str, float]) -> float | None:
    """``test/acc - test_last/acc``: accuracy lost by training on past the best epoch.

    ``test/acc`` is the best checkpoint (by ``val/nll``), ``test_last/acc`` the final weights; with
    noisy labels a large positive drop is the network memorising the wrong labels. ``None`` unless
    both are given and finite.
    """
    best, last = metrics.get(TEST_ACC), metrics.get(TEST_LAST_ACC)
    if not (_finite(best) and _finite(last)):
        return None
    return float(best) - float(last)  # type: ignore[arg-type]


def summarize_test(metrics: Mapping[str, float]) -> dict[str, float]:
    """Test-time summary metrics: ``{"summary/memorisation_drop": ...}``, empty when undefined."""
    drop = memorisation_drop(metrics)
    return {} if drop is None else {"summary/memorisation_drop": drop}
