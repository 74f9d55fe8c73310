"""The report's words, as Markdown; :func:`to_html` renders the same text as one HTML page.

The answer comes first, in one paragraph (:func:`answer`): which groups overfit, and how each compares with the
reference as its family decided it. The same paragraph opens the sweep run's description in MLflow and the
sweep's closing screen. Then the verdicts per group, the results table, the tuned view, the comparisons and
what would decide the undecided ones, then figures and the bookkeeping (runs not finished, superseded, every
run used). Tables and their escaping: :mod:`lossbench.report.tables`.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

from lossbench import decisions
from lossbench.names import CONFIG_HASH_TAG, MEMORISED, OBJECTIVE, SEED_DRIVES_TAG, TRAIN_EVAL_NLL, VAL_NLL
from lossbench.report import extend, provenance, tables
from lossbench.report.aggregate import HEADERS, Comparison, Findings, GroupRow
from lossbench.report.extend import Extension
from lossbench.report.figures import ReportFigure
from lossbench.stats import BELOW_RESOLUTION, BETTER, EQUIVALENT, INDISTINGUISHABLE, MIN_SEEDS, TOO_FEW, WORSE

LIST_AT_MOST = 4
"""An answer names at most this many groups per outcome, then counts them."""


def code(text: str) -> str:
    """A Markdown code span for ``text``, even when it holds backticks."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


@dataclass(frozen=True)
class Heading:
    """What the report says about itself: its title, the lines under it, which checkpoint it tests, and how a run
    name links to the run (``link(run_id)`` gives a URL, or None for plain names)."""

    title: str
    intro: Sequence[str]
    monitor_text: str
    link: Callable[[str], str] | None = None


# ----------------------------------------------------------------------------------------- the answer


def _names(labels: Sequence[str]) -> str:
    if len(labels) <= LIST_AT_MOST:
        return ", ".join(labels)
    return f"{len(labels)} groups ({', '.join(labels[:LIST_AT_MOST])}, …)"


def overfitting_sentence(findings: Findings) -> str:
    """Which groups overfit and when, in one sentence."""
    shown = findings.shown
    overfit = [row for row in shown if row.n_onset]
    if not overfit:
        return f"No group overfits ({len(shown)} group{'s' if len(shown) != 1 else ''} judged)."
    parts = [f"{row.label} ({row.verdict_phrase.removeprefix('overfits ')})" for row in overfit[:LIST_AT_MOST]]
    more = f" and {len(overfit) - LIST_AT_MOST} more" if len(overfit) > LIST_AT_MOST else ""
    rest = len(shown) - len(overfit)
    others = f"; the other {rest} groups do not" if rest > 1 else "; the other group does not" if rest else ""
    return f"Overfitting: {'; '.join(parts)}{more}{others}."


DIFFERENCES_AT_MOST = 8
"""The answer lists every decided comparison and the largest undecided ones up to this many in all (at least
:data:`UNDECIDED_AT_LEAST`), then counts the rest ("N more in the report")."""
UNDECIDED_AT_LEAST = 3


def _blocks(findings: Findings) -> dict[str, list[Comparison]]:
    """Reference label -> its comparisons (the reference itself first): each level of the other dimensions is
    compared against its own reference."""
    blocks: dict[str, list[Comparison]] = {}
    for c in findings.comparisons:
        blocks.setdefault(c.reference.label, []).append(c)
    return blocks


def scope(findings: Findings) -> str:
    """Against what each group is compared, in words: ``ce`` for one reference, ``ce with the same optimizer (ce /
    adam, ce / sgd)`` when another dimension varies and each of its levels has its own reference."""
    references = list(_blocks(findings))
    if len(references) <= 1:
        return str(findings.reference)
    return f"{findings.reference} with the same {_levels(findings)} ({', '.join(references)})"


def _levels(findings: Findings) -> str:
    """The dimensions whose levels each have their own reference, in words (``optimizer``)."""
    others = [d for d in findings.dims if d != "loss" and len({c.reference.key[d] for c in findings.comparisons}) > 1]
    return " and ".join(HEADERS.get(d, d) for d in others)


def _accuracy(row: GroupRow) -> str:
    """``95.60 % [94.29, 96.91]``; ``86.90 % (n=2: 86.50, 87.30)`` below three seeds."""
    mean, _, rest = row.interval("test_acc").format(100.0, 2, show_n=False).partition(" ")
    return f"{mean} %" + (f" {rest}" if rest else "")


def best_sentence(findings: Findings) -> str:
    """The best group(s) by mean test accuracy with its interval, per reference (ties: the groups sharing rank 1)."""
    blocks = _blocks(findings)
    if not blocks:
        rows = [row for row in findings.shown if row.interval("test_acc").n]
        return f"Best test accuracy: {rows[0].label} {_accuracy(rows[0])}." if rows else ""
    parts = []
    for members in blocks.values():
        ordered = sorted(members, key=lambda c: -c.row.interval("test_acc").mean)
        top = ordered[0]
        tied = [c.row.label for c in ordered[1:] if top.rank is not None and c.rank == top.rank]
        text = f"{top.row.label} {_accuracy(top.row)}"
        parts.append(text + (f" (rank 1 with {', '.join(tied)}: intervals overlap)" if tied else ""))
    return f"Best test accuracy{f' per {_levels(findings)}' if len(parts) > 1 else ''}: {'; '.join(parts)}."


def _difference(c: Comparison) -> str:
    p = c.paired
    if p.n == 0:
        return f"{c.row.label}: no paired seed"
    if p.n < MIN_SEEDS:
        return f"{c.row.label} {p.mean * 100:+.2f} pp (n={p.n}: {', '.join(f'{d * 100:+.2f}' for d in p.differences)})"
    return f"{c.row.label} {p.mean * 100:+.2f} pp [{p.low * 100:+.2f}, {p.high * 100:+.2f}]"


def _listed(comparisons: Sequence[Comparison]) -> str:
    return ", ".join(_difference(c) for c in sorted(comparisons, key=lambda c: -c.paired.mean))


def _seeds(findings: Findings) -> str:
    counts = sorted({c.paired.n for c in findings.decided})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def comparison_sentence(findings: Findings) -> str:
    """How the groups compare with their reference, as the family decided it, in one sentence: every difference with
    its interval, sorted within its outcome; when many are undecided, the largest of them, then how many more the
    report lists. Below :data:`MIN_SEEDS` paired seeds: that no test ran, with the differences seen."""
    decided = findings.decided
    if not decided:
        return ""
    if all(c.outcome == TOO_FEW for c in decided):
        return (
            f"No test ran: {_seeds(findings)} paired seeds per comparison, a test needs {MIN_SEEDS}. Against "
            f"{scope(findings)} on test accuracy, per seed: {_listed(decided)}."
        )
    by: dict[str, list[Comparison]] = {}
    for c in decided:
        by.setdefault(c.outcome, []).append(c)
    parts = [f"{outcome}: {_listed(by[outcome])}" for outcome in (BETTER, WORSE) if by.get(outcome)]
    if by.get(EQUIVALENT):
        parts.append(f"equivalent (within ±{findings.min_effect * 100:.2g} pp): {_listed(by[EQUIVALENT])}")
    listed = sum(len(by.get(o, ())) for o in (BETTER, WORSE, EQUIVALENT))
    undecided = sorted(by.get(INDISTINGUISHABLE, []), key=lambda c: -abs(c.paired.mean))
    room = max(UNDECIDED_AT_LEAST, DIFFERENCES_AT_MOST - listed)
    if undecided:
        parts.append(f"not distinguishable yet: {_listed(undecided[:room])}{_decidable(findings, undecided)}")
    for outcome, words in ((BELOW_RESOLUTION, "below the test set's resolution"), (TOO_FEW, "too few seeds, no test")):
        if by.get(outcome):
            parts.append(f"{words}: {_names([c.row.label for c in by[outcome]])}")
    more = len(undecided) - room
    tested = len(decided) - len(by.get(TOO_FEW, ()))
    return (
        f"Against {scope(findings)} on test accuracy (Holm over {tested} comparison{'s' if tested != 1 else ''}, "
        f"error rate {decisions.ALPHA:g}): "
        + "; ".join(parts)
        + (f"; {more} more in the report" if more > 0 else "")
        + "."
    )


def _decidable(findings: Findings, undecided: Sequence[Comparison]) -> str:
    """`` (21 more runs would decide 6 of them)``: the runs of the report's extension, as its decide command says."""
    decidable = [c for c in undecided if c.decision.plan and c.decision.plan.extra]
    more = extend.extension(findings, None, []) if decidable else None
    return f" ({more.runs} more runs would decide {len(decidable)} of them)" if more else ""


def answer(findings: Findings) -> str:
    """The report's answer in one paragraph: the best group with its accuracy, every difference from the reference
    as the family decided it, then the verdicts. The sweep's closing screen and its MLflow run say the same."""
    sentences = (best_sentence(findings), comparison_sentence(findings), overfitting_sentence(findings))
    return " ".join(s for s in sentences if s)


# --------------------------------------------------------------------------------------- the sections


def document(
    heading: Heading, findings: Findings, figures: Mapping[str, ReportFigure], extension: Extension | None = None
) -> str:
    """The whole report as Markdown: its sections in order, each skipped when it has nothing to say."""
    sections = (
        ["## Answer", tables.escape(answer(findings))],
        _notes(findings),
        provenance.section(findings),  # which code made the runs; a warning where a group mixes code
        _verdicts(findings),
        _results(heading, findings),
        _tuned(findings, figures),
        _compared(findings),
        _extend(findings, extension),
        _figures_of("curves", figures),
        _figures_of("gap", figures),
        _noisy(findings, figures),
        _not_finished(findings),
        _superseded(findings),
        ["## Runs used", tables.runs_table(findings.rows, heading.link)],
    )
    # The intro and the monitor's words are lossbench's own Markdown (code spans around URIs and filters).
    parts = [f"# {tables.escape(heading.title)}", *heading.intro, *(part for section in sections for part in section)]
    return "\n\n".join(parts) + "\n"


def _notes(findings: Findings) -> list[str]:
    selection, notes = findings.selection, []
    if selection.superseded:
        hashes = sorted({old.config_hash or "" for old, _ in selection.superseded})
        notes.append(
            f"{len(selection.superseded)} FINISHED run(s) were superseded by a newer run with the same "
            f'{code(CONFIG_HASH_TAG)} ({", ".join(hashes)}); only the newest counts (see "Superseded runs").'
        )
    if selection.not_finished:
        notes.append(
            f"{len(selection.not_finished)} run(s) have not finished (RUNNING, FAILED or KILLED): listed "
            'under "Not finished" and left out of every mean.'
        )
    return ["## Notes", "\n".join(f"- {n}" for n in notes)] if notes else []


def verdict_lines(rows: Sequence[GroupRow]) -> list[tuple[list[str], str]]:
    """``(groups, verdict)``, one per verdict: a group that overfits or drifts with its figures, groups sharing any
    other verdict named together (21 groups still improving are one line, not 21)."""
    lines: list[tuple[list[str], str]] = []
    for row in rows:
        if row.n_onset or "drifts" in row.verdict_phrase:
            lines.append(([row.label], row.verdict))
            continue
        shared = next((line for line in lines if line[1] == row.verdict_phrase), None)
        if shared is None:
            lines.append(([row.label], row.verdict_phrase))
        else:
            shared[0].append(row.label)
    return lines


def _verdicts(findings: Findings) -> list[str]:
    rule = findings.rule
    return [
        "## Verdicts",
        "\n".join(
            f"- **{tables.escape(', '.join(groups))}**: {tables.escape(text)}"
            for groups, text in verdict_lines(findings.shown)
        ),
        f"A run *overfits* when its validation NLL (or accuracy), smoothed over {rule.smooth} epochs, ends more "
        f"than {rule.margin_nll * 100:g} % above its lowest (or {rule.margin_acc * 100:g} pp below its highest), "
        f"that *peak* at least {rule.patience} epochs before the end, while the same yardstick on training data "
        f"(train_eval) ended better than at the peak; it overfits *after* that epoch (the onset). When training "
        "NLL rises too, the run is *drifting* (calibration), not overfitting. The *selected* epoch is different: "
        f"the raw curve's highest {tables.escape(OBJECTIVE)}, whose checkpoint is tested. Epochs count from 1. "
        "Thresholds: analysis.\\*.",
    ]


def _seed_drives(rows: Sequence[GroupRow]) -> str:
    """One sentence: what a seed drew in these runs (their :data:`~lossbench.names.SEED_DRIVES_TAG`); "" when no run
    says (recorded before the tag)."""
    said = sorted({r.tags[SEED_DRIVES_TAG] for row in rows for r in row.runs if SEED_DRIVES_TAG in r.tags})
    if not said:
        return ""
    fixed = "" if any(s.count(",") > 1 for s in said) else " (the data split and noise draws fixed: data.redraw=false)"
    return f" Each seed drew: {'; '.join(s.replace(',', ', ') for s in said)}{fixed}."


def _seeds_note(rows: Sequence[GroupRow]) -> str:
    return _seeds_count(rows) + _seed_drives(rows)


def _seeds_count(rows: Sequence[GroupRow]) -> str:
    n = tables.same_n(rows)
    if n == 1:
        return "One seed per group: values without intervals (an interval needs 3 seeds)."
    if n is not None and n < MIN_SEEDS:
        return (
            f"{n} seeds per group: each cell gives the mean and the {n} values (an interval needs {MIN_SEEDS} seeds)."
        )
    if n is not None:
        return f"{n} seeds per group: mean \\[95 % Student-t interval, within 0–100 %\\]."
    return (
        f"Mean \\[95 % Student-t interval, within 0–100 %\\] over the row's seeds (n); with fewer than {MIN_SEEDS} "
        "seeds, the values themselves."
    )


def _results(heading: Heading, findings: Findings) -> list[str]:
    dims = " × ".join(HEADERS.get(d, d) for d in findings.dims) + (" × setting" if findings.tuning else "")
    return [
        "## Results",
        f"One row per {dims}, sorted by mean test accuracy. {heading.monitor_text} Test accuracy is "
        f"given for that selected epoch and for the last one. {_seeds_note(findings.rows)} Gaps are means, "
        "positive when overfitting (acc: train_eval − val, pp; NLL: val − train_eval). Val NLL rise: smoothed val "
        "NLL at the end relative to its lowest, as *overfit* when training NLL fell meanwhile and as *drift* when "
        "it rose too (the overview chart's last epoch).",
        tables.results_table(findings.rows, findings.dims),
    ]


def _tuned(findings: Findings, figures: Mapping[str, ReportFigure]) -> list[str]:
    if not findings.tuning:
        return []
    return [
        "## Tuned: each group at its own best setting",
        "Per group, the setting with the best mean **validation** accuracy (at each run's selected epoch, the "
        "sweep's first runs only) is chosen; the test set plays no part in the choice. Budget = runs the group "
        "got (settings × seeds). Expected best: the validation accuracy the best of k settings tried at random "
        "reaches on average (Dodge et al., 2019), from one setting to all of them: how much a loss depends on "
        "tuning.",
        tables.tuned_table(findings.tuning, findings.dims),
        *_images("budget", figures),
    ]


def _compared(findings: Findings) -> list[str]:
    decided = findings.decided
    if not decided:
        return []
    reference = scope(findings)
    return [
        f"## Compared with {tables.escape(findings.reference)}",
        f"Test accuracy of each group minus that of {tables.escape(reference)}, on the seeds both have (same seed = same initial "
        "weights, batch order and data split): the mean difference with its 95 % interval (per comparison), the "
        "probability that a run of the group beats a run of the reference (Mann-Whitney, Newcombe's interval), "
        f"and the verdict. **The {len(decided)} comparisons are decided together**: "
        f'{tables.escape(decisions.PROCEDURE)}. So a verdict can say "not distinguishable" while its interval '
        "excludes 0. One test image is 0.01 pp. Rank, among the groups compared with the same reference (vs): by "
        f"mean; a group whose interval overlaps the one above shares its rank; none below {MIN_SEEDS} seeds (no "
        "interval)." + (" Groups are compared at their tuned settings." if findings.tuning else ""),
        tables.comparison_table(findings.comparisons),
    ]


def _extend(findings: Findings, extension: Extension | None) -> list[str]:
    if extension is None:
        return []
    rows = [[label, overrides, new] for label, overrides, new in extension.groups]
    said = (
        f"{extension.runs} more runs give every comparison the {MIN_SEEDS} paired seeds a first test needs: each "
        "group at its own setting, and the reference beside it, on new seeds, as more of the sweep's first stage."
        if extension.first_test
        else f"{extension.runs} more runs would decide what this look could not, at the power and error rate above: "
        "each undecided group at its own setting, and the reference beside it, on new seeds. This is the "
        "design's one extension; the second look decides at its own boundary."
    )
    text = [
        "## Deciding the undecided",
        said,
        tables.table(["group", "overrides", "new seeds"], rows, numeric_from=2),
    ]
    if extension.command:
        text += ["Run them (every finished run is skipped; the sweep writes this report again when it ends):"]
        text += [f"```\n{extension.command}\n```"]
    return text


SECTION_TEXT = {
    "curves": (
        "## Learning curves",
        f"{VAL_NLL} (solid) and {TRAIN_EVAL_NLL} (dashed) per epoch, one colour per seed; "
        "dotted green: the selected epoch (highest raw val/acc), dashed red: the overfitting onset (the smoothed "
        "curve's peak).",
    ),
    "gap": (
        "## Generalisation gap",
        "At the selected epoch and at the last epoch, in the table's order; bars are means, dots single runs.",
    ),
}


def _images(section: str, figures: Mapping[str, ReportFigure]) -> list[str]:
    return [f"![{f.alt}]({f.file})" for f in figures.values() if f.section == section]


def _figures_of(section: str, figures: Mapping[str, ReportFigure]) -> list[str]:
    images = _images(section, figures)
    return [SECTION_TEXT[section][0], tables.escape(SECTION_TEXT[section][1]), *images] if images else []


def _noisy(findings: Findings, figures: Mapping[str, ReportFigure]) -> list[str]:
    if not findings.noisy:
        return []
    return [
        "## Noisy labels",
        "Test accuracy at the selected epoch and at the last per label-noise rate. Memorisation drop = "
        "selected − last. Memorised: the share of flipped training labels the network predicts as "
        f"labelled ({code(MEMORISED)}) at the last epoch.",
        tables.noise_table(findings.rows, findings.dims),
        *_images("noise", figures),
    ]


def _not_finished(findings: Findings) -> list[str]:
    selection = findings.selection
    return [
        "## Not finished",
        ("Shown for completeness; none of these enters the results.\n\n" + tables.not_finished_table(selection))
        if selection.not_finished
        else "None: every matching run finished.",
    ]


def _superseded(findings: Findings) -> list[str]:
    selection = findings.selection
    return ["## Superseded runs", tables.superseded_table(selection)] if selection.superseded else []


# ------------------------------------------------------------------------------------------------ HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1250px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: .35em .6em; vertical-align: top; }
th { background: #f4f4f4; }
td[style*="right"] { font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
code { background: #f4f4f4; padding: 0 .25em; border-radius: 3px; }
pre { background: #f4f4f4; padding: .6em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
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
