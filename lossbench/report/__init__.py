"""``python -m lossbench.report``: a sweep (or a whole experiment) compared, with verdicts and uncertainty.

Reads the training runs of one MLflow experiment (``tags.lossbench.kind = 'train'``, optionally one
sweep), groups them by loss × optimizer (× model, data, label-noise rate and hyper-parameter setting
when those vary), and writes a report folder that it also logs to the sweep's parent run::

    python -m lossbench.report --experiment lossbench --sweep 3f2a9c [--tracking-uri URI] [--reference ce]

The package reads in one direction: :mod:`~lossbench.report.runs` (load and select runs) ->
:mod:`~lossbench.report.aggregate` (figures, intervals, verdicts, tuning, paired comparisons) ->
:mod:`~lossbench.report.content` (Markdown and HTML) and :mod:`~lossbench.report.figures` ->
:mod:`~lossbench.report.build` (files and MLflow) -> :mod:`~lossbench.report.cli`.
"""

from lossbench.report.aggregate import GroupRow, group_runs, run_values, varying_params
from lossbench.report.build import ReportResult, build_report, default_out_dir, log_report, report_run
from lossbench.report.cli import main
from lossbench.report.runs import ReportError, RunRecord, default_tracking_uri, load_runs, select_runs, train_filter

__all__ = [
    "GroupRow",
    "ReportError",
    "ReportResult",
    "RunRecord",
    "build_report",
    "default_out_dir",
    "default_tracking_uri",
    "group_runs",
    "load_runs",
    "log_report",
    "main",
    "report_run",
    "run_values",
    "select_runs",
    "train_filter",
    "varying_params",
]
