"""The report's figures, drawn into its folder by :mod:`lossbench.plots`, in the order of its tables.

The curve grid (the largest) is drawn here while this process's drawing process (lossbench.run_figures)
draws the others: at a sweep's end the report is all that runs, and a second core would otherwise idle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from lossbench import plots
from lossbench.report.aggregate import GroupRow
from lossbench.run_figures import drawer


def _epoch(value: float) -> int | None:
    return int(value) if math.isfinite(value) else None


def write_figures(out: Path, rows: Sequence[GroupRow], noisy: bool) -> dict[str, str]:
    """Draw the figures into ``out``; returns figure name -> file name (relative to ``out``)."""
    figures: dict[str, str] = {}
    if not rows:
        return figures
    drawn: dict[str, Future] = {}  # figure name -> the drawing process's answer (its path)
    marks = {
        row.label: [
            (_epoch(row.values[r.run_id]["selected_epoch"]), _epoch(row.values[r.run_id]["onset_epoch"]))
            for r in row.runs
        ]
        for row in rows
    }
    figures["curves"] = "curves.png"  # drawn last, here
    for metric, scale, label in (
        ("gap_acc", 100.0, "train_eval/acc − val/acc (pp)"),
        ("gap_nll", 1.0, "val/nll − train_eval/nll"),
    ):
        values = {
            row.label: {
                f"at {where} epoch": [row.values[r.run_id][f"{metric}_{where}"] * scale for r in row.runs]
                for where in ("selected", "last")
            }
            for row in rows
        }
        drawn[metric] = drawer().submit(
            "grouped_bars",
            values,
            out / f"{metric}.png",
            ylabel=label,
            title=f"Generalisation gap ({'accuracy' if metric == 'gap_acc' else 'NLL'}), in the table's order",
        )
        figures[metric] = f"{metric}.png"
    if noisy:
        best: dict[str, dict[float, list[float]]] = {}
        last: dict[str, dict[float, list[float]]] = {}
        memorised: dict[str, dict[str, list[Sequence[float]]]] = {}
        for row in rows:
            rate = row.runs[0].noise_rate
            if rate is None:
                continue
            name = " / ".join(v for k, v in row.key.items() if k != "noise") + (
                f" / {row.setting}" if row.setting else ""
            )
            best.setdefault(name, {})[rate] = [row.values[r.run_id]["test_acc"] for r in row.runs]
            last.setdefault(name, {})[rate] = [row.values[r.run_id]["test_last_acc"] for r in row.runs]
            curves = [r.curves["train_eval/memorised"] for r in row.runs if r.curves.get("train_eval/memorised")]
            if rate > 0 and curves:
                memorised.setdefault(f"label noise {rate}", {})[name] = curves
        if best:
            drawn["noise"] = drawer().submit(
                "noise_chart", best, last, out / "noise.png", title="Test accuracy against label noise"
            )
            figures["noise"] = "noise.png"
        if memorised:
            drawn["memorisation"] = drawer().submit(
                "memorisation_curves",
                dict(sorted(memorised.items())),
                out / "memorisation.png",
                title="Memorised fraction of flipped training labels",
            )
            figures["memorisation"] = "memorisation.png"
    plots.curve_grid(
        {row.label: [r.curves for r in row.runs] for row in rows},
        out / "curves.png",
        ncols=4 if len(rows) > 9 else 3,
        title="val/nll and train_eval/nll per epoch",
        marks=marks,
    )
    for future in drawn.values():
        future.result()  # a drawing error is raised here
    return figures
