"""Claim 1, "MSE is sensitive to outliers; MAE is more robust", on the regression task it is stated for.

The protocol (conf/experiment/claim_outliers.yaml) trains MSE, MAE and Huber on one output that predicts each
image's rotation angle (lossbench.regression), with and without a share of gross outliers among the training targets,
and reads every run's error against the *clean* test targets at the epoch chosen by clean validation error.

The predictions are fixed here, before the run (:data:`PREDICTIONS`): with :data:`OUTLIER_RATE` of the training
targets outliers, how much MSE's clean test RMSE rises over its own clean-data run of the same seed is larger than
MAE's rise, and larger than Huber's. They are sized from a pilot (:func:`seeds_for`; the pilot's numbers and the seeds
they gave are written in the protocol's header).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _stats

from lossbench import decisions, stats
from lossbench.claims.results import Row
from lossbench.claims.rules import DROP, MEASURES, Measure, Measured, Prediction, measure_groups, select, with_drops
from lossbench.names import TEST_LAST_ACC, TEST_MAE_DEG, TEST_RMSE_DEG

PROTOCOL = "claim_outliers"
OUTLIER_RATE = 0.3
"""The share of outlier training targets the predictions are made at (the protocol also runs 0: the clean twin)."""
RISE = "clean_rmse_rise"
"""Derived column (:func:`with_rises`): a run's clean test RMSE minus that of the same loss, model and seed trained on
clean targets, in degrees. Positive: the outliers cost accuracy on the clean targets."""
PREDICTIONS: tuple[tuple[str, str], ...] = (("mse", "mae"), ("mse", "huber"))
"""(candidate, reference): the candidate's :data:`RISE` is larger (paired by seed), on each model."""

MEASURES.update(  # claim 1's columns, read like every other claim's (lossbench.claims.rules.MEASURES)
    {
        TEST_RMSE_DEG: Measure("clean test RMSE (selected epoch)", "clean RMSE", 1, "°", 2, (0.0, math.inf)),
        TEST_MAE_DEG: Measure("clean test MAE (selected epoch)", "clean MAE", 1, "°", 2, (0.0, math.inf)),
        RISE: Measure("rise of clean test RMSE over the clean-target run", "RMSE rise", 1, "°", 2),
    }
)


def with_rises(rows: Sequence[Row], measure: str = TEST_RMSE_DEG) -> list[Row]:
    """Every row; one trained with outlier targets also with :data:`RISE`: its ``measure`` minus that of the clean run
    (``outliers`` 0) of the same loss, model and seed (NaN without one)."""
    clean = {(r["loss"], r["model"], r["seed"]): r[measure] for r in rows if r["outliers"] == 0}
    return [
        {**r, RISE: r[measure] - clean.get((r["loss"], r["model"], r["seed"]), math.nan)} if r["outliers"] > 0 else r
        for r in rows
    ]


def predictions(rows: Sequence[Row]) -> list[Prediction]:
    """:data:`PREDICTIONS` on each model the runs have, at :data:`OUTLIER_RATE`."""
    models = sorted({r["model"] for r in rows if r["outliers"] == OUTLIER_RATE}, key=str)
    return [
        Prediction((("model", m), ("outliers", OUTLIER_RATE)), RISE, candidate, reference, +1)
        for m in models
        for candidate, reference in PREDICTIONS
    ]


def parts(rows: Sequence[Row]) -> tuple[list[Row], list[Prediction], list[Measured], list[str]]:
    """Claim 1's rows (with :data:`RISE`), predictions, measured figures and notes, from every protocol's rows
    (lossbench.claims.evaluate.claim_1 decides them as one paired family)."""
    rows = with_rises(select(rows, protocol=PROTOCOL))
    by = ("model", "outliers", "loss")
    measured = (
        measure_groups(rows, TEST_RMSE_DEG, by)
        + measure_groups(rows, TEST_MAE_DEG, by)
        + measure_groups([r for r in rows if r["outliers"] > 0], RISE, by)
    )
    notes = [
        "Regression: each image rotated by its own angle (uniform in ±rotation.degrees), the model's one output "
        "predicts it; a share of the training targets replaced by gross errors (data.outliers), validation and test "
        "targets clean. Every loss is judged on its error against the clean targets, in degrees, at the epoch with the "
        "lowest clean validation RMSE.",
        f"RMSE rise: the run's clean test RMSE minus that of the same loss and seed trained without outliers; the "
        f"predictions are made at {OUTLIER_RATE:.0%} outliers (fixed before the run).",
    ]
    return rows, predictions(rows), measured, notes


# ------------------------------------------------------------------------------------------ sizing from a pilot


def first_look_power(effect: float, spread: float, n: int, alpha: float) -> float:
    """The chance that look 1 of lossbench.decisions' two-look design decides a true mean difference ``effect`` with
    per-seed spread ``spread`` from ``n`` paired seeds, at level ``alpha``: ``|z₁|`` beyond Pocock's boundary ``c``,
    i.e. the paired t statistic (noncentral t, ``n − 1`` degrees of freedom, noncentrality ``effect·√n / spread``)
    beyond ``F_t⁻¹(Φ(c))``."""
    if n < stats.MIN_SEEDS or not spread > 0:
        return math.nan
    df, c = n - 1, decisions.boundary(alpha)
    high = _stats.t.ppf(_stats.norm.cdf(c), df)
    shift = effect * math.sqrt(n) / spread
    upper, lower = float(_stats.nct.sf(high, df, shift)), float(_stats.nct.cdf(-high, df, shift))
    # scipy's noncentral t gives NaN far in its tails (a noncentrality of ~8 and more): the normal limit there
    upper = upper if math.isfinite(upper) else float(_stats.norm.sf(high - shift))
    lower = lower if math.isfinite(lower) else float(_stats.norm.cdf(-high - shift))
    return upper + lower


def seeds_for(differences: Sequence[float], family: int, most: int = 50) -> int | None:
    """The fewest paired seeds with which look 1 decides, with lossbench.decisions' power (80 %), a difference of the
    pilot's mean size, assuming the pilot's spread at its upper 80 % limit (decisions.planning_spread), at the level
    Bonferroni gives one of ``family`` predictions (``α / family``: what Holm asks of the first; a safe plan for all).
    None when more than ``most`` would be needed."""
    d = np.asarray(differences, dtype=float)
    effect, spread = float(d.mean()), decisions.planning_spread(d)
    for n in range(stats.MIN_SEEDS, most + 1):
        if first_look_power(effect, spread, n, decisions.ALPHA / family) >= decisions.POWER:
            return n
    return None


# ------------------------------------------------------------------------------------------ the classification form

LABEL_NOISE_PROTOCOL = "claim_label_noise"
LABEL_NOISE_PREDICTIONS: tuple[tuple[str, str], ...] = (("mae", "ce"),)
"""(candidate, reference): the candidate loses less test accuracy (last epoch) to flipped labels, on each model."""


def label_noise_parts(rows: Sequence[Row]) -> tuple[list[Row], list[Prediction], list[Measured], list[str]]:
    """Claim 8 (claim 1's classification form, Ghosh et al. 2017): its rows (with the accuracy each run lost to the
    flipped labels, lossbench.claims.rules.with_drops), predictions, measured figures and notes."""
    rows = with_drops(select(rows, protocol=LABEL_NOISE_PROTOCOL))
    noisy = [r for r in rows if r["corruption"] == "labels"]
    models = sorted({r["model"] for r in noisy}, key=str)
    rates = sorted({r["label_noise"] for r in noisy})
    predictions = [
        Prediction((("model", m), ("label_noise", rate)), DROP, candidate, reference, -1)
        for m in models
        for rate in rates
        for candidate, reference in LABEL_NOISE_PREDICTIONS
    ]
    by = ("model", "label_noise", "loss")
    measured = measure_groups(rows, TEST_LAST_ACC, by) + measure_groups(noisy, DROP, by)
    notes = [
        "Accuracy lost is the clean run's test accuracy minus the noisy run's, same loss, model and seed, at the last "
        "epoch. A loss that learns little from clean data has little to lose: read it beside the clean accuracy.",
    ]
    return rows, predictions, measured, notes
