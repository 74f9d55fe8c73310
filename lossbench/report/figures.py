"""The report's figures: one entry each in :data:`FIGURES` (its file, its words, the section it illustrates and
how it is drawn), drawn into the report's folder by :mod:`lossbench.plots`.

The curve grid (the largest) is drawn here while this process's drawing process (lossbench.run_figures)
draws the others: at a sweep's end the report is all that runs, and a second core would otherwise idle.
Adding a figure is adding one :class:`ReportFigure` below; the report's text, its file list and its MLflow
artifacts follow from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from lossbench import analysis, plots
from lossbench.names import MEMORISED, NLL_DRIFT, TRAIN_EVAL_NLL, VAL_NLL, VAL_NLL_RISE
from lossbench.report.aggregate import Findings, GroupRow, dimension_text
from lossbench.run_figures import drawer
from lossbench.stats import seed_order

Drawn = Future | Path | None
"""What drawing a figure gives: a Future of the drawing process, the file drawn here, or None (nothing to show)."""


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report."""

    name: str
    """Its key, and its file ``<name>.png``."""
    alt: str
    """What it shows, in words (the image's alternative text)."""
    section: str
    """The report section it belongs to (lossbench.report.content places it)."""
    draw: Callable[[Findings, Path], Drawn]
    """Draws it to the given path from what the report found (None: nothing to show for these runs)."""

    @property
    def file(self) -> str:
        return f"{self.name}.png"


def _epoch(value: float) -> int | None:
    return int(value) if math.isfinite(value) else None


def _by_seed(row: GroupRow) -> list:
    return sorted(row.runs, key=lambda r: seed_order(r.seed))


def _overview(findings: Findings, path: Path) -> Drawn:
    rule = findings.rule
    signals = {row.label: [analysis.overfit_curves(r.curves, rule) for r in _by_seed(row)] for row in findings.shown}
    overfit = {label: [s.get(VAL_NLL_RISE, []) for s in runs] for label, runs in signals.items()}
    drift = {label: [s.get(NLL_DRIFT, []) for s in runs] for label, runs in signals.items()}
    title = "Overfitting at a glance (mean over seeds)"
    return drawer().submit("overfit_overview", overfit, drift, path, margin=rule.margin_nll, title=title)


def _budget(findings: Findings, path: Path) -> Drawn:
    tuning = findings.tuning
    if tuning is None:
        return None
    curves = {group: (b.expected, b.std) for group, b in tuning.budgets.items() if b.expected}
    return drawer().submit("budget_curves", curves, path, title="Expected best validation accuracy by budget")


def _curves(findings: Findings, path: Path) -> Drawn:
    rows = findings.rows
    marks = {
        row.label: [
            (_epoch(row.values[r.run_id]["selected_epoch"]), _epoch(row.values[r.run_id]["onset_epoch"]))
            for r in _by_seed(row)
        ]
        for row in rows
    }
    return plots.curve_grid(
        {row.label: [r.curves for r in _by_seed(row)] for row in rows},
        path,
        ncols=4 if len(rows) > 9 else 3,
        title=f"{VAL_NLL} and {TRAIN_EVAL_NLL} per epoch",
        marks=marks,
        seeds={row.label: [r.seed for r in _by_seed(row)] for row in rows},
    )


def _gap(metric: str, scale: float, label: str, what: str) -> Callable[[Findings, Path], Drawn]:
    def draw(findings: Findings, path: Path) -> Drawn:
        rows = findings.rows
        values = {
            row.label: {
                f"at {where} epoch": [row.values[r.run_id][f"{metric}_{where}"] * scale for r in row.runs]
                for where in ("selected", "last")
            }
            for row in rows
        }
        title = f"Generalisation gap ({what}), in the table's order"
        return drawer().submit("grouped_bars", values, path, ylabel=label, title=title)

    return draw


def _noise_groups(rows: Sequence[GroupRow]) -> list[tuple[str, float, GroupRow]]:
    """(loss × the other dimensions, noise rate, row) of the rows that have a noise rate."""
    found = []
    for row in rows:
        rate = row.runs[0].noise_rate
        if rate is not None:
            name = " / ".join(dimension_text(k, v) for k, v in row.key.items() if k != "noise") + (
                f" / {row.setting}" if row.setting else ""
            )
            found.append((name, rate, row))
    return found


def _noise(findings: Findings, path: Path) -> Drawn:
    if not findings.noisy:
        return None
    rows = findings.rows
    best: dict[str, dict[float, list[float]]] = {}
    last: dict[str, dict[float, list[float]]] = {}
    for name, rate, row in _noise_groups(rows):
        best.setdefault(name, {})[rate] = [row.values[r.run_id]["test_acc"] for r in row.runs]
        last.setdefault(name, {})[rate] = [row.values[r.run_id]["test_last_acc"] for r in row.runs]
    if not best:
        return None
    return drawer().submit("noise_chart", best, last, path, title="Test accuracy against label noise")


def _memorisation(findings: Findings, path: Path) -> Drawn:
    if not findings.noisy:
        return None
    rows = findings.rows
    memorised: dict[str, dict[str, list[Sequence[float]]]] = {}
    for name, rate, row in _noise_groups(rows):
        curves = [r.curves[MEMORISED] for r in row.runs if r.curves.get(MEMORISED)]
        if rate > 0 and curves:
            memorised.setdefault(f"label noise {rate}", {})[name] = curves
    if not memorised:
        return None
    title = "Memorised fraction of flipped training labels"
    return drawer().submit("memorisation_curves", dict(sorted(memorised.items())), path, title=title)


FIGURES: tuple[ReportFigure, ...] = (
    ReportFigure(
        "overview",
        "overfitting at a glance: val NLL above its lowest while training NLL fell (left) and while it rose too (right)",
        "curves",
        _overview,
    ),
    ReportFigure("curves", "learning curves per group", "curves", _curves),
    ReportFigure(
        "gap_acc", "accuracy gap per group", "gap", _gap("gap_acc", 100.0, "train_eval/acc − val/acc (pp)", "accuracy")
    ),
    ReportFigure("gap_nll", "NLL gap per group", "gap", _gap("gap_nll", 1.0, "val/nll − train_eval/nll", "NLL")),
    ReportFigure("noise", "test accuracy against label-noise rate", "noise", _noise),
    ReportFigure("memorisation", "memorised fraction of flipped labels per epoch", "noise", _memorisation),
    ReportFigure("budget", "expected best validation accuracy against the settings tried", "budget", _budget),
)
"""Every figure the report may draw, in the order it shows them. ``noise`` and ``memorisation`` need runs with
label noise, ``budget`` a sweep that tried several settings; the others are drawn for every report. ``overview``
is small enough for MLflow's description pane, which shows it (lossbench.report.parent_run)."""


def write_figures(out: Path, findings: Findings) -> dict[str, ReportFigure]:
    """Draw the figures that apply into ``out`` (the curve grid here, the others in the drawing process meanwhile);
    returns name -> figure for those drawn."""
    if not findings.rows:
        return {}
    here = [f for f in FIGURES if f.name == "curves"]
    drawn = {f.name: f.draw(findings, out / f.file) for f in FIGURES if f not in here}  # queued in the drawing process
    drawn.update({f.name: f.draw(findings, out / f.file) for f in here})
    for answer in drawn.values():
        if isinstance(answer, Future):
            answer.result()  # a drawing error is raised here
    return {f.name: f for f in FIGURES if drawn[f.name] is not None}
