"""Read the runs, aggregate, write the report folder, and log it to the sweep's parent run.

::

    reports/<experiment>[-<sweep>]/
        report.md  report.html  summary.json  curves.png  gap_acc.png  gap_nll.png  [noise.png  memorisation.png]

``report.html`` is self-contained (figures embedded), so it renders in MLflow's artifact viewer too.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from lossbench import analysis, store_links
from lossbench.names import (
    CONFIG_HASH_TAG,
    FAILURE_TAG,
    KIND_REPORT,
    KIND_SWEEP,
    KIND_TAG,
    NOTE_TAG,
    SWEEP_TAG,
    VERDICT_TEXT_TAG,
)
from lossbench.report import aggregate, content, export, parent_run, provenance
from lossbench.report.figures import FIGURES, write_figures
from lossbench.report.runs import (
    check_store_exists,
    default_tracking_uri,
    find_experiment,
    load_runs,
    no_runs_error,
    select_runs,
    train_filter,
)
from lossbench.store import quoted, sweep_filter, tag_filter

ARTIFACT_PATH = "report"
REPORT_FILES: tuple[str, ...] = (
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
    formats: Sequence[str] = (),
) -> ReportResult:
    """Read the runs, write the report folder, and (by default) log it to the sweep's parent run; ``formats``
    (``latex``, ``csv``, ``parquet``) adds the table and tidy files of lossbench.report.export.

    Raises :class:`ReportError` when the experiment does not exist or no run matches.
    """
    uri = tracking_uri or default_tracking_uri()
    if client is None:
        check_store_exists(uri)
        client = MlflowClient(tracking_uri=uri)
    exp = find_experiment(client, experiment, uri)
    filter_string = train_filter(sweep_id)
    runs = load_runs(client, exp.experiment_id, filter_string)
    if not runs:
        raise no_runs_error(client, exp, uri, filter_string, sweep_id)
    findings = aggregate.analyse(select_runs(runs), rule, reference)
    out = Path(out_dir) if out_dir is not None else default_out_dir(experiment, sweep_id)
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    figures = write_figures(out, findings.rows, findings.noisy)
    heading = _heading(experiment, sweep_id, uri, exp.experiment_id, filter_string, len(runs), findings)
    markdown = content.document(heading, findings, figures)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    (out / "report.html").write_text(content.to_html(markdown, heading.title, out), encoding="utf-8")
    summary = summary_json(experiment, exp.experiment_id, sweep_id, uri, filter_string, len(runs), findings, figures)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False, default=str) + "\n", "utf-8")
    exports = export.write(out, findings, formats, default_out_dir(experiment, sweep_id).name)  # issue 26: --format
    run_id = (
        log_report(client, exp.experiment_id, out, experiment, sweep_id, markdown, summary["rows"])
        if log_to_mlflow
        else None
    )
    files = [out / f.file for f in figures.values()]
    return ReportResult(
        out,
        out / "report.md",
        out / "report.html",
        out / "summary.json",
        files,
        summary,
        uri,
        exp.experiment_id,
        run_id,
        exports,
    )


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
) -> dict[str, Any]:
    """``summary.json``: what the report found, as data (the rows and comparisons with their intervals)."""
    selection, tuning = findings.selection, findings.tuning
    return {
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
        "intervals": "mean with a two-sided 95 % Student-t interval over the runs (seeds) of a row; low/high null with n < 2",
        "counts": {
            "matched": matched,
            "finished": len(selection.finished),
            "superseded": len(selection.superseded),
            "not_finished": len(selection.not_finished),
        },
        "rows": [_row_json(row) for row in findings.rows],
        "tuned": None if tuning is None else [tuning.tuned[row.group].to_json() for row in tuning.chosen],
        "reference": findings.reference,
        "comparisons": [
            {
                "label": c.row.label,
                "reference": c.reference.label,
                "rank": c.rank,
                "metric": "test_acc",
                **c.paired.to_json(),
            }
            for c in findings.comparisons
        ],
        "not_finished": [
            {"run_id": r.run_id, "name": r.name, "status": r.status, "reason": r.tags.get(FAILURE_TAG)}
            for r in selection.not_finished
        ],
        "superseded": [
            {"run_id": old.run_id, "name": old.name, CONFIG_HASH_TAG: old.config_hash, "kept_run_id": new.run_id}
            for old, new in selection.superseded
        ],
        "figures": sorted(f.file for f in figures.values()),
        "code": provenance.summary(findings),  # issue 26: the code versions, libraries and devices of the runs
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
    markdown: str,
    rows: list[dict[str, Any]],
) -> str:
    """Put the report on :func:`report_run` (returns its id): the folder as artifacts under ``report/``,
    its Markdown as the run's description (figures served from those artifacts), and each group's
    means as metrics (``report/test_acc/ce_adam``). Re-running the report overwrites all three."""
    run_id, created = report_run(client, experiment_id, experiment, sweep_id)
    client.log_artifacts(run_id, str(out), artifact_path=ARTIFACT_PATH)
    note = parent_run.description(markdown, run_id, ARTIFACT_PATH)
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in parent_run.group_metrics(rows).items()]
    client.log_batch(run_id, metrics=metrics[:1000], tags=[RunTag(NOTE_TAG, note)])
    for i in range(1000, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    if created:
        client.set_terminated(run_id, "FINISHED")
    return run_id
