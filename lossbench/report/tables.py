"""The report's tables, as Markdown that renders as written in CommonMark (report.html, GitHub) and in MLflow's
UI (showdown, GitHub flavour), where ``[78.91, 87.16] (n=2)`` would otherwise become a link to ``n=2``.

Every cell is text (:func:`cell` escapes what Markdown would read as syntax) except a :class:`Link`, the one
kind of link a table holds: a run's name pointing at the run. Quantities read in their unit everywhere
(:data:`lossbench.report.aggregate.QUANTITIES`); epochs are counts (``7``, ``6–8``), never means like ``7.0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lossbench import analysis
from lossbench.names import CONFIG_HASH_TAG, FAILURE_TAG
from lossbench.report.aggregate import HEADERS, QUANTITIES, Comparison, GroupRow, Tuning
from lossbench.report.runs import Selection
from lossbench.stats import MIN_SEEDS


@dataclass(frozen=True)
class Link:
    """A table cell that is a link (a run's name to its page): the only Markdown a cell keeps."""

    text: str
    url: str

    def __str__(self) -> str:
        return f"[{escape(self.text)}]({self.url})"


def escape(text: object) -> str:
    """``text`` as literal Markdown: brackets, pipes and emphasis marks escaped, one line."""
    out = str(text).replace("\\", "\\\\").replace("\n", " ")
    for mark in ("|", "[", "]", "*", "_", "`"):
        out = out.replace(mark, "\\" + mark)
    return out


def cell(value: object) -> str:
    return str(value) if isinstance(value, Link) else escape(value)


def table(
    columns: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int = 99, numeric_to: int = 99
) -> str:
    """A GitHub-flavoured Markdown table; columns ``numeric_from`` to ``numeric_to`` (exclusive) are right-aligned."""
    lines = [
        "| " + " | ".join(map(cell, columns)) + " |",
        "|" + "|".join("---:" if numeric_from <= i < numeric_to else "---" for i in range(len(columns))) + "|",
    ]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def quantity(row: GroupRow, name: str, show_n: bool = True) -> str:
    """A row's figure with its interval, in its unit (``87.52 [86.90, 88.14] (n=3)``, ``86.90 (n=2: 86.5, 87.3)``)."""
    q = QUANTITIES[name]
    return row.interval(name).format(q.scale, q.digits, show_n)


def mean_of(row: GroupRow, name: str) -> str:
    """A row's figure as its mean only, in its unit (``—`` without values)."""
    q, iv = QUANTITIES[name], row.interval(name)
    return "—" if iv.n == 0 else f"{iv.mean * q.scale:.{q.digits}f}"


def _pair(row: GroupRow, name: str) -> str:
    """``selected → last`` means of a figure taken at both epochs."""
    return f"{mean_of(row, name + '_selected')} → {mean_of(row, name + '_last')}"


def _onset(row: GroupRow) -> str:
    return f"{row.epochs('onset_epoch')} ({row.n_onset}/{len(row.runs)})" if row.n_onset else f"— (0/{len(row.runs)})"


def same_n(rows: Sequence[GroupRow]) -> int | None:
    """The number of runs every row has, or None when they differ."""
    counts = {len(row.runs) for row in rows}
    return counts.pop() if len(counts) == 1 else None


def results_table(rows: Sequence[GroupRow], dims: Sequence[str]) -> str:
    """One row per group: test accuracy at the selected and the last epoch with 95 % intervals, the selected epoch,
    gaps at both, the rise of validation NLL from its lowest (smoothed) while training NLL fell (overfitting) and while it
    rose too (drift), as the overview chart's last epoch, and the onset (the verdicts say the rest)."""
    with_setting = any(row.setting for row in rows)
    show_n = same_n(rows) is None  # said once above the table when every row has the same number of seeds
    columns = [
        *(HEADERS.get(d, d) for d in dims),
        *(["setting"] if with_setting else []),
        "test acc @selected (%)",
        "test acc @last (%)",
        "selected epoch",
        "gap acc (pp) sel → last",
        "gap NLL sel → last",
        "val NLL rise (%) overfit / drift",
        "overfits after epoch (runs)",
    ]
    body = [
        [
            *row.key.values(),
            *([row.setting or "—"] if with_setting else []),
            quantity(row, "test_acc", show_n),
            quantity(row, "test_last_acc", show_n),
            row.epochs("selected_epoch"),
            _pair(row, "gap_acc"),
            _pair(row, "gap_nll"),
            f"{mean_of(row, 'val_nll_rise')} / {mean_of(row, 'nll_drift')}",
            _onset(row),
        ]
        for row in rows
    ]
    return table(columns, body, numeric_from=len(dims) + with_setting)


def tuned_table(tuning: Tuning, dims: Sequence[str]) -> str:
    columns = [
        *(HEADERS.get(d, d) for d in dims),
        "chosen setting",
        "mean val acc (%)",
        "settings tried",
        "budget (runs)",
        "expected best val acc, 1 setting → all (%)",
        "test acc @selected (%)",
    ]
    body = []
    for row in tuning.chosen:
        tuned, budget = tuning.tuned[row.group], tuning.budgets[row.group]
        curve = f"{budget.expected[0] * 100:.2f} → {budget.expected[-1] * 100:.2f}" if budget.expected else "—"
        body.append(
            [
                *row.key.values(),
                tuned.setting or "—",
                f"{tuned.val * 100:.2f}",
                tuned.n_settings,
                tuned.budget,
                curve,
                quantity(row, "test_acc"),
            ]
        )
    return table(columns, body, numeric_from=len(dims) + 1)


def difference(c: Comparison) -> str:
    """The paired difference in pp: ``+0.50 [+0.21, +0.79] (n=6)``, or the differences themselves below 3 pairs."""
    p = c.paired
    if p.n == 0:
        return "—"
    if p.n < MIN_SEEDS:
        return f"{p.mean * 100:+.2f} (n={p.n}: " + ", ".join(f"{d * 100:+.2f}" for d in p.differences) + ")"
    return f"{p.mean * 100:+.2f} [{p.low * 100:+.2f}, {p.high * 100:+.2f}] (n={p.n})"


def improvement(c: Comparison) -> str:
    estimate, low, high = c.improvement
    if not math.isfinite(estimate):
        return "—"
    return f"{estimate:.2f}" + (f" [{low:.2f}, {high:.2f}]" if math.isfinite(low) else "")


def p_values(c: Comparison) -> str:
    d = c.decision
    if not math.isfinite(d.p_holm):
        return "—"
    return f"{d.p_holm:.2g} (look {d.look})"


def comparison_table(comparisons: Sequence[Comparison]) -> str:
    """One row per group, each naming the reference it is compared with (``vs``) and ranked among that reference's
    groups: the rows come in blocks, one per reference."""
    columns = [
        "rank",
        "group",
        "test acc (%)",
        "vs",
        "difference (pp) [95 % CI]",
        "P(improvement) [95 % CI]",
        "p, Holm-adjusted",
        "verdict",
    ]
    body = [
        [
            c.rank if c.rank is not None else "—",
            c.row.label,
            quantity(c.row, "test_acc"),
            c.reference.label,
            "reference" if c.is_reference else difference(c),
            "" if c.is_reference else improvement(c),
            "" if c.is_reference else p_values(c),
            "" if c.is_reference else c.decision.verdict,
        ]
        for c in comparisons
    ]
    return table(columns, body, numeric_from=2, numeric_to=7)


def noise_table(rows: Sequence[GroupRow], dims: Sequence[str]) -> str:
    """Loss (× the other dimensions) × label-noise rate: selected/last test accuracy, drop, memorised fraction."""
    others = [d for d in dims if d != "noise"]
    ordered = sorted(rows, key=lambda r: ([r.key[d] for d in others], _as_float(r.key["noise"]), r.setting))
    columns = [
        *others,
        "noise rate",
        "test acc @selected (%)",
        "test acc @last (%)",
        "memorisation drop (pp)",
        "memorised at the end (%)",
    ]
    body = [
        [
            *(row.key[d] for d in others),
            row.key["noise"],
            quantity(row, "test_acc"),
            quantity(row, "test_last_acc"),
            quantity(row, "memorisation_drop"),
            quantity(row, "memorised_last"),
        ]
        for row in ordered
    ]
    return table(columns, body, numeric_from=len(others))


def _as_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


def not_finished_table(selection: Selection) -> str:
    finished = {r.config_hash: r for r in selection.finished if r.config_hash}
    rows = []
    for run in selection.not_finished:
        epochs = analysis.last_epoch(run.curves)
        reason = run.tags.get(FAILURE_TAG) or ("in progress" if run.status in ("RUNNING", "SCHEDULED") else "—")
        rerun = finished.get(run.config_hash) if run.config_hash else None
        rows.append(
            [
                run.name,
                run.status,
                run.dimension("loss"),
                run.dimension("optimizer"),
                run.seed,
                "0" if epochs is None else str(epochs),
                reason,
                f"re-run finished: {rerun.name}" if rerun else "",
                run.run_id,
            ]
        )
    return table(["run", "status", "loss", "optimizer", "seed", "epochs", "reason", "note", "run id"], rows)


def superseded_table(selection: Selection) -> str:
    rows = [[old.name, old.config_hash or "", new.name, old.run_id, new.run_id] for old, new in selection.superseded]
    return table(["superseded run", CONFIG_HASH_TAG, "kept (newest)", "superseded run id", "kept run id"], rows)


def runs_table(rows: Sequence[GroupRow], link: Callable[[str], str] | None = None) -> str:
    """Every run used, with its own figures and verdict; names link to the run when ``link(run_id)`` gives a URL."""
    body = []
    for row in rows:
        for run in row.runs:
            v, verdict = row.values[run.run_id], row.verdicts[run.run_id]
            body.append(
                [
                    Link(run.name, link(run.run_id)) if link else run.name,
                    row.label,
                    run.seed,
                    f"{v['test_acc'] * 100:.2f}",
                    f"{v['test_last_acc'] * 100:.2f}",
                    "—" if not math.isfinite(v["selected_epoch"]) else f"{v['selected_epoch']:.0f}",
                    f"{v['epochs']:.0f}",
                    verdict.text,
                    run.run_id,
                ]
            )
    columns = [
        "run",
        "group",
        "seed",
        "test acc @selected (%)",
        "test acc @last (%)",
        "selected epoch",
        "epochs",
        "verdict",
        "run id",
    ]
    return table(columns, body, numeric_from=3, numeric_to=7)
