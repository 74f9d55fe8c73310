"""Overfitting verdicts from a run's curves: selected epoch, gaps, onset, drift. Pure functions, no I/O.

A run's *curves* map a metric name to its per-epoch values, a list whose first entry is epoch 1
(:data:`~lossbench.names.FIRST_EPOCH`; index ``i`` holds epoch ``i + 1``), with ``NaN`` where an epoch has no
value::

    curves = {"val/nll": [0.9, 0.5, 0.4, 0.45], "train_eval/nll": [0.95, 0.5, 0.35, 0.3], ...}

Every epoch this module takes or returns is an **epoch number** as a person reads it (1, 2, ...), the same
number as MLflow's step, the terminal and the figures; list indices stay inside.

The yardsticks judged here are those every run records whatever its loss: ``val/nll``,
``val/acc`` and the eval-mode training subset ``train_eval/nll``, ``train_eval/acc``.

**The rule** (:func:`judge`), in one sentence: a run *overfits* when its validation yardstick,
smoothed over ``smooth`` epochs, ends worse than its best by more than a margin, the best having
come at least ``patience`` epochs before the end, while the same yardstick on training data ends
better than it was at that best epoch; the onset is the epoch of that best (the last good epoch: the run
overfits *after* it). Words, everywhere: the *selected* epoch is the raw curve's best (highest ``val/acc``,
the checkpoint tested); the *peak* of a yardstick is its smoothed best, which verdicts and the onset read. NLL is judged with a
relative margin (``margin_nll``), accuracy with an absolute one (``margin_acc``). When validation
NLL rises but training NLL rises too, the run is not overfitting but *drifting*: its calibration
worsens on every split (bounded losses such as MAE, GCE or NCE+RCE do not minimise NLL).

Why smoothed, and why the end: real per-epoch curves wobble by several per cent, so "k strict rises
in a row" misses plain overfitting and flags noise. Comparing the smoothed end with the smoothed
best asks the question a reader asks of the plot: did it end worse than it was, and did training
keep improving meanwhile? The defaults were chosen on recorded Fashion-MNIST curves kept in
``tests/data/real_curves.json``.

Sign convention for gaps: **positive means overfitting** for both metrics,

- accuracy gap = ``train_eval/acc - val/acc``
- NLL gap      = ``val/nll - train_eval/nll``  (flipped on purpose, so both gaps read the same way).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from lossbench.names import (
    EPOCH_TIME,
    GAP_ACC,
    GAP_NLL,
    NLL_DRIFT,
    SUMMARY_FIGURES,
    SUMMARY_PREFIX,
    TEST_ACC,
    TEST_LAST_ACC,
    TRAIN_EVAL_ACC,
    TRAIN_EVAL_LOSS,
    TRAIN_EVAL_NLL,
    VAL_ACC,
    VAL_LOSS,
    VAL_NLL,
    VAL_NLL_RISE,
    VAL_RMSE_DEG,
    epoch_index,
    epoch_number,
)

Curves = Mapping[str, Sequence[float]]
"""Metric name -> per-epoch values (index ``i`` = epoch ``i + 1``, ``NaN`` where missing)."""


@dataclass(frozen=True)
class Rule:
    """The thresholds of :func:`judge` (config ``analysis.*``)."""

    smooth: int = 3
    """Centred moving-average width, in epochs, applied before judging (1: no smoothing)."""
    patience: int = 3
    """The best epoch must come at least this many epochs before the last one."""
    margin_nll: float = 0.10
    """Validation NLL must end this fraction above its minimum (0.10 = 10 %)."""
    margin_acc: float = 0.01
    """Validation accuracy must end this much below its maximum (0.01 = 1 percentage point)."""
    target_acc: float | None = None
    """The validation accuracy whose first epoch ``summary/epochs_to_target`` records (:func:`epochs_to`); None: not
    recorded. Not a threshold of :func:`judge`."""

    @classmethod
    def from_config(cls, analysis_cfg: Mapping) -> Rule:
        """The rule from the ``analysis`` config group (its other keys, e.g. ``figures``, are ignored)."""
        return cls(**{name: analysis_cfg[name] for name in cls.__dataclass_fields__ if name in analysis_cfg})

    def __post_init__(self) -> None:
        if self.smooth < 1 or self.patience < 1:
            raise ValueError(f"smooth and patience must be at least 1, not {self.smooth} and {self.patience}")
        if not (self.margin_nll >= 0 and self.margin_acc >= 0):
            raise ValueError("margins must be >= 0")
        if self.target_acc is not None and not 0 < self.target_acc <= 1:
            raise ValueError(f"target_acc must lie in (0, 1], not {self.target_acc}")


class Gap(NamedTuple):
    """Generalisation gap at one epoch; positive means overfitting, ``NaN`` where undefined."""

    acc: float
    """``train_eval/acc - val/acc``."""
    nll: float
    """``val/nll - train_eval/nll``."""


@dataclass(frozen=True)
class Trend:
    """How one validation yardstick moved from its (smoothed) best epoch to the end, and training with it."""

    best_epoch: int
    """Epoch of the smoothed best, the yardstick's *peak* (min NLL / max accuracy)."""
    last_epoch: int
    val_best: float
    val_end: float
    train_at_best: float
    train_end: float
    worse: bool
    """Validation ended worse than its best by more than the margin, at least ``patience`` epochs later."""
    train_better: bool
    """Training ended better than at the best epoch (``NaN`` training values count as not better)."""

    @property
    def val_change(self) -> float:
        return self.val_end - self.val_best

    @property
    def train_change(self) -> float:
        return self.train_end - self.train_at_best


@dataclass(frozen=True)
class Verdict:
    """What :func:`judge` decided about one run, with the figures that decided it."""

    kind: str
    """``overfits``, ``drift`` (NLL worsens on training data too), ``improving`` (smoothed best at the last epoch),
    ``peaked`` (best fewer than ``patience`` epochs before the end: too close to judge), ``stable`` (none of these)
    or ``unknown`` (no validation curve)."""
    onset_epoch: int | None
    """The epoch after which the run overfits; ``None`` unless ``kind == "overfits"``."""
    nll: Trend | None
    acc: Trend | None
    last_epoch: int | None
    gap_last: Gap
    text: str
    """One plain sentence, e.g. ``overfits after epoch 7 (smoothed val NLL lowest at epoch 7, +50 % by epoch 24 ...)``."""


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _value(curves: Curves, name: str, index: int | None) -> float:
    values = curves.get(name)
    if values is None or index is None or index < 0 or index >= len(values):
        return math.nan
    value = values[index]
    return float(value) if value is not None else math.nan


def value_at(curves: Curves, name: str, epoch: int | None) -> float:
    """The value of metric ``name`` at epoch number ``epoch``; ``NaN`` when the metric, the epoch or the value is
    missing."""
    return _value(curves, name, None if epoch is None else epoch_index(epoch))


def dense_curve(points: Iterable[tuple[int, float]], first_step: int = 1) -> list[float]:
    """Turn MLflow's ``(step, value)`` pairs into a per-epoch list (index 0 = the step ``first_step``, epoch 1),
    ``NaN`` for epochs never logged. ``first_step``: the run's :data:`~lossbench.names.FIRST_EPOCH_TAG`, 0 for
    runs recorded before epochs were numbered from 1.

    When a step occurs more than once (an epoch logged again by a resumed run), the last pair wins,
    so pass the points in the order they were logged. Steps before ``first_step`` are ignored.
    """
    by_step: dict[int, float] = {}
    for step, value in points:
        if step >= first_step:
            by_step[int(step) - first_step] = float(value)
    if not by_step:
        return []
    out = [math.nan] * (max(by_step) + 1)
    for step, value in by_step.items():
        out[step] = value
    return out


def smoothed(values: Sequence[float], width: int) -> list[float]:
    """Centred moving average over ``width`` epochs (shorter at the ends), ignoring ``NaN``; ``NaN`` stays where the value is missing."""
    half_before, half_after = (width - 1) // 2, width // 2
    out = []
    for i, raw in enumerate(values):
        if not _finite(raw):
            out.append(math.nan)
            continue
        window = [float(v) for v in values[max(0, i - half_before) : i + half_after + 1] if _finite(v)]
        out.append(sum(window) / len(window))
    return out


def _best_index(values: Sequence[float], mode: str) -> int | None:
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
    best: int | None = None
    best_value = math.nan
    for index, raw in enumerate(values):
        value = float(raw) if raw is not None else math.nan
        if not math.isfinite(value):
            continue
        if best is None or (value < best_value if mode == "min" else value > best_value):
            best, best_value = index, value
    return best


def best_epoch(curves: Curves, metric: str = VAL_ACC, mode: str = "max") -> int | None:
    """The epoch at which ``metric`` is highest (``mode="max"``) or lowest (``mode="min"``) on its raw curve.

    ``NaN`` values are skipped; ties go to the earliest epoch, as Lightning's ``ModelCheckpoint``
    keeps the first of equal scores. ``None`` when the metric has no finite value.
    """
    index = _best_index(curves.get(metric, ()), mode)
    return None if index is None else epoch_number(index)


def _last_index(curves: Curves) -> int | None:
    last: int | None = None
    for metric in (VAL_NLL, VAL_ACC, VAL_RMSE_DEG):  # val/rmse_deg: a regression run's (lossbench.regression)
        for index, raw in enumerate(curves.get(metric, ())):
            if raw is not None and math.isfinite(raw) and (last is None or index > last):
                last = index
    return last


def last_epoch(curves: Curves) -> int | None:
    """The last epoch with a validation result (a finite ``val/nll`` or ``val/acc``); ``None`` if none.

    Trailing epochs whose validation is missing (a run that diverged mid-epoch) do not count.
    """
    index = _last_index(curves)
    return None if index is None else epoch_number(index)


def generalisation_gap(curves: Curves, epoch: int | None) -> Gap:
    """The train-vs-validation gap at ``epoch``, positive when the model does better on training data.

    ``train_eval/*`` is the fixed training subset evaluated in eval mode, not the running training
    loss. Either component is ``NaN`` when one of its two values is missing or ``epoch`` is ``None``.
    """
    acc = value_at(curves, TRAIN_EVAL_ACC, epoch) - value_at(curves, VAL_ACC, epoch)
    nll = value_at(curves, VAL_NLL, epoch) - value_at(curves, TRAIN_EVAL_NLL, epoch)
    return Gap(acc, nll)


def trend(curves: Curves, val: str, train: str, mode: str, rule: Rule = Rule()) -> Trend | None:
    """Compare the smoothed end of ``val`` with its smoothed best (its peak), and ``train`` at those two epochs.

    ``mode="min"`` for NLL (worse = end above ``best·(1 + margin_nll)``), ``"max"`` for accuracy
    (worse = end below ``best − margin_acc``). ``None`` without a finite validation value.
    """
    last = _last_index(curves)
    v = smoothed(list(curves.get(val, ()))[: (last or 0) + 1], rule.smooth)
    best = _best_index(v, mode)
    if best is None or last is None:
        return None
    end = next((i for i in range(last, best - 1, -1) if _finite(_value({val: v}, val, i))), best)
    t = smoothed(list(curves.get(train, ()))[: last + 1], rule.smooth)
    val_best, val_end = v[best], v[end]
    train_at_best, train_end = _value({train: t}, train, best), _value({train: t}, train, end)
    if mode == "min":
        worse = val_end > val_best * (1 + rule.margin_nll) if val_best > 0 else val_end > val_best + rule.margin_nll
        train_better = train_end < train_at_best
    else:
        worse = val_end < val_best - rule.margin_acc
        train_better = train_end > train_at_best
    worse = worse and end - best >= rule.patience
    return Trend(
        epoch_number(best), epoch_number(end), val_best, val_end, train_at_best, train_end, worse, bool(train_better)
    )


def _pct(change: float, base: float) -> str:
    return f"{change / base:+.0%}".replace("%", " %") if base else f"{change:+.3f}"


def judge(curves: Curves, rule: Rule = Rule()) -> Verdict:
    """Decide whether a run overfits, drifts, is still improving or is stable; see the module docstring."""
    nll = trend(curves, VAL_NLL, TRAIN_EVAL_NLL, "min", rule)
    acc = trend(curves, VAL_ACC, TRAIN_EVAL_ACC, "max", rule)
    last = last_epoch(curves)
    gap = generalisation_gap(curves, last)
    gap_text = f"acc gap {gap.acc * 100:.1f} pp at the end" if _finite(gap.acc) else ""
    if nll is None and acc is None:
        regression = VAL_RMSE_DEG in curves  # lossbench.regression: no class probabilities to judge
        text = "not judged: a regression run (the rule reads validation NLL and accuracy)" if regression else ""
        return Verdict("unknown", None, None, None, last, gap, text or "no validation curve to judge")
    overfit_nll = nll is not None and nll.worse and nll.train_better
    overfit_acc = acc is not None and acc.worse and acc.train_better
    if overfit_nll or overfit_acc:
        onset = min(t.best_epoch for t, hit in ((nll, overfit_nll), (acc, overfit_acc)) if hit)
        figures = []
        if overfit_nll:
            figures.append(
                f"smoothed val NLL lowest at epoch {nll.best_epoch}, {_pct(nll.val_change, nll.val_best)} by epoch "
                f"{nll.last_epoch} while train_eval NLL {_pct(nll.train_change, nll.train_at_best)}"
            )
        if overfit_acc:
            figures.append(
                f"smoothed val acc highest at epoch {acc.best_epoch}, {acc.val_change * 100:+.1f} pp by epoch "
                f"{acc.last_epoch} while train_eval acc {acc.train_change * 100:+.1f} pp"
            )
        text = f"overfits after epoch {onset} ({'; '.join(figures + ([gap_text] if gap_text else []))})"
        return Verdict("overfits", onset, nll, acc, last, gap, text)
    if nll is not None and nll.worse:  # validation NLL rose, but training NLL did not fall: calibration drift
        text = (
            f"no overfitting; NLL drifts with train (smoothed val NLL {_pct(nll.val_change, nll.val_best)}, "
            f"train_eval NLL {_pct(nll.train_change, nll.train_at_best)} from epoch {nll.best_epoch} to "
            f"{nll.last_epoch}; val acc within {rule.margin_acc * 100:g} pp of its peak"
            f"{'; ' + gap_text if gap_text else ''})"
        )
        return Verdict("drift", None, nll, acc, last, gap, text)
    reference, what = (acc, "val acc") if acc is not None else (nll, "val NLL")
    if reference.last_epoch == reference.best_epoch:
        text = f"no overfitting; still improving (smoothed {what} best at the last epoch, {reference.last_epoch})"
        return Verdict("improving", None, nll, acc, last, gap, text + (f"; {gap_text}" if gap_text else ""))
    if reference.last_epoch - reference.best_epoch < rule.patience:
        text = (
            f"no overfitting yet; smoothed {what} peaked at epoch {reference.best_epoch} of {reference.last_epoch}, "
            f"too close to the end to judge (patience {rule.patience})"
        )
        return Verdict("peaked", None, nll, acc, last, gap, text + (f"; {gap_text}" if gap_text else ""))
    text = "no overfitting; smoothed validation stays within the margin of its peak"
    return Verdict("stable", None, nll, acc, last, gap, text + (f" ({gap_text})" if gap_text else ""))


def summary_figures(curves: Curves, rule: Rule = Rule(), monitor: str = VAL_ACC, mode: str = "max") -> dict[str, float]:
    """The verdict's figures by their short names (:data:`~lossbench.names.SUMMARY_FIGURES`), all finite;
    undefined ones are left out.

    - ``epochs``: how many epochs have a validation result; ``selected_epoch``: the epoch whose checkpoint is
      tested as ``test/*`` (best raw ``monitor``, ties to the earlier epoch)
    - ``best_epoch_nll``, ``best_val_nll``, ``best_epoch_acc``, ``best_val_acc``: raw (unsmoothed) best epochs
      and values of ``val/nll`` and ``val/acc``
    - ``gap_{acc,nll}_{selected,last}``: :func:`generalisation_gap` at the selected and last epoch
    - ``val_nll_rise``: relative rise of smoothed validation NLL from its minimum to the end;
      ``train_nll_change``: relative change of train_eval NLL over the same epochs
    - ``has_onset`` (always present), ``onset_epoch`` (only when overfitting), ``drift`` (1.0 when NLL drifts
      with train)
    - ``epochs_to_target``, ``seconds_to_target``: with ``rule.target_acc`` set, the first epoch whose validation
      accuracy reaches it (:func:`epochs_to`) and the seconds until then (:func:`seconds_to`); left out when not reached
    - ``loss_rise``, ``loss_has_onset``, ``loss_onset_epoch``: the same overfitting rule read on the run's own loss
      (:func:`own_loss_figures`)
    """
    out: dict[str, float] = {}

    def put(key: str, value: float | None) -> None:
        if _finite(value):
            out[key] = float(value)  # type: ignore[arg-type]

    last = last_epoch(curves)
    out["epochs"] = float(epoch_index(last) + 1) if last is not None else 0.0
    selected = best_epoch(curves, monitor, mode)
    put("selected_epoch", selected)
    for metric, how, name in ((VAL_NLL, "min", "nll"), (VAL_ACC, "max", "acc")):
        epoch = best_epoch(curves, metric, how)
        put(f"best_epoch_{name}", epoch)
        put(f"best_val_{name}", value_at(curves, metric, epoch))
    for where, epoch in (("selected", selected), ("last", last)):
        gap = generalisation_gap(curves, epoch)
        put(f"gap_acc_{where}", gap.acc)
        put(f"gap_nll_{where}", gap.nll)
    verdict = judge(curves, rule)
    if verdict.nll is not None and verdict.nll.val_best > 0:
        put("val_nll_rise", verdict.nll.val_change / verdict.nll.val_best)
        if verdict.nll.train_at_best > 0:
            put("train_nll_change", verdict.nll.train_change / verdict.nll.train_at_best)
    out["has_onset"] = 0.0 if verdict.onset_epoch is None else 1.0
    put("onset_epoch", verdict.onset_epoch)
    out["drift"] = 1.0 if verdict.kind == "drift" else 0.0
    if rule.target_acc is not None:
        reached = epochs_to(curves, rule.target_acc)
        put("epochs_to_target", reached)
        put("seconds_to_target", seconds_to(curves, reached))
    for name, value in own_loss_figures(curves, rule).items():
        put(name, value)
    return {name: out[name] for name in SUMMARY_FIGURES if name in out}


def epochs_to(curves: Curves, target: float, metric: str = VAL_ACC) -> int | None:
    """The first epoch whose raw ``metric`` (validation accuracy) reaches ``target`` (``>=``); None if none does."""
    for index, raw in enumerate(curves.get(metric, ())):
        if _finite(raw) and float(raw) >= target:
            return epoch_number(index)
    return None


def seconds_to(curves: Curves, epoch: int | None) -> float:
    """The seconds epochs 1 to ``epoch`` took (``time/epoch_s`` summed: training and evaluation); NaN when ``epoch``
    is None or one of those epochs has no time."""
    times = list(curves.get(EPOCH_TIME, ()))[: 0 if epoch is None else epoch_index(epoch) + 1]
    if epoch is None or len(times) < epoch_index(epoch) + 1 or not all(_finite(t) for t in times):
        return math.nan
    return float(sum(times))


def own_loss_figures(curves: Curves, rule: Rule = Rule()) -> dict[str, float]:
    """:func:`judge`'s overfitting rule read on the run's own loss, ``val/loss`` against ``train_eval/loss``, instead of
    the shared yardsticks: ``loss_rise`` (smoothed ``val/loss`` at the end relative to its lowest; left out when that
    lowest is not above 0), ``loss_has_onset`` (1 when validation loss ended worse than its lowest by the NLL margin,
    at least ``patience`` epochs later, while training loss ended lower) and ``loss_onset_epoch``. Empty without a
    validation loss curve."""
    own = trend(curves, VAL_LOSS, TRAIN_EVAL_LOSS, "min", rule)
    if own is None:
        return {}
    out = {"loss_has_onset": 1.0 if own.worse and own.train_better else 0.0}
    if own.val_best > 0:
        out["loss_rise"] = own.val_change / own.val_best
    if own.worse and own.train_better:
        out["loss_onset_epoch"] = float(own.best_epoch)
    return out


def summarize(curves: Curves, rule: Rule = Rule(), monitor: str = VAL_ACC, mode: str = "max") -> dict[str, float]:
    """:func:`summary_figures` as MLflow-ready metrics, ``summary/<figure>``."""
    return {SUMMARY_PREFIX + name: value for name, value in summary_figures(curves, rule, monitor, mode).items()}


class NllRise(NamedTuple):
    """How far smoothed validation NLL stands above its lowest, as :func:`judge` reads it, split by what training
    NLL did meanwhile; at most one of the two is non-zero."""

    overfit: float
    """The rise while smoothed ``train_eval/nll`` fell since that lowest epoch (overfitting once above the margin)."""
    drift: float
    """The rise while training NLL did not fall (calibration drifting on every split, not overfitting)."""


def nll_rise(curves: Curves, rule: Rule = Rule()) -> NllRise:
    """The NLL figure behind :func:`judge` at the run's last epoch: ``(val_end − val_best) / val_best`` of the smoothed
    validation NLL (its :class:`Trend`), counted as overfitting when training NLL ended lower than at that best epoch,
    as drift otherwise. ``NaN`` for both without a positive validation NLL or without training NLL."""
    t = trend(curves, VAL_NLL, TRAIN_EVAL_NLL, "min", rule)
    if t is None or not t.val_best > 0 or not _finite(t.train_at_best):
        return NllRise(math.nan, math.nan)  # without training NLL, a rise is neither kind
    rise = t.val_change / t.val_best
    return NllRise(rise, 0.0) if t.train_better else NllRise(0.0, rise)


def overfit_now(curves: Curves, rule: Rule = Rule()) -> dict[str, float]:
    """The overfitting signals at the last epoch of ``curves`` (:data:`~lossbench.names.OVERFIT_METRICS`): the
    accuracy and NLL gaps (:func:`generalisation_gap`) and :func:`nll_rise`, what the verdict would read were the run
    to stop here. A loss whose NLL lives at 2-4 and one at 0.3 read alike."""
    rise = nll_rise(curves, rule)
    out = {VAL_NLL_RISE: rise.overfit, NLL_DRIFT: rise.drift}
    if len(curves.get(TRAIN_EVAL_NLL, ())):
        gap = generalisation_gap(curves, epoch_number(len(curves.get(VAL_NLL, ())) - 1))
        out.update({GAP_ACC: gap.acc, GAP_NLL: gap.nll})
    return out


def overfit_curves(curves: Curves, rule: Rule = Rule()) -> dict[str, list[float]]:
    """:func:`overfit_now` at every epoch, each read on the curves up to that epoch (what a run logs as it trains,
    and what the report's overview chart draws): name -> per-epoch values. Both NLL rises are 0 at a new lowest, so
    the chart of overfitting and the chart of drift each show one kind of rise, and their last values are the
    verdict's."""
    val = curves.get(VAL_NLL, ())
    points = [overfit_now({k: list(v)[: i + 1] for k, v in curves.items()}, rule) for i in range(len(val))]
    names = points[0] if points else {VAL_NLL_RISE: 0.0, NLL_DRIFT: 0.0}
    return {name: [p[name] for p in points] for name in names}


def memorisation_drop(metrics: Mapping[str, float]) -> float | None:
    """``test/acc - test_last/acc``: accuracy lost by training on past the selected epoch.

    With noisy labels a large positive drop is the network memorising the wrong labels. ``None``
    unless both are given and finite.
    """
    best, last = metrics.get(TEST_ACC), metrics.get(TEST_LAST_ACC)
    if not (_finite(best) and _finite(last)):
        return None
    return float(best) - float(last)  # type: ignore[arg-type]
