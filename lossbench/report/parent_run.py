"""What a report writes onto the MLflow run that holds it (a sweep's parent run): a description that reads right
in MLflow's UI, and the results as a table artifact in the report's units.

MLflow 3.17 shows a run's description (the ``mlflow.note.content`` tag) as Markdown through showdown (GitHub
flavour) and sanitize-html (no ``style``, no image sizes), in a pane 554 px wide at a 1280-px window and 874 px
at 1600 px, folded to its first 100 px behind "Show more" (measured in Chromium; tests/test_browser.py holds it).
So the description is not the report but its front page:

- the answer in one paragraph first, so it shows folded;
- the verdicts, one line per verdict;
- a four-column table that wraps to the pane;
- one 540-px figure (the report's ``overview``: overfitting at a glance), served from the run's artifacts;
- where everything else is: ``report/report.html`` in the run's artifacts.

No per-group metrics: 40 one-bar charts drowned the runs' own charts in MLflow's chart view, in fractions where
the report says % and pp. The numbers are the artifact ``report/results.json`` (a table MLflow's artifact view
shows) and ``report/summary.json``. Pure functions: lossbench.report.build does the writing.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

from lossbench.report import content, tables
from lossbench.report.aggregate import Findings
from lossbench.report.figures import ReportFigure

NOTE_LIMIT = 8000
"""MLflow truncates a run tag's value to 8000 characters (``mlflow.utils.validation.MAX_TAG_VAL_LENGTH``)."""
PANE_FIGURE = "overview"
"""The one figure the description shows (lossbench.report.figures: drawn 540 px wide)."""
RESULTS_FILE = "results.json"


def artifact_src(run_id: str, path: str) -> str:
    """A URL of one run artifact that the MLflow UI's own page can load (relative to the UI's root)."""
    return f"get-artifact?path={quote(path, safe='')}&run_uuid={run_id}"


def _literal_at(text: str) -> str:
    """``@`` as ``&#64;``: MLflow's Markdown would turn ``@name`` into a mention link."""
    return text.replace("@", "&#64;")


def description(findings: Findings, figures: dict[str, ReportFigure], run_id: str, artifact_dir: str) -> str:
    """The run's description: the report's front page (see the module docstring), within :data:`NOTE_LIMIT`."""
    parts = [
        f"**Answer.** {tables.escape(content.answer(findings))}",
        "\n".join(
            f"- **{tables.escape(', '.join(groups))}**: {tables.escape(text)}"
            for groups, text in content.verdict_lines(findings.shown)
        ),
        _table(findings),
    ]
    if PANE_FIGURE in figures:
        figure = figures[PANE_FIGURE]
        parts.append(f"![{figure.alt}]({artifact_src(run_id, f'{artifact_dir}/{figure.file}')})")
    parts.append(
        f"The whole report (every table, the learning curves, gaps, the runs, how to decide what is undecided): "
        f"Artifacts → {artifact_dir}/report.html."
    )
    text = _literal_at("\n\n".join(parts)) + "\n"
    if len(text) <= NOTE_LIMIT:
        return text
    cut = text[: NOTE_LIMIT - 200].rsplit("\n", 1)[0]
    return cut + f"\n\n*Shortened to fit MLflow's description limit: the whole report is {artifact_dir}/report.html.*\n"


def _table(findings: Findings) -> str:
    """Group, test accuracy at the selected epoch, the difference from its reference, and its verdict; when each
    level of another dimension has its own reference, every difference names it (``vs ce / sgd``)."""
    by_label = {c.row.label: c for c in findings.comparisons}
    several = len({c.reference.label for c in findings.comparisons}) > 1
    reference = findings.reference
    rows = []
    for row in findings.shown:
        c = by_label.get(row.label)
        if c is None or c.is_reference:
            versus, verdict = ("reference" if c is not None else "—"), ""
        else:
            versus = tables.difference(c) + (f" vs {c.reference.label}" if several else "")
            verdict = c.decision.verdict
        rows.append([row.label, tables.quantity(row, "test_acc"), versus, verdict])
    header = "difference (pp)" if several else f"vs {reference} (pp)" if reference else "vs reference"
    return tables.table(["group", "test acc (%)", header, "verdict"], rows, numeric_from=1, numeric_to=3)


def results(findings: Findings) -> dict[str, list[Any]]:
    """``report/results.json``: one row per group shown, in the report's units (%, pp, epochs), with the family's
    Holm-adjusted p-values: a table MLflow's artifact view shows as one."""
    by_label = {c.row.label: c for c in findings.comparisons}
    out: dict[str, list[Any]] = {
        "group": [],
        "runs": [],
        "test acc @selected (%)": [],
        "low (%)": [],
        "high (%)": [],
        "test acc @last (%)": [],
        "difference (pp)": [],
        "p (Holm)": [],
        "verdict": [],
        "overfitting": [],
    }
    for row in findings.shown:
        acc, c = row.interval("test_acc"), by_label.get(row.label)
        decided = c is not None and not c.is_reference
        out["group"].append(row.label)
        out["runs"].append(len(row.runs))
        out["test acc @selected (%)"].append(_pct(acc.mean))
        out["low (%)"].append(_pct(acc.low))
        out["high (%)"].append(_pct(acc.high))
        out["test acc @last (%)"].append(_pct(row.interval("test_last_acc").mean))
        out["difference (pp)"].append(_pct(c.paired.mean) if decided else None)
        out["p (Holm)"].append(c.decision.p_holm if decided and math.isfinite(c.decision.p_holm) else None)
        out["verdict"].append(c.decision.verdict if decided else ("reference" if c is not None else ""))
        out["overfitting"].append(row.verdict)
    return out


def _pct(x: float) -> float | None:
    return round(x * 100, 4) if math.isfinite(x) else None
