"""Read the runs, aggregate, write the report folder, and log it to the sweep's parent run.

::

    reports/<experiment>[-<sweep>]/
        report.md  report.html  summary.json  curves.png  gap_acc.png  gap_nll.png  [noise.png  memorisation.png]

``report.html`` is self-contained (figures embedded), so it renders in MLflow's artifact viewer too.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

from lossbench import analysis, decisions, store_links
from lossbench.errors import first_line
from lossbench.names import (
    CONFIG_HASH_TAG,
    FAILURE_TAG,
    KIND_REPORT,
    KIND_SWEEP,
    KIND_TAG,
    NOTE_TAG,
    SWEEP_OVERRIDES_TAG,
    SWEEP_TAG,
    VERDICT_TEXT_TAG,
)
from lossbench.report import aggregate, content, export, extend, parent_run, provenance
from lossbench.report.figures import FIGURES, write_figures
from lossbench.report.runs import (
    ReportError,
    check_store_exists,
    find_experiment,
    grouping_key,
    load_runs,
    no_runs_error,
    select_runs,
    train_filter,
)
from lossbench.stats import MIN_SEEDS
from lossbench.store import Tracker, quoted, resolve_uri, sweep_filter, tag_filter

ARTIFACT_PATH = "report"
REPORT_FILES: tuple[str, ...] = (
    "results.json",
    "report.md",
    "report.html",
    "report_inline.html",
    "summary.json",
    *(f.file for f in FIGURES),
)
"""Everything the report may write (and older versions wrote); stale copies are removed before writing."""


@dataclass(frozen=True)
class ReportResult:
    """Where a report went."""

    out_dir: Path
    markdown: Path
    html: Path
    summary_json: Path
    figures: list[Path]
    summary: dict[str, Any]
    tracking_uri: str
    experiment_id: str
    report_run_id: str | None
    """The MLflow run holding the report as artifacts; ``None`` when not logged."""
    exports: list[Path] = field(default_factory=list)
    """The files ``formats`` asked for (lossbench.report.export)."""
    grouping: tuple[tuple[str, str], ...] = (("tag", "loss"),)
    """How MLflow's UI groups the runs as the report compares them (lossbench.report.runs.grouping_key of each
    dimension that varies, the loss always): the sweep's curves view."""

    @property
    def answer(self) -> list[str]:
        """The report's first lines, as a terminal shows them: the answer, the verdicts, and the command that
        would decide what is undecided (the sweep's closing screen and the report command print them)."""
        s = self.summary
        lines = [s["answer"], *(f"  {v['groups']}: {v['verdict']}" for v in s["verdicts"])]
        extension = s.get("extension") or {}
        if extension.get("command"):
            why = ", for a first test" if extension.get("first_test") else ""
            lines += [f"decide: {extension['command']}   ({extension['runs']} more runs{why})"]
        return lines


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "report"


def default_out_dir(experiment: str, sweep_id: str | None = None) -> Path:
    """``reports/<experiment>[-<sweep>]`` (characters unsafe in file names replaced by ``_``)."""
    return Path("reports") / _safe_name(experiment if sweep_id is None else f"{experiment}-{sweep_id}")


def _row_json(row: aggregate.GroupRow) -> dict[str, Any]:
    names = aggregate.ROW_FIGURES
    return {
        **row.key,
        "setting": row.setting,
        "label": row.label,
        "n": len(row.runs),
        "n_onset": row.n_onset,
        "verdict": row.verdict,
        "run_ids": [r.run_id for r in row.runs],
        "runs": [
            {
                "run_id": r.run_id,
                "seed": r.seed,
                "verdict": row.verdicts[r.run_id].kind,
                VERDICT_TEXT_TAG: row.verdicts[r.run_id].text,
            }
            for r in row.runs
        ],
        **{name: row.interval(name).to_json() for name in names},
    }


def _monitor_text(runs: list) -> str:
    counts = aggregate.monitors(runs)
    if not counts:
        return ""
    parts = [
        f"best {monitor} ({'highest' if mode == 'max' else 'lowest'})" + (f" in {n} runs" if len(counts) > 1 else "")
        for (monitor, mode), n in sorted(counts.items())
    ]
    return (
        'The tested ("selected") checkpoint is the epoch with the '
        + ", ".join(parts)
        + " (`checkpoint.monitor`; ties: the earlier epoch)."
    )


def build_report(
    experiment: str,
    sweep_id: str | None = None,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    rule: analysis.Rule = analysis.Rule(),
    reference: str = "ce",
    log_to_mlflow: bool = True,
    client: Any = None,
    min_effect: float | None = None,
    formats: Sequence[str] = (),
) -> ReportResult:
    """Read the runs, write the report folder, and (by default) log it to the sweep's parent run.

    ``min_effect``: the smallest difference in test accuracy (a fraction) worth deciding; the seeds an undecided
    comparison needs are planned for it (None: for the difference observed). Raises :class:`ReportError` when the
    experiment does not exist or no run matches.
    """
    uri = tracking_uri or store_links.default_tracking_uri()
    uri = uri if "://" in uri else resolve_uri(uri)  # a bare path is an SQLite file, as train reads it
    if client is None:
        check_store_exists(uri)
        try:
            client = MlflowClient(tracking_uri=uri)
        except Exception as e:  # a store MLflow refuses (its old ./mlruns file store): the user's input, one line
            raise ReportError(f"tracking store {uri} cannot be opened: {first_line(e) or type(e).__name__}") from e
    exp = find_experiment(client, experiment, uri)
    Tracker(client, uri, exp.experiment_id).end_orphaned_runs()  # a run whose process is gone is not running
    filter_string = train_filter(sweep_id)
    runs = load_runs(client, exp.experiment_id, filter_string)
    if not runs:
        raise no_runs_error(client, exp, uri, filter_string, sweep_id)
    findings = aggregate.analyse(select_runs(runs), rule, reference, min_effect)
    parent = _sweep_parent(client, exp.experiment_id, sweep_id)
    base = extend.sweep_overrides(parent.data.tags.get(SWEEP_OVERRIDES_TAG) if parent else None)
    extension = extend.extension(findings, sweep_id, base)
    out = Path(out_dir) if out_dir is not None else default_out_dir(experiment, sweep_id)
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    figures = write_figures(out, findings)
    heading = _heading(experiment, sweep_id, uri, exp.experiment_id, filter_string, len(runs), findings)
    markdown = content.document(heading, findings, figures, extension)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    (out / "report.html").write_text(content.to_html(markdown, heading.title, out), encoding="utf-8")
    where = (experiment, exp.experiment_id, sweep_id, uri, filter_string, len(runs))
    summary = summary_json(*where, findings, figures, extension)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False, default=str) + "\n", "utf-8")
    exports = export.write(out, findings, formats, default_out_dir(experiment, sweep_id).name)
    run_id = (
        log_report(client, exp.experiment_id, out, experiment, sweep_id, findings, figures) if log_to_mlflow else None
    )
    files = [out / f.file for f in figures.values()]
    return ReportResult(
        out.resolve(),
        (out / "report.md").resolve(),
        (out / "report.html").resolve(),
        (out / "summary.json").resolve(),
        files,
        summary,
        uri,
        exp.experiment_id,
        run_id,
        [path.resolve() for path in exports],
        tuple(grouping_key(d) for d in findings.dims if d == "loss" or len({row.key[d] for row in findings.rows}) > 1),
    )


def _sweep_parent(client: Any, experiment_id: str, sweep_id: str | None):
    """The sweep's parent run (it knows the sweep's command line), or None."""
    if sweep_id is None:
        return None
    found = client.search_runs([experiment_id], filter_string=sweep_filter(sweep_id), max_results=1)
    return found[0] if found else None


def _heading(
    experiment: str,
    sweep_id: str | None,
    uri: str,
    experiment_id: str,
    filter_string: str,
    matched: int,
    findings: aggregate.Findings,
) -> content.Heading:
    selection = findings.selection
    title = f"lossbench report: {experiment}" + (f", sweep {sweep_id}" if sweep_id else "")
    intro = [
        f"Experiment `{experiment}` (id {experiment_id}) in `{uri}`; generated "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}.",
        f"{matched} training run(s) match {content.code(filter_string)}: {len(selection.finished)} finished "
        f"and counted, {len(selection.superseded)} superseded, {len(selection.not_finished)} not finished.",
    ]
    link = lambda run_id: store_links.run_url(uri, experiment_id, run_id)  # noqa: E731
    return content.Heading(title, intro, _monitor_text(selection.finished), link)


def summary_json(
    experiment: str,
    experiment_id: str,
    sweep_id: str | None,
    uri: str,
    filter_string: str,
    matched: int,
    findings: aggregate.Findings,
    figures: Mapping[str, Any],
    extension: extend.Extension | None = None,
) -> dict[str, Any]:
    """``summary.json``: what the report found, as data (the rows and comparisons with their intervals)."""
    selection, tuning = findings.selection, findings.tuning
    return {
        "answer": content.answer(findings),
        "verdicts": [{"groups": ", ".join(g), "verdict": v} for g, v in content.verdict_lines(findings.shown)],
        "experiment": experiment,
        "experiment_id": experiment_id,
        SWEEP_TAG: sweep_id,
        "tracking_uri": uri,
        "filter": filter_string,
        "group_by": findings.dims,
        "rule": vars(findings.rule),
        "monitor": [
            {"monitor": m, "mode": mode, "runs": n} for (m, mode), n in aggregate.monitors(selection.finished).items()
        ],
        "intervals": (
            f"mean with a two-sided 95 % Student-t interval over the runs (seeds) of a row, within the quantity's "
            f"range (0-1 for accuracies); low/high null below {MIN_SEEDS} seeds, which list their values instead"
        ),
        "decisions": {
            "procedure": decisions.PROCEDURE,
            "alpha": decisions.ALPHA,
            "power": decisions.POWER,
            "comparisons": len(findings.decided),
            "min_effect": findings.min_effect,
        },
        "counts": {
            "matched": matched,
            "finished": len(selection.finished),
            "superseded": len(selection.superseded),
            "not_finished": len(selection.not_finished),
        },
        "rows": [_row_json(row) for row in findings.rows],
        "tuned": None if tuning is None else [tuning.tuned[row.group].to_json() for row in tuning.chosen],
        "budgets": None if tuning is None else [b.to_json() for b in tuning.budgets.values()],
        "reference": findings.reference,
        "comparisons": [_comparison_json(c) for c in findings.decided],
        "extension": None if extension is None else extension.to_json(),
        "not_finished": [
            {"run_id": r.run_id, "name": r.name, "status": r.status, "reason": r.tags.get(FAILURE_TAG)}
            for r in selection.not_finished
        ],
        "superseded": [
            {"run_id": old.run_id, "name": old.name, CONFIG_HASH_TAG: old.config_hash, "kept_run_id": new.run_id}
            for old, new in selection.superseded
        ],
        "figures": sorted(f.file for f in figures.values()),
        "code": provenance.summary(findings),  # the code versions, libraries and devices of the runs
    }


def _comparison_json(c: aggregate.Comparison) -> dict[str, Any]:
    estimate, low, high = c.improvement
    finite = lambda x: x if math.isfinite(x) else None  # noqa: E731
    return {
        "label": c.row.label,
        "reference": c.reference.label,
        "rank": c.rank,
        "metric": "test_acc",
        **c.decision.to_json(),
        "probability_of_improvement": {"estimate": finite(estimate), "low": finite(low), "high": finite(high)},
    }


def report_run(client: Any, experiment_id: str, experiment: str, sweep_id: str | None) -> tuple[str, bool]:
    """The run that holds the report: ``(run_id, created)``.

    With a sweep: its parent run (``lossbench.kind = 'sweep'`` and ``sweep_id``), else a new one named
    ``report-<sweep>`` with those tags. Without: the run named ``report-<experiment>`` tagged
    ``lossbench.kind = 'report'``, created on first use (re-running the report updates it).
    """
    if sweep_id is not None:
        filter_string = sweep_filter(sweep_id)
        name, tags = f"report-{sweep_id}", {KIND_TAG: KIND_SWEEP, SWEEP_TAG: sweep_id}
    else:
        name = f"report-{experiment}"
        filter_string = f"{tag_filter(KIND_REPORT)} and attributes.run_name = {quoted(name)}"
        tags = {KIND_TAG: KIND_REPORT}
    found = client.search_runs(
        [experiment_id], filter_string=filter_string, max_results=1, order_by=["attributes.start_time DESC"]
    )
    if found:
        return found[0].info.run_id, False
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id, True


def log_report(
    client: Any,
    experiment_id: str,
    out: Path,
    experiment: str,
    sweep_id: str | None,
    findings: aggregate.Findings,
    figures: Mapping[str, Any],
) -> str:
    """Put the report on :func:`report_run` (returns its id): the folder as artifacts under ``report/``, its
    front page as the run's description (lossbench.report.parent_run), and the results as the table artifact
    ``report/results.json``. Re-running the report overwrites all three."""
    run_id, created = report_run(client, experiment_id, experiment, sweep_id)
    table = parent_run.results(findings)  # as MLflow's log_table writes a table, which would append to the last one
    split = {"columns": list(table), "data": [list(row) for row in zip(*table.values())]}
    (out / parent_run.RESULTS_FILE).write_text(json.dumps(split, allow_nan=False) + "\n", encoding="utf-8")
    client.log_artifacts(run_id, str(out), artifact_path=ARTIFACT_PATH)
    listed = json.loads(client.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    entry = {"path": f"{ARTIFACT_PATH}/{parent_run.RESULTS_FILE}", "type": "table"}  # the UI shows it as a table
    note = parent_run.description(findings, dict(figures), run_id, ARTIFACT_PATH)
    client.log_batch(
        run_id,
        tags=[
            RunTag(NOTE_TAG, note),
            RunTag(MLFLOW_LOGGED_ARTIFACTS, json.dumps([*listed, entry] if entry not in listed else listed)),
        ],
    )
    if created:
        client.set_terminated(run_id, "FINISHED")
    return run_id
