"""The report's words and tables, as Markdown; :func:`to_html` renders the same text as one HTML page.

The answer comes first: verdicts per group, then the results table, the tuned view and the paired
comparison with the reference loss, then figures and the bookkeeping (runs not finished, superseded,
every run used).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

from lossbench import analysis
from lossbench.names import CONFIG_HASH_TAG, FAILURE_TAG
from lossbench.report import provenance
from lossbench.report.aggregate import HEADERS, Comparison, Findings, GroupRow, Tuning
from lossbench.report.figures import ReportFigure
from lossbench.report.runs import Selection


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


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


def code(text: str) -> str:
    """A Markdown code span for ``text``, even when it holds backticks."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _mean(row: GroupRow, name: str, scale: float = 1.0, digits: int = 2) -> str:
    iv = row.interval(name)
    return "—" if iv.n == 0 else f"{iv.mean * scale:.{digits}f}"


def _pair(row: GroupRow, name: str, scale: float = 1.0, digits: int = 2) -> str:
    """``selected → last`` means of a figure taken at both epochs."""
    return f"{_mean(row, name + '_selected', scale, digits)} → {_mean(row, name + '_last', scale, digits)}"


def _onset(row: GroupRow) -> str:
    iv = row.interval("onset_epoch")
    return f"{'—' if iv.n == 0 else f'{iv.mean:.1f}'} ({row.n_onset}/{len(row.runs)})"


def _rise(row: GroupRow) -> str:
    iv = row.interval("val_nll_rise")
    return "—" if iv.n == 0 else f"{iv.mean * 100:+.0f}"


def results_table(rows: Sequence[GroupRow], dims: Sequence[str]) -> str:
    """One row per group: test accuracy at the selected and the last epoch with 95 % intervals,
    gaps at both, the rise of validation NLL from its minimum, and the onset (verdicts have their own section)."""
    with_setting = any(row.setting for row in rows)
    columns = [
        *(HEADERS.get(d, d) for d in dims),
        *(["setting"] if with_setting else []),
        "test acc @selected (%)",
        "test acc @last (%)",
        "selected epoch",
        "gap acc (pp) sel → last",
        "gap NLL sel → last",
        "val NLL rise (%)",
        "onset (runs)",
    ]
    body = [
        [
            *row.key.values(),
            *([row.setting or "—"] if with_setting else []),
            row.interval("test_acc").format(100, 2),
            row.interval("test_last_acc").format(100, 2),
            _mean(row, "selected_epoch", 1, 1),
            _pair(row, "gap_acc", 100, 1),
            _pair(row, "gap_nll", 1, 3),
            _rise(row),
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
        "test acc @selected (%)",
        "test acc @last (%)",
    ]
    body = []
    for row in tuning.chosen:
        tuned = tuning.tuned[row.group]
        body.append(
            [
                *row.key.values(),
                tuned.setting or "—",
                f"{tuned.val * 100:.2f}",
                tuned.n_settings,
                tuned.budget,
                row.interval("test_acc").format(100, 2),
                row.interval("test_last_acc").format(100, 2),
            ]
        )
    return table(columns, body, numeric_from=len(dims) + 1)


def comparison_table(comparisons: Sequence[Comparison]) -> str:
    columns = ["rank", "group", "test acc (%)", "difference vs reference (pp) [95 % CI], p (n seeds): verdict"]
    body = [
        [
            c.rank if c.rank is not None else "—",
            c.row.label,
            c.row.interval("test_acc").format(100, 2),
            "reference" if c.row is c.reference else c.paired.format(100, 2),
        ]
        for c in comparisons
    ]
    return table(columns, body, numeric_from=2, numeric_to=3)


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
            row.interval("test_acc").format(100, 2),
            row.interval("test_last_acc").format(100, 2),
            row.interval("memorisation_drop").format(100, 2),
            row.interval("memorised_last").format(100, 1),
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
                "0" if epochs is None else str(epochs + 1),
                reason,
                f"re-run finished: {rerun.name}" if rerun else "",
                run.run_id,
            ]
        )
    return table(["run", "status", "loss", "optimizer", "seed", "epochs", "reason", "note", "run id"], rows)


def superseded_table(selection: Selection) -> str:
    rows = [[old.name, old.config_hash or "", new.name, old.run_id, new.run_id] for old, new in selection.superseded]
    return table(["superseded run", CONFIG_HASH_TAG, "kept (newest)", "superseded run id", "kept run id"], rows)


def runs_table(rows: Sequence[GroupRow], link=None) -> str:
    """Every run used, with its own figures and verdict; names link to the run when ``link(run_id)`` gives a URL."""
    body = []
    for row in rows:
        for run in row.runs:
            v, verdict = row.values[run.run_id], row.verdicts[run.run_id]
            name = f"[{cell(run.name)}]({link(run.run_id)})" if link else run.name
            body.append(
                [
                    name,
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
    return table(
        [
            "run",
            "group",
            "seed",
            "test acc @selected (%)",
            "test acc @last (%)",
            "selected epoch",
            "epochs",
            "verdict",
            "run id",
        ],
        body,
        numeric_from=3,
        numeric_to=7,
    )


@dataclass(frozen=True)
class Heading:
    """What the report says about itself: its title, the lines under it, which checkpoint it tests, and how a run
    name links to the run (``link(run_id)`` gives a URL, or None for plain names)."""

    title: str
    intro: Sequence[str]
    monitor_text: str
    link: Callable[[str], str] | None = None


def document(heading: Heading, findings: Findings, figures: Mapping[str, ReportFigure]) -> str:
    """The whole report as Markdown: its sections in order, each skipped when it has nothing to say."""
    sections = (
        _notes(findings),
        provenance.section(findings),  # issue 26: which code made the runs, warnings where a group mixes code
        _verdicts(findings),
        _results(heading, findings),
        _tuned(findings),
        _compared(findings),
        _figures_of("curves", findings, figures),
        _figures_of("gap", findings, figures),
        _noisy(findings, figures),
        _not_finished(findings),
        _superseded(findings),
        ["## Runs used", runs_table(findings.rows, heading.link)],
    )
    parts = [f"# {heading.title}", *heading.intro, *(part for section in sections for part in section)]
    return "\n\n".join(parts) + "\n"


def _notes(findings: Findings) -> list[str]:
    selection, notes = findings.selection, []
    if selection.superseded:
        hashes = sorted({old.config_hash or "" for old, _ in selection.superseded})
        notes.append(
            f"{len(selection.superseded)} FINISHED run(s) were superseded by a newer run with the same "
            f'`{CONFIG_HASH_TAG}` ({", ".join(hashes)}); only the newest counts (see "Superseded runs").'
        )
    if selection.not_finished:
        notes.append(
            f"{len(selection.not_finished)} run(s) have not finished (RUNNING, FAILED or KILLED): listed "
            'under "Not finished" and left out of every mean.'
        )
    return ["## Notes", "\n".join(f"- {n}" for n in notes)] if notes else []


def _verdicts(findings: Findings) -> list[str]:
    rule = findings.rule
    return [
        "## Verdicts",
        "\n".join(f"- **{row.label}**: {row.verdict}" for row in findings.shown),
        f"A run *overfits* when its validation NLL (or accuracy), smoothed over {rule.smooth} epochs, ends more "
        f"than {rule.margin_nll:.0%} above its minimum (or {rule.margin_acc * 100:g} pp below its maximum), "
        f"reached at least {rule.patience} epochs before the end, while the same yardstick on training data "
        "(`train_eval`) ended better than at that epoch; the onset is that epoch. When training NLL rises "
        "too, the run is *drifting* (calibration), not overfitting. Thresholds: `analysis.*`.",
    ]


def _results(heading: Heading, findings: Findings) -> list[str]:
    return [
        "## Results",
        "One row per "
        + " × ".join(HEADERS.get(d, d) for d in findings.dims)
        + (" × setting" if findings.tuning else "")
        + f", sorted by mean test accuracy. {heading.monitor_text} Test accuracy is given for that selected epoch "
        "and for the last one: mean [95 % Student-t interval] over the row's seeds (n). Gaps are means, positive "
        "when overfitting (acc: train_eval − val, pp; NLL: val − train_eval). Val NLL rise: smoothed val NLL "
        "at the end relative to its minimum.",
        results_table(findings.rows, findings.dims),
    ]


def _tuned(findings: Findings) -> list[str]:
    if not findings.tuning:
        return []
    return [
        "## Tuned: each group at its own best setting",
        "Per group, the setting with the best mean **validation** accuracy (at each run's selected epoch) "
        "is chosen; the test set plays no part in the choice. Budget = runs the group got (settings × "
        "seeds).",
        tuned_table(findings.tuning, findings.dims),
    ]


def _compared(findings: Findings) -> list[str]:
    if not findings.comparisons:
        return []
    reference = findings.reference
    return [
        f"## Compared with {reference}",
        f"Test accuracy of each group minus {reference}'s, on the seeds both have (same seed = same initial "
        "weights, batch order and data split): mean difference with its 95 % interval and the two-sided "
        "paired t-test. Better/worse when the interval excludes 0; one test image is "
        "0.01 pp, and label errors in the test set put a floor under differences that small. Rank: by mean; "
        "a group whose 95 % interval overlaps the one above shares its rank."
        + (" Groups are compared at their tuned settings." if findings.tuning else ""),
        comparison_table(findings.comparisons),
    ]


SECTION_TEXT = {
    "curves": (
        "## Learning curves",
        "val/nll (solid) and train_eval/nll (dashed) per epoch, one line per run; "
        "dotted green: the selected epoch, dashed red: the overfitting onset.",
    ),
    "gap": (
        "## Generalisation gap",
        "At the selected epoch and at the last epoch, in the table's order; bars are means, dots single runs.",
    ),
}


def _images(section: str, figures: Mapping[str, ReportFigure]) -> list[str]:
    return [f"![{f.alt}]({f.file})" for f in figures.values() if f.section == section]


def _figures_of(section: str, findings: Findings, figures: Mapping[str, ReportFigure]) -> list[str]:
    images = _images(section, figures)
    return [*SECTION_TEXT[section], *images] if images else []


def _noisy(findings: Findings, figures: Mapping[str, ReportFigure]) -> list[str]:
    if not findings.noisy:
        return []
    return [
        "## Noisy labels",
        "Test accuracy at the selected epoch and at the last per label-noise rate. Memorisation drop = "
        "selected − last. Memorised: the share of flipped training labels the network predicts as "
        "labelled (`train_eval/memorised`) at the last epoch.",
        noise_table(findings.rows, findings.dims),
        *_images("noise", figures),
    ]


def _not_finished(findings: Findings) -> list[str]:
    selection = findings.selection
    return [
        "## Not finished",
        ("Shown for completeness; none of these enters the results.\n\n" + not_finished_table(selection))
        if selection.not_finished
        else "None: every matching run finished.",
    ]


def _superseded(findings: Findings) -> list[str]:
    return ["## Superseded runs", superseded_table(findings.selection)] if findings.selection.superseded else []


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1250px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .35em .6em; vertical-align: top; }
th { background: #f4f4f4; }
td[style*="right"] { font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
code { background: #f4f4f4; padding: 0 .25em; border-radius: 3px; }
"""


def to_html(markdown: str, title: str, images_from: Path) -> str:
    """The Markdown as one self-contained HTML page: inline CSS, figures embedded as ``data:`` URIs.

    Self-contained because MLflow's artifact viewer shows HTML from a blob URL, where relative image
    links cannot resolve; nothing is fetched from elsewhere.
    """
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def embed(match: re.Match) -> str:
        path = images_from / html.unescape(match.group(1))
        if not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode("ascii")}"'

    body = re.sub(r'src="([^":]+\.png)"', embed, body)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
