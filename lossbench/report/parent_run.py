"""What a report writes back onto the MLflow run that holds it (a sweep's parent run).

The run's description (MLflow's ``mlflow.note.content`` tag, shown as Markdown on the run's page)
becomes the report's Markdown, with its figures pointing at the run's own artifacts; the rows of
``summary.json`` become per-group metrics (``report/test_acc/ce_adam`` = mean test accuracy of that
group), all under one ``report/`` prefix so the UI's chart view keeps them in one section.
Pure functions: :func:`lossbench.report.build.log_report` does the writing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from lossbench.report.aggregate import ROW_FIGURES

METRIC_PREFIX = "report"
STATISTICS = ROW_FIGURES
"""The ``summary.json`` row statistics put on the run as metrics (those a row has; each row's mean)."""
COUNTS = ("n", "n_onset")
"""Row counts put on the run as they are: runs, and runs that overfit."""
NOTE_LIMIT = 8000
"""MLflow truncates a run tag's value to 8000 characters (``mlflow.utils.validation.MAX_TAG_VAL_LENGTH``)."""

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_SECTION = re.compile(r"^## ", re.MULTILINE)
_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")


def _literal_at(markdown: str) -> str:
    """``@`` outside code spans as ``&#64;``: MLflow's Markdown would turn ``@best`` into a mention link."""
    out, last = [], 0
    for m in _CODE_SPAN.finditer(markdown):
        out += [markdown[last : m.start()].replace("@", "&#64;"), m[0]]
        last = m.end()
    return "".join(out) + markdown[last:].replace("@", "&#64;")


def artifact_src(run_id: str, path: str) -> str:
    """A URL of one run artifact that the MLflow UI's own page can load (relative to the UI's root)."""
    return f"get-artifact?path={quote(path, safe='')}&run_uuid={run_id}"


def description(markdown: str, run_id: str, artifact_dir: str, limit: int = NOTE_LIMIT) -> str:
    """The report's Markdown as a run description: images served from the run's artifacts, ``@`` kept literal,
    within ``limit`` characters.

    When it is too long, whole ``## `` sections are dropped from the end and a closing line names
    the full report (``<artifact_dir>/report.html``), so no table is ever cut in half.
    """
    text = _IMAGE.sub(lambda m: f"![{m[1]}]({artifact_src(run_id, f'{artifact_dir}/{m[2]}')})", markdown)
    text = _literal_at(text).rstrip() + "\n"
    if len(text) <= limit:
        return text
    tail = (
        f"\n*Shortened to fit MLflow's description limit: the whole report is the artifact "
        f"`{artifact_dir}/report.html`.*\n"
    )
    starts = [m.start() for m in _SECTION.finditer(text)]
    for end in reversed(starts):
        if end + len(tail) <= limit:
            return text[:end].rstrip() + "\n" + tail
    return text[: limit - len(tail)].rsplit("\n", 1)[0] + "\n" + tail


def metric_key(text: str) -> str:
    """``text`` made a legal MLflow metric key part (alphanumerics, ``_ - .``; ``" / "`` becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace(" / ", "_")).strip("_") or "group"


def group_metrics(rows: list[Mapping[str, Any]], statistics: tuple[str, ...] = STATISTICS) -> dict[str, float]:
    """``report/<statistic>/<group>`` -> the row's mean, and ``report/n/<group>``, ``report/n_onset/<group>``
    (runs, runs that overfit), for every row of ``summary.json``.

    A statistic is a row field of the form ``{"mean": ..., "std": ..., "n": ...}``; empty means
    (``null``) are left out, as MLflow would draw them as zeros.
    """
    metrics: dict[str, float] = {}
    for row in rows:
        group = metric_key(str(row.get("label", "")))
        for count in COUNTS:
            if isinstance(row.get(count), (int, float)):
                metrics[f"{METRIC_PREFIX}/{count}/{group}"] = float(row[count])
        for name in statistics:
            value = row.get(name)
            if (
                isinstance(value, Mapping)
                and isinstance(value.get("mean"), (int, float))
                and math.isfinite(value["mean"])
            ):
                metrics[f"{METRIC_PREFIX}/{name}/{group}"] = float(value["mean"])
    return metrics
