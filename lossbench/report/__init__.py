"""``python -m lossbench.report``: a sweep (or a whole experiment) compared, with verdicts and uncertainty.

Reads the training runs of one MLflow experiment (``tags.lossbench.kind = 'train'``, optionally one
sweep), groups them by loss × optimizer (× model, data, label-noise rate and hyper-parameter setting
when those vary), and writes a report folder that it also logs to the sweep's parent run::

    python -m lossbench.report --experiment lossbench --sweep 3f2a9c [--tracking-uri URI] [--reference ce]

The package reads in one direction: :mod:`~lossbench.report.runs` (load and select runs) ->
:mod:`~lossbench.report.aggregate` (figures, intervals, verdicts, tuning, paired comparisons) ->
:mod:`~lossbench.report.content` (Markdown and HTML) and :mod:`~lossbench.report.figures` ->
:mod:`~lossbench.report.build` (files and MLflow) -> :mod:`~lossbench.report.cli`.

This module imports none of them: ``lossbench.report.build_report`` and the other names below load their
module on first use (PEP 562), so importing one submodule never drags in the others through this one.
"""

from __future__ import annotations

import importlib

FORMATS = ("latex", "csv", "parquet")
"""What ``--format`` can also write (lossbench.report.export); here so the command line knows it before any import."""

_WHERE = {
    "GroupRow": "aggregate",
    "group_runs": "aggregate",
    "run_values": "aggregate",
    "varying_params": "aggregate",
    "ReportResult": "build",
    "build_report": "build",
    "default_out_dir": "build",
    "log_report": "build",
    "report_run": "build",
    "main": "cli",
    "ReportError": "runs",
    "RunRecord": "runs",
    "load_runs": "runs",
    "select_runs": "runs",
    "train_filter": "runs",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'lossbench.report' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lossbench.report.{_WHERE[name]}"), name)
