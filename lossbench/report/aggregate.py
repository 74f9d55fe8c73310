"""From runs to answers: per-run figures, groups with confidence intervals, verdicts, comparisons, tuning.

Pure functions over :class:`~lossbench.report.runs.RunRecord` (no I/O). A *group* is one
loss × optimizer (× model, data, label-noise rate when those vary) × hyper-parameter *setting*
(the params that vary inside the group, e.g. ``optimizer.lr=0.001``). Cells are means with a
Student-t 95 % interval over the group's runs (seeds), from :mod:`lossbench.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lossbench import analysis, stats
from lossbench.config import is_operational
from lossbench.names import EPOCH_TIME, MEMORISED, TEST_ACC, TEST_LAST_ACC, VAL_ACC
from lossbench.report.runs import RunRecord, Selection

TEST_IMAGES = 10_000
"""Every MNIST-family test set has 10,000 images: one image is 0.01 % of test accuracy."""
HEADERS = {"noise": "noise rate"}
ROW_FIGURES = (
    "test_acc",
    "test_last_acc",
    "selected_epoch",
    "gap_acc_selected",
    "gap_acc_last",
    "gap_nll_selected",
    "gap_nll_last",
    "val_nll_rise",
    "onset_epoch",
    "best_val_nll",
    "memorisation_drop",
    "memorised_last",
    "time_per_epoch_s",
)
"""The :func:`run_values` figures a report row gives with their intervals (summary.json, the parent run's metrics)."""


def run_values(run: RunRecord, rule: analysis.Rule = analysis.Rule()) -> dict[str, float]:
    """The per-run numbers the report aggregates (``NaN`` where undefined)."""
    monitor, mode = run.monitor
    s = analysis.summary_figures(run.curves, rule, monitor, mode)
    drop = analysis.memorisation_drop(run.metrics)
    times = np.asarray(run.curves.get(EPOCH_TIME, ()), dtype=float)
    times = times[np.isfinite(times)]
    selected = s.get("selected_epoch")
    last = analysis.last_epoch(run.curves)
    get = lambda key: s.get(key, math.nan)  # noqa: E731
    return {
        "test_acc": run.metrics.get(TEST_ACC, math.nan),
        "test_last_acc": run.metrics.get(TEST_LAST_ACC, math.nan),
        "memorisation_drop": math.nan if drop is None else drop,
        "epochs": s["epochs"],
        "selected_epoch": get("selected_epoch"),
        "val_acc_selected": analysis.value_at(run.curves, VAL_ACC, None if selected is None else int(selected)),
        "best_val_nll": get("best_val_nll"),
        "gap_acc_selected": get("gap_acc_selected"),
        "gap_nll_selected": get("gap_nll_selected"),
        "gap_acc_last": get("gap_acc_last"),
        "gap_nll_last": get("gap_nll_last"),
        "val_nll_rise": get("val_nll_rise"),
        "has_onset": s["has_onset"],
        "onset_epoch": get("onset_epoch"),
        "drift": s["drift"],
        "memorised_last": analysis.value_at(run.curves, MEMORISED, last),
        "time_per_epoch_s": float(times.mean()) if times.size else math.nan,
    }


@dataclass(frozen=True)
class GroupRow:
    """One row of the results: the runs (seeds) of one group."""

    key: dict[str, str]
    """Dimension -> value, e.g. ``{"loss": "ce", "optimizer": "adam"}``."""
    setting: str
    """The hyper-parameters that vary inside the row's loss × optimizer (× …) group; ``""`` when none do."""
    runs: list[RunRecord]
    values: dict[str, dict[str, float]]
    """:func:`run_values` of each run, by run id."""
    verdicts: dict[str, analysis.Verdict]
    """:func:`lossbench.analysis.judge` of each run, by run id."""

    @property
    def label(self) -> str:
        """E.g. ``ce / adam``, ``ce / adam / noise 0.4`` or ``ce / adam / optimizer.lr=0.01``."""
        parts = [f"noise {v}" if k == "noise" else v for k, v in self.key.items()]
        return " / ".join(parts + ([self.setting] if self.setting else []))

    @property
    def group(self) -> str:
        """The label without the setting: what tuning chooses a setting for."""
        return " / ".join(f"noise {v}" if k == "noise" else v for k, v in self.key.items())

    def interval(self, name: str) -> stats.Interval:
        """Mean and 95 % interval of one :func:`run_values` figure over the row's runs."""
        return stats.mean_ci(self.values[r.run_id][name] for r in self.runs)

    def by_seed(self, name: str) -> dict[str, float]:
        return {r.seed: self.values[r.run_id][name] for r in self.runs}

    @property
    def n_onset(self) -> int:
        return sum(1 for r in self.runs if self.verdicts[r.run_id].kind == "overfits")

    @property
    def verdict(self) -> str:
        """The group's verdict in plain words, from its runs' verdicts and figures."""
        n, kinds = len(self.runs), [self.verdicts[r.run_id].kind for r in self.runs]
        gap_last = self.interval("gap_acc_last")
        gap = f"acc gap {gap_last.mean * 100:.1f} pp at the end" if gap_last.n else ""
        rise = self.interval("val_nll_rise")
        if self.n_onset:
            onsets = sorted(
                int(self.values[r.run_id]["onset_epoch"])
                for r in self.runs
                if self.verdicts[r.run_id].kind == "overfits"
            )
            when = f"epoch {onsets[0]}" if onsets[0] == onsets[-1] else f"epochs {onsets[0]}–{onsets[-1]}"
            figures = [f"val NLL {rise.mean:+.0%} from its minimum to the end".replace("%", " %")] if rise.n else []
            return (
                f"overfits in {self.n_onset}/{n} runs, after {when} ("
                + "; ".join(figures + ([gap] if gap else []))
                + ")"
            )
        if kinds.count("drift") * 2 > n:
            return (
                f"no overfitting; NLL drifts with train in {kinds.count('drift')}/{n} runs "
                f"(val NLL {rise.mean:+.0%}, training NLL rising too".replace("%", " %")
                + (f"; {gap}" if gap else "")
                + ")"
            )
        if kinds.count("improving") * 2 > n:
            return f"no overfitting; still improving at the end in {kinds.count('improving')}/{n} runs" + (
                f" ({gap})" if gap else ""
            )
        return f"no overfitting in {n} run{'s' if n > 1 else ''}" + (f" ({gap})" if gap else "")


def group_dimensions(runs: Sequence[RunRecord]) -> list[str]:
    """loss and optimizer, plus model, data and noise (label-noise rate) when they vary among ``runs``."""
    dims = ["loss", "optimizer"]
    for name in ("model", "data", "noise"):
        if len({r.dimension(name) for r in runs}) > 1:
            dims.append(name)
    return dims


def varying_params(runs: Sequence[RunRecord]) -> list[str]:
    """Params (other than seeds, names and operational settings) whose values differ among ``runs``; a run without
    a param has it null ("None", as MLflow writes null: ``scheduler`` of a run without a scheduler is null)."""
    keys = sorted({k for r in runs for k in r.params})
    return [
        key
        for key in keys
        if not (key.rsplit(".", 1)[-1].endswith("seed") or key.endswith(".name") or is_operational(key))
        and len({r.params.get(key, "None") for r in runs}) > 1
    ]


def _nan_last(x: float) -> tuple[int, float]:
    return (1, 0.0) if not math.isfinite(x) else (0, -x)


def group_runs(runs: Sequence[RunRecord], dims: Sequence[str], rule: analysis.Rule = analysis.Rule()) -> list[GroupRow]:
    """Group runs by ``dims`` and by the setting of the params that vary inside each group; sorted by
    mean test accuracy, best first."""
    values = {r.run_id: run_values(r, rule) for r in runs}
    verdicts = {r.run_id: analysis.judge(r.curves, rule) for r in runs}
    by_key: dict[tuple[str, ...], list[RunRecord]] = {}
    for run in runs:
        by_key.setdefault(tuple(run.dimension(d) for d in dims), []).append(run)
    rows = []
    for key, members in by_key.items():
        varying = varying_params(members)
        by_setting: dict[str, list[RunRecord]] = {}
        for run in members:
            by_setting.setdefault(stats.setting_of({k: run.params.get(k) for k in varying}), []).append(run)
        for setting, group in by_setting.items():
            rows.append(
                GroupRow(
                    dict(zip(dims, key)),
                    setting,
                    group,
                    {r.run_id: values[r.run_id] for r in group},
                    {r.run_id: verdicts[r.run_id] for r in group},
                )
            )
    rows.sort(key=lambda row: (_nan_last(row.interval("test_acc").mean), row.label))
    return rows


@dataclass(frozen=True)
class Tuning:
    """Per group, the setting with the best mean validation accuracy (at each run's selected epoch)."""

    chosen: list[GroupRow]
    """One row per group: the runs of its chosen setting, sorted by mean test accuracy."""
    tuned: dict[str, stats.Tuned]
    """By group label: what was chosen among what, and the budget."""


def tune(rows: Sequence[GroupRow]) -> Tuning | None:
    """Choose each group's setting on validation accuracy only; ``None`` when no group has several settings."""
    if not any(row.setting for row in rows):
        return None
    trials = [
        stats.Trial(row.group, row.setting, run.seed, row.values[run.run_id]["val_acc_selected"], run.run_id)
        for row in rows
        for run in row.runs
    ]
    tuned = stats.select_tuned(trials)
    chosen = [row for row in rows if tuned[row.group].setting == row.setting]
    return Tuning(chosen, tuned)


@dataclass(frozen=True)
class Comparison:
    """One row against the reference loss with the same other dimensions, paired by seed."""

    row: GroupRow
    reference: GroupRow
    paired: stats.Paired
    rank: int | None


def compare(rows: Sequence[GroupRow], reference_loss: str, metric: str = "test_acc") -> list[Comparison]:
    """Each row vs the row of ``reference_loss`` sharing its other dimensions: paired differences of
    ``metric`` on shared seeds (paired t-test), and ranks with ties among those rows.

    ``rows`` should hold one row per group (after :func:`tune` when settings vary).
    """

    def others(row: GroupRow) -> tuple:
        return tuple(v for k, v in row.key.items() if k != "loss")

    blocks: dict[tuple, list[GroupRow]] = {}
    for row in rows:
        blocks.setdefault(others(row), []).append(row)
    out = []
    resolution = stats.resolution_of(TEST_IMAGES)
    for members in blocks.values():
        reference = next((r for r in members if r.key["loss"] == reference_loss), None)
        if reference is None:
            continue
        ranks = stats.rank_with_ties({r.label: r.interval(metric) for r in members})
        for row in members:
            paired = stats.paired_difference(row.by_seed(metric), reference.by_seed(metric), resolution=resolution)
            out.append(Comparison(row, reference, paired, ranks.get(row.label)))
    out.sort(
        key=lambda c: (c.rank if c.rank is not None else math.inf, _nan_last(c.row.interval(metric).mean), c.row.label)
    )
    return out


def reference_loss(rows: Sequence[GroupRow], wanted: str) -> str | None:
    """``wanted`` when some row has that loss, else ``None`` (no comparison is possible)."""
    return wanted if any(row.key["loss"] == wanted for row in rows) else None


@dataclass(frozen=True)
class Findings:
    """Everything a report says, before it is written: the runs and how they count, the groups, the tuned
    choice, and the paired comparisons with the reference loss."""

    selection: Selection
    dims: list[str]
    rows: list[GroupRow]
    tuning: Tuning | None
    reference: str | None
    comparisons: list[Comparison]
    rule: analysis.Rule

    @property
    def noisy(self) -> bool:
        """Whether the runs differ in label-noise rate (the report adds its noise table and figures)."""
        return "noise" in self.dims

    @property
    def shown(self) -> list[GroupRow]:
        """The rows the verdicts speak of: each group at its tuned setting when settings vary, else every row."""
        return self.tuning.chosen if self.tuning else self.rows


def analyse(selection: Selection, rule: analysis.Rule = analysis.Rule(), reference: str = "ce") -> Findings:
    """Group the counted runs, judge them, choose each group's setting on validation, compare with ``reference``."""
    dims = group_dimensions(selection.finished)
    rows = group_runs(selection.finished, dims, rule)
    tuning = tune(rows)
    ref = reference_loss(rows, reference)
    comparisons = compare(tuning.chosen if tuning else rows, ref) if ref else []
    return Findings(selection, dims, rows, tuning, ref, comparisons, rule)


def monitors(runs: Sequence[RunRecord]) -> Mapping[tuple[str, str], int]:
    """How many runs chose their tested checkpoint by each ``(monitor, mode)``."""
    counts: dict[tuple[str, str], int] = {}
    for run in runs:
        counts[run.monitor] = counts.get(run.monitor, 0) + 1
    return counts
