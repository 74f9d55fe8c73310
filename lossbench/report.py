"""``python -m lossbench.report``: a sweep (or a whole experiment) compared, as a table and plots.

Reads the training runs of one MLflow experiment (``tags.lossbench.kind = 'train'``, optionally one
sweep), groups them by loss × optimizer (× model, data and label-noise rate when those vary), and
writes a report folder::

    reports/<experiment>[-<sweep>]/
        report.md  report.html (figures embedded)  summary.json
        curves.png  gap_acc.png  gap_nll.png  [noise.png]

then puts it on the sweep's parent run, so it shows in the MLflow UI: the folder as artifacts
(under ``report/``), the Markdown as the run's description, each group's means as metrics. Usage::

    python -m lossbench.report --experiment lossbench --sweep 3f2a9c [--tracking-uri URI] [--out DIR]

Rules the numbers follow:

- Only FINISHED runs enter the means. RUNNING, FAILED, KILLED (and SCHEDULED) runs are listed in a
  "Not finished" table with their ``lossbench.failure`` reason; they are never dropped silently.
- When several FINISHED runs share a ``config_hash`` (a forced re-run), the newest (latest start)
  is kept; the others are listed as superseded.
- Cells are mean ± sample standard deviation (ddof=1) over the runs (seeds) of a row; a row with one
  run shows the value alone. Missing values are left out of a cell's mean, and ``summary.json`` gives
  each cell's own ``n``.
- Curve figures (best epoch, gaps, onset) come from :mod:`lossbench.analysis` applied to each run's
  metric histories, so runs logged before the summary metrics existed are covered too.

The I/O (MLflow reads, files, artifact upload) sits in :func:`load_runs`, :func:`build_report` and
:func:`log_report`; everything between is pure and tested through :func:`build_report`.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lossbench import analysis, plots

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
KIND_TAG = "lossbench.kind"
FAILURE_TAG = "lossbench.failure"
SWEEP_TAG = "sweep_id"
NOISE_PARAM = "data.label_noise.rate"
ARTIFACT_PATH = "report"
CURVE_METRICS: tuple[str, ...] = ("val/nll", "val/acc", "train_eval/nll", "train_eval/acc", "time/epoch_s")
"""The metric histories the report reads (the others stay in MLflow)."""
REPORT_FILES: tuple[str, ...] = ("report.md", "report.html", "report_inline.html", "summary.json",  # inline: older reports
                                 "curves.png", "gap_acc.png", "gap_nll.png", "noise.png")
"""Everything the report may write; stale copies are removed before writing."""

# Grouping dimensions: name -> (tag, param fallback). loss and optimizer always; the others when they vary.
_DIMENSIONS: dict[str, tuple[str, str]] = {
    "loss": ("loss", "loss.name"),
    "optimizer": ("optimizer", "optimizer.name"),
    "model": ("model", "model.name"),
    "data": ("data", "data.name"),
}
_ALWAYS = ("loss", "optimizer")
_HEADERS = {"noise": "noise rate"}
# Params that may differ between the runs of one row without making the row a mix of experiments.
_OPERATIONAL_PREFIXES = ("tracking.", "hydra.", "threads", "resume", "data.root", "data.download",
                         "trainer.accelerator", "trainer.devices", "trainer.enable_progress_bar", "analysis.")


class ReportError(Exception):
    """A problem the user can fix (wrong experiment name, a filter that matches nothing)."""


# ----------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunRecord:
    """What the report needs of one MLflow run."""

    run_id: str
    name: str
    status: str
    start_time: int
    """Milliseconds since the epoch."""
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Latest value of each metric (``test/*`` are logged once)."""
    curves: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """Per-epoch histories of :data:`CURVE_METRICS`."""

    def dimension(self, name: str) -> str:
        """The run's loss, optimizer, model or data (from its tag, else its param), ``?`` if unknown."""
        if name == "noise":
            rate = self.noise_rate
            return "?" if rate is None else str(rate)
        tag, param = _DIMENSIONS[name]
        return self.tags.get(tag) or self.params.get(param) or "?"

    @property
    def noise_rate(self) -> float | None:
        """``data.label_noise.rate`` as a number; ``None`` when the run has no such param."""
        raw = self.params.get(NOISE_PARAM)
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None

    @property
    def config_hash(self) -> str | None:
        return self.tags.get("config_hash") or None

    @property
    def seed(self) -> str:
        return self.tags.get("seed") or self.params.get("seed") or "?"


@dataclass(frozen=True)
class Selection:
    """The runs of a report, split by how they count."""

    finished: list[RunRecord]
    """FINISHED runs entering the means (newest per ``config_hash``)."""
    superseded: list[tuple[RunRecord, RunRecord]]
    """(older FINISHED run, the newer run with the same ``config_hash`` that replaces it)."""
    not_finished: list[RunRecord]
    """RUNNING, FAILED, KILLED, SCHEDULED runs: listed, never counted."""


def select_runs(runs: Iterable[RunRecord]) -> Selection:
    """Split runs into finished (deduplicated by ``config_hash``, newest kept), superseded and not finished."""
    finished: list[RunRecord] = []
    not_finished: list[RunRecord] = []
    for run in sorted(runs, key=lambda r: (r.start_time, r.run_id)):
        (finished if run.status == "FINISHED" else not_finished).append(run)
    newest: dict[str, RunRecord] = {}
    for run in finished:  # oldest first, so the last one seen per hash is the newest
        if run.config_hash is not None:
            newest[run.config_hash] = run
    kept = [r for r in finished if r.config_hash is None or newest[r.config_hash] is r]
    superseded = [(r, newest[r.config_hash]) for r in finished
                  if r.config_hash is not None and newest[r.config_hash] is not r]
    return Selection(kept, superseded, not_finished)


# ---------------------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1) of the finite values among a row's runs."""

    mean: float
    std: float
    """``NaN`` with fewer than two values."""
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
        if v.size == 0:
            return cls(math.nan, math.nan, 0)
        return cls(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size))

    def to_json(self) -> dict[str, float | int | None]:
        return {"mean": _json_float(self.mean), "std": _json_float(self.std), "n": self.n}

    def format(self, scale: float = 1.0, digits: int = 4) -> str:
        """``mean ± std`` with ``digits`` decimals after multiplying by ``scale``; ``—`` when empty."""
        if self.n == 0:
            return "—"
        if self.n == 1 or not math.isfinite(self.std):
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def run_values(run: RunRecord, onset_patience: int = 3) -> dict[str, float]:
    """The per-run numbers the report aggregates (``NaN`` where undefined)."""
    s = analysis.summarize(run.curves, onset_patience)
    drop = analysis.memorisation_drop(run.metrics)
    times = np.asarray(run.curves.get("time/epoch_s", ()), dtype=float)
    times = times[np.isfinite(times)]
    return {
        "test_acc": run.metrics.get("test/acc", math.nan),
        "test_nll": run.metrics.get("test/nll", math.nan),
        "test_ece": run.metrics.get("test/ece", math.nan),
        "test_last_acc": run.metrics.get("test_last/acc", math.nan),
        "memorisation_drop": math.nan if drop is None else drop,
        "epochs": s["summary/epochs"],
        "best_epoch_nll": s.get("summary/best_epoch_nll", math.nan),
        "best_val_nll": s.get("summary/best_val_nll", math.nan),
        "best_val_acc": s.get("summary/best_val_acc", math.nan),
        "gap_acc_best": s.get("summary/gap_acc_best", math.nan),
        "gap_nll_best": s.get("summary/gap_nll_best", math.nan),
        "gap_acc_last": s.get("summary/gap_acc_last", math.nan),
        "gap_nll_last": s.get("summary/gap_nll_last", math.nan),
        "has_onset": s["summary/has_onset"],
        "onset_epoch": s.get("summary/onset_epoch", math.nan),
        "time_per_epoch_s": float(times.mean()) if times.size else math.nan,
    }


@dataclass(frozen=True)
class GroupRow:
    """One row of the results table: the runs (seeds) of one loss × optimizer (× …) combination."""

    key: dict[str, str]
    runs: list[RunRecord]
    stats: dict[str, Stat]
    """One :class:`Stat` per :func:`run_values` key."""
    values: dict[str, dict[str, float]]
    """:func:`run_values` of each run, by run id."""

    @property
    def label(self) -> str:
        """E.g. ``ce / adam`` or ``ce / adam / noise 0.4``."""
        return " / ".join(f"noise {v}" if k == "noise" else v for k, v in self.key.items())

    @property
    def n_onset(self) -> int:
        """How many of the row's runs have an overfitting onset."""
        return sum(1 for r in self.runs if self.values[r.run_id]["has_onset"] == 1.0)


def group_dimensions(runs: Sequence[RunRecord]) -> list[str]:
    """loss and optimizer, plus model, data and noise (label-noise rate) when they vary among ``runs``."""
    dims = list(_ALWAYS)
    for name in ("model", "data", "noise"):
        if len({r.dimension(name) for r in runs}) > 1:
            dims.append(name)
    return dims


def _sort_key_nan_last(x: float, descending: bool = True) -> tuple[int, float]:
    return (1, 0.0) if not math.isfinite(x) else (0, -x if descending else x)


def group_runs(runs: Sequence[RunRecord], dims: Sequence[str], onset_patience: int = 3) -> list[GroupRow]:
    """Group runs by ``dims`` and aggregate; rows sorted by mean test accuracy, best first."""
    values = {r.run_id: run_values(r, onset_patience) for r in runs}
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(tuple(run.dimension(d) for d in dims), []).append(run)
    rows = []
    for key, members in groups.items():
        names = values[members[0].run_id].keys()
        stats = {name: Stat.of(values[r.run_id][name] for r in members) for name in names}
        rows.append(GroupRow(dict(zip(dims, key)), members, stats, {r.run_id: values[r.run_id] for r in members}))
    rows.sort(key=lambda row: (_sort_key_nan_last(row.stats["test_acc"].mean), row.label))
    return rows


def varying_params(runs: Sequence[RunRecord]) -> list[str]:
    """Params (other than seeds and operational settings) whose values differ among ``runs``."""
    keys = sorted({k for r in runs for k in r.params})
    out = []
    for key in keys:
        if key.rsplit(".", 1)[-1].endswith("seed") or key.startswith(_OPERATIONAL_PREFIXES):
            continue
        if len({r.params.get(key) for r in runs}) > 1:
            out.append(key)
    return out


# ------------------------------------------------------------------------------------ documents


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[str]]
    numeric_from: int = 1
    """Columns from this index on are right-aligned in HTML."""


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Image:
    src: str
    alt: str


Block = Table | Heading | Paragraph | Bullets | Image


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The report as GitHub-flavoured Markdown."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Image):
            out.append(f"![{block.alt}]({block.src})")
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(map(_md_cell, block.columns)) + " |",
                     "|" + "|".join("---:" if i >= block.numeric_from else "---"
                                    for i in range(len(block.columns))) + "|"]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .35em .7em; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
code { background: #f4f4f4; padding: 0 .25em; border-radius: 3px; }
.status { font-weight: 600; padding: 0 .4em; border-radius: 3px; }
.status.FAILED { background: #fde2e1; color: #a11; }
.status.KILLED { background: #fff0d6; color: #8a5a00; }
.status.RUNNING, .status.SCHEDULED { background: #e3efff; color: #1a4f9c; }
"""
_STATUSES = ("FAILED", "KILLED", "RUNNING", "SCHEDULED", "FINISHED")


def _inline_html(text: str) -> str:
    """Escape, then turn Markdown code spans (single or double backticks) into <code> elements."""
    return re.sub(r"``\s?(.+?)\s?``|`([^`]+)`", lambda m: f"<code>{m.group(1) or m.group(2)}</code>", html.escape(text))


def _code(text: str) -> str:
    """A Markdown code span for ``text``, even when it holds backticks."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render_html(blocks: Sequence[Block], title: str, embed_from: Path | None = None) -> str:
    """The report as one HTML page with inline CSS and nothing fetched from elsewhere.

    Images are referenced by relative path (each links to its full-size file), or, with
    ``embed_from`` (the folder holding them), embedded as ``data:`` URIs: MLflow's artifact preview
    shows HTML from a blob URL, where relative links cannot resolve.
    """
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Image):
            alt = html.escape(block.alt, quote=True)
            if embed_from is None:
                src = html.escape(block.src, quote=True)
                body.append(f'<p><a href="{src}"><img src="{src}" alt="{alt}"></a></p>')
            else:
                data = base64.b64encode((embed_from / block.src).read_bytes()).decode("ascii")
                body.append(f'<p><img src="data:image/png;base64,{data}" alt="{alt}"></p>')
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
            rows = []
            for row in block.rows:
                cells = []
                for i, cell in enumerate(row):
                    text = (f'<span class="status {cell}">{cell}</span>' if cell in _STATUSES
                            else _inline_html(cell))
                    cells.append(f'<td class="num">{text}</td>' if i >= block.numeric_from else f"<td>{text}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# ------------------------------------------------------------------------------- report content


def _fmt_onset(row: GroupRow) -> str:
    stat = row.stats["onset_epoch"]
    mean = "—" if stat.n == 0 else f"{stat.mean:.1f}"
    return f"{mean} ({row.n_onset}/{len(row.runs)})"


def results_table(rows: Sequence[GroupRow], dims: Sequence[str]) -> Table:
    """The main table: one row per group, sorted as given (by mean test accuracy)."""
    columns = [*(_HEADERS.get(d, d) for d in dims), "n", "test acc (%)", "best val NLL", "gap acc @best (pp)",
               "gap NLL @best", "onset epoch (runs with one)", "s / epoch"]
    body = [[*row.key.values(), str(len(row.runs)),
             row.stats["test_acc"].format(100, 2),
             row.stats["best_val_nll"].format(1, 4),
             row.stats["gap_acc_best"].format(100, 2),
             row.stats["gap_nll_best"].format(1, 4),
             _fmt_onset(row),
             row.stats["time_per_epoch_s"].format(1, 2)] for row in rows]
    return Table(columns, body, numeric_from=len(dims))


def noise_table(rows: Sequence[GroupRow], dims: Sequence[str]) -> Table:
    """Loss (× the other dimensions) × label-noise rate: best- and last-epoch test accuracy, memorisation drop."""
    others = [d for d in dims if d != "noise"]
    ordered = sorted(rows, key=lambda r: ([r.key[d] for d in others], _noise_sort(r.key["noise"])))
    columns = [*others, "noise rate", "n", "test acc @best (%)", "test acc @last (%)", "memorisation drop (pp)"]
    body = [[*(row.key[d] for d in others), row.key["noise"], str(len(row.runs)),
             row.stats["test_acc"].format(100, 2), row.stats["test_last_acc"].format(100, 2),
             row.stats["memorisation_drop"].format(100, 2)] for row in ordered]
    return Table(columns, body, numeric_from=len(others))


def _noise_sort(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


def not_finished_table(selection: Selection) -> Table:
    finished_hashes = {r.config_hash: r for r in selection.finished if r.config_hash}
    rows = []
    for run in selection.not_finished:
        epochs = analysis.last_epoch(run.curves)
        reason = run.tags.get(FAILURE_TAG) or ("in progress" if run.status in ("RUNNING", "SCHEDULED") else "—")
        rerun = finished_hashes.get(run.config_hash) if run.config_hash else None
        rows.append([run.name, run.status, run.dimension("loss"), run.dimension("optimizer"), run.seed,
                     "0" if epochs is None else str(epochs + 1), reason,
                     f"re-run finished: {rerun.name}" if rerun else "", run.run_id])
    return Table(["run", "status", "loss", "optimizer", "seed", "epochs", "reason", "note", "run id"], rows,
                 numeric_from=99)


def superseded_table(selection: Selection) -> Table:
    rows = [[old.name, old.config_hash or "", new.name, old.run_id, new.run_id] for old, new in selection.superseded]
    return Table(["superseded run", "config_hash", "kept (newest)", "superseded run id", "kept run id"], rows,
                 numeric_from=99)


def runs_table(rows: Sequence[GroupRow]) -> Table:
    body = []
    for row in rows:
        for run in row.runs:
            v = row.values[run.run_id]
            onset = v["onset_epoch"]
            body.append([run.name, row.label, run.seed, Stat.of([v["test_acc"]]).format(100, 2),
                         Stat.of([v["best_val_nll"]]).format(1, 4), Stat.of([v["best_epoch_nll"]]).format(1, 0),
                         "—" if not math.isfinite(onset) else f"{onset:.0f}", f"{v['epochs']:.0f}", run.run_id])
    return Table(["run", "group", "seed", "test acc (%)", "best val NLL", "best epoch", "onset", "epochs", "run id"],
                 body, numeric_from=3)


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


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else an SQLite store ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def train_filter(sweep_id: str | None = None) -> str:
    """The MLflow search filter for the training runs of an experiment, or of one sweep."""
    text = f"tags.`{KIND_TAG}` = 'train'"
    if sweep_id is not None:
        text += f" and tags.{SWEEP_TAG} = {_quote(sweep_id)}"
    return text


def _quote(value: str) -> str:
    if "'" in value and '"' in value:
        raise ReportError(f"cannot search for {value!r}: it holds both kinds of quote")
    return f'"{value}"' if "'" in value else f"'{value}'"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "report"


def default_out_dir(experiment: str, sweep_id: str | None = None) -> Path:
    """``reports/<experiment>[-<sweep>]`` (characters unsafe in file names replaced by ``_``)."""
    return Path("reports") / _safe_name(experiment if sweep_id is None else f"{experiment}-{sweep_id}")


def load_runs(client: Any, experiment_id: str, filter_string: str,
              curve_metrics: Sequence[str] = CURVE_METRICS, page_size: int = 1000) -> list[RunRecord]:
    """Every active run matching ``filter_string`` (paging through all results), oldest first, with its curves."""
    records: list[RunRecord] = []
    token: str | None = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=page_size,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        for run in page:
            curves = {}
            for key in curve_metrics:
                if key in run.data.metrics:
                    history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp)
                    curves[key] = analysis.dense_curve((m.step, m.value) for m in history)
            records.append(RunRecord(
                run_id=run.info.run_id, name=run.info.run_name or run.info.run_id, status=run.info.status,
                start_time=int(run.info.start_time or 0), tags=dict(run.data.tags), params=dict(run.data.params),
                metrics=dict(run.data.metrics), curves=curves))
        token = page.token
        if not token:
            return records


def _check_store_exists(uri: str) -> None:
    """Refuse a ``sqlite:///`` URI whose file is missing, rather than let MLflow create an empty store."""
    if not uri.startswith("sqlite:///"):
        return
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if path and path != ":memory:" and not Path(path).exists():
        raise ReportError(f"no MLflow store at {Path(path).resolve()} (from {uri}): the file does not exist. "
                          "Run from the folder where training ran, or pass --tracking-uri / set MLFLOW_TRACKING_URI.")


def _find_experiment(client: Any, name: str, uri: str) -> Any:
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        listing = ", ".join(repr(n) for n in names) if names else "none"
        state = "is deleted" if experiment is not None else "not found"
        raise ReportError(f"experiment {name!r} {state} in tracking store {uri}. Available experiments: {listing}")
    return experiment


def _no_runs_error(client: Any, experiment: Any, uri: str, filter_string: str, sweep_id: str | None) -> ReportError:
    message = f"no runs in experiment {experiment.name!r} ({uri}) match the filter: {filter_string}"
    if sweep_id is not None:
        runs = client.search_runs([experiment.experiment_id], filter_string=train_filter(), max_results=1000)
        sweeps = sorted({r.data.tags[SWEEP_TAG] for r in runs if SWEEP_TAG in r.data.tags})
        message += (f". Sweep ids among its training runs: {', '.join(sweeps)}" if sweeps
                    else ". None of its training runs has a sweep_id tag")
    return ReportError(message)


def build_blocks(title: str, intro: list[str], selection: Selection, rows: list[GroupRow], dims: list[str],
                 noise_rows: list[GroupRow] | None, figures: Mapping[str, str], onset_patience: int) -> list[Block]:
    """The report's content, shared by the Markdown and HTML renderings."""
    blocks: list[Block] = [Heading(title, 1), *(Paragraph(p) for p in intro)]
    notes = []
    if selection.superseded:
        hashes = sorted({old.config_hash or "" for old, _ in selection.superseded})
        notes.append(f"{len(selection.superseded)} FINISHED run(s) were superseded by a newer run with the same "
                     f"`config_hash` ({', '.join(hashes)}); only the newest counts (see \"Superseded runs\").")
    if selection.not_finished:
        notes.append(f"{len(selection.not_finished)} run(s) have not finished (RUNNING, FAILED or KILLED): listed "
                     "under \"Not finished\" and left out of every mean.")
    for row in rows:
        mixed = varying_params(row.runs)
        if mixed:
            notes.append(f"Row {row.label} mixes runs whose params differ in: {', '.join(mixed)}.")
    if notes:
        blocks += [Heading("Notes"), Bullets(notes)]

    blocks += [Heading("Results"),
               Paragraph("One row per " + " × ".join(_HEADERS.get(d, d) for d in dims) + ", sorted by mean test "
                         "accuracy. Cells are mean ± "
                         "sample std (ddof=1) over the row's runs (seeds). Test metrics use the best checkpoint "
                         "(lowest val/nll). Gaps are taken at that best epoch and are positive when overfitting: "
                         "acc gap = train_eval/acc − val/acc (percentage points), NLL gap = val/nll − "
                         f"train_eval/nll. Onset: the last epoch before val/nll rose {onset_patience} epochs in a "
                         "row while train_eval/nll fell; mean over the runs that have one (how many of n)."),
               results_table(rows, dims)]
    if "curves" in figures:
        blocks += [Heading("Learning curves"),
                   Paragraph("val/nll (solid) and train_eval/nll (dashed) per epoch; one line per run."),
                   Image(figures["curves"], "learning curves per group")]
    if "gap_acc" in figures:
        blocks += [Heading("Generalisation gap"),
                   Paragraph("At the best epoch by val/nll; bars are means, error bars the sample std, dots "
                             "single runs."),
                   Image(figures["gap_acc"], "accuracy gap per loss"), Image(figures["gap_nll"], "NLL gap per loss")]
    if noise_rows is not None:
        blocks += [Heading("Noisy labels"),
                   Paragraph("Test accuracy of the best checkpoint (by val/nll) and of the final weights per "
                             "label-noise rate (`data.label_noise.rate`). Memorisation drop = best − last, "
                             "averaged over runs: how much accuracy training on past the best epoch cost."),
                   noise_table(noise_rows, dims)]
        if "noise" in figures:
            blocks.append(Image(figures["noise"], "test accuracy against label-noise rate"))
    blocks.append(Heading("Not finished"))
    if selection.not_finished:
        blocks += [Paragraph("Shown for completeness; none of these enters the results."),
                   not_finished_table(selection)]
    else:
        blocks.append(Paragraph("None: every matching run finished."))
    if selection.superseded:
        blocks += [Heading("Superseded runs"), superseded_table(selection)]
    blocks += [Heading("Runs used"), runs_table(rows)]
    return blocks


def _row_json(row: GroupRow) -> dict[str, Any]:
    return {**row.key, "label": row.label, "n": len(row.runs), "n_onset": row.n_onset,
            "run_ids": [r.run_id for r in row.runs],
            **{name: stat.to_json() for name, stat in row.stats.items() if name != "has_onset"}}


def _noise_json(row: GroupRow) -> dict[str, Any]:
    return {**row.key, "noise_rate": _json_float(_noise_sort(row.key["noise"])), "n": len(row.runs),
            **{name: row.stats[name].to_json() for name in ("test_acc", "test_last_acc", "memorisation_drop")}}


def _write_figures(out: Path, rows: list[GroupRow], dims: list[str],
                   noise_rows: list[GroupRow] | None) -> dict[str, str]:
    """Draw the report's figures into ``out``; returns figure name -> file name (relative to ``out``)."""
    figures: dict[str, str] = {}
    if not rows:
        return figures
    plots.curve_grid({row.label: [r.curves for r in row.runs] for row in rows}, out / "curves.png",
                     ncols=4 if len(rows) > 9 else 3, title="val/nll and train_eval/nll per epoch")
    figures["curves"] = "curves.png"
    outer_dims = [d for d in dims if d != "optimizer"]
    for metric, scale, label in (("gap_acc", 100.0, "train_eval/acc − val/acc (pp)"),
                                 ("gap_nll", 1.0, "val/nll − train_eval/nll")):
        values: dict[str, dict[str, list[float]]] = {}
        for row in sorted(rows, key=lambda r: (r.key["loss"], r.label)):
            outer = " / ".join(f"noise {row.key[d]}" if d == "noise" else row.key[d] for d in outer_dims)
            values.setdefault(outer, {})[row.key["optimizer"]] = [row.values[r.run_id][f"{metric}_best"] * scale
                                                                  for r in row.runs]
        plots.grouped_bars(values, out / f"{metric}.png", ylabel=label,
                           title="Generalisation gap at the best epoch "
                                 f"({'accuracy' if metric == 'gap_acc' else 'NLL'})")
        figures[metric] = f"{metric}.png"
    if noise_rows:
        series_dims = [d for d in dims if d != "noise"]
        best: dict[str, dict[float, list[float]]] = {}
        last: dict[str, dict[float, list[float]]] = {}
        for row in noise_rows:
            rate = _noise_sort(row.key["noise"])
            if not math.isfinite(rate):
                continue
            name = " / ".join(row.key[d] for d in series_dims)
            best.setdefault(name, {})[rate] = [row.values[r.run_id]["test_acc"] for r in row.runs]
            last.setdefault(name, {})[rate] = [row.values[r.run_id]["test_last_acc"] for r in row.runs]
        if best:
            plots.noise_chart(best, last, out / "noise.png", title="Test accuracy against label noise")
            figures["noise"] = "noise.png"
    return figures


def build_report(experiment: str, sweep_id: str | None = None, tracking_uri: str | None = None,
                 out_dir: str | Path | None = None, onset_patience: int = 3, log_to_mlflow: bool = True,
                 client: Any = None) -> ReportResult:
    """Read the runs, write the report folder, and (by default) log it to the sweep's parent run.

    Raises :class:`ReportError` when the experiment does not exist or no run matches.
    """
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    if client is None:
        _check_store_exists(uri)
        client = MlflowClient(tracking_uri=uri)
    exp = _find_experiment(client, experiment, uri)
    filter_string = train_filter(sweep_id)
    runs = load_runs(client, exp.experiment_id, filter_string)
    if not runs:
        raise _no_runs_error(client, exp, uri, filter_string, sweep_id)

    selection = select_runs(runs)
    dims = group_dimensions(selection.finished)
    rows = group_runs(selection.finished, dims, onset_patience)
    noisy = "noise" in dims
    out = Path(out_dir) if out_dir is not None else default_out_dir(experiment, sweep_id)
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    figures = _write_figures(out, rows, dims, rows if noisy else None)

    title = f"lossbench report: {experiment}" + (f", sweep {sweep_id}" if sweep_id else "")
    counts = (f"{len(runs)} training run(s) match {_code(filter_string)}: {len(selection.finished)} finished and "
              f"counted, {len(selection.superseded)} superseded, {len(selection.not_finished)} not finished.")
    intro = [f"Experiment `{experiment}` (id {exp.experiment_id}) in `{uri}`; generated "
             f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}.", counts]
    blocks = build_blocks(title, intro, selection, rows, dims, rows if noisy else None, figures, onset_patience)
    (out / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    # Figures embedded: MLflow's artifact viewer shows HTML from a blob URL, where relative links break.
    (out / "report.html").write_text(render_html(blocks, title, embed_from=out), encoding="utf-8")

    summary: dict[str, Any] = {
        "experiment": experiment, "experiment_id": exp.experiment_id, "sweep_id": sweep_id, "tracking_uri": uri,
        "filter": filter_string, "onset_patience": onset_patience, "group_by": dims,
        "std": "sample standard deviation (ddof=1) over runs; null with fewer than 2",
        "counts": {"matched": len(runs), "finished": len(selection.finished),
                   "superseded": len(selection.superseded), "not_finished": len(selection.not_finished)},
        "rows": [_row_json(row) for row in rows],
        "noisy_labels": [_noise_json(row) for row in rows] if noisy else None,
        "not_finished": [{"run_id": r.run_id, "name": r.name, "status": r.status,
                          "reason": r.tags.get(FAILURE_TAG)} for r in selection.not_finished],
        "superseded": [{"run_id": old.run_id, "name": old.name, "config_hash": old.config_hash,
                        "kept_run_id": new.run_id} for old, new in selection.superseded],
        "figures": sorted(figures.values()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")

    run_id = log_report(client, exp.experiment_id, out, experiment, sweep_id) if log_to_mlflow else None
    return ReportResult(out, out / "report.md", out / "report.html", out / "summary.json",
                        [out / f for f in sorted(figures.values())], summary, uri, exp.experiment_id, run_id)


def report_run(client: Any, experiment_id: str, experiment: str, sweep_id: str | None) -> tuple[str, bool]:
    """The run that holds the report: ``(run_id, created)``.

    With a sweep: its parent run (``lossbench.kind = 'sweep'`` and ``sweep_id``), else a new one named
    ``report-<sweep>`` with those tags. Without: the run named ``report-<experiment>`` tagged
    ``lossbench.kind = 'report'``, created on first use (re-running the report updates it).
    """
    if sweep_id is not None:
        filter_string = f"tags.`{KIND_TAG}` = 'sweep' and tags.{SWEEP_TAG} = {_quote(sweep_id)}"
        name, tags = f"report-{sweep_id}", {KIND_TAG: "sweep", SWEEP_TAG: sweep_id}
    else:
        name = f"report-{experiment}"
        filter_string = f"tags.`{KIND_TAG}` = 'report' and attributes.run_name = {_quote(name)}"
        tags = {KIND_TAG: "report"}
    found = client.search_runs([experiment_id], filter_string=filter_string, max_results=1,
                               order_by=["attributes.start_time DESC"])
    if found:
        return found[0].info.run_id, False
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id, True


def log_report(client: Any, experiment_id: str, out: Path, experiment: str, sweep_id: str | None) -> str:
    """Put the report on :func:`report_run` (returns its id): the folder as artifacts under ``report/``,
    its Markdown as the run's description, and each group's means as metrics (``report/test_acc/ce_adam``).

    Re-running the report overwrites all three.
    """
    from mlflow.entities import Metric, RunTag

    from lossbench import report_store

    run_id, created = report_run(client, experiment_id, experiment, sweep_id)
    client.log_artifacts(run_id, str(out), artifact_path=ARTIFACT_PATH)
    note = report_store.description((out / "report.md").read_text(encoding="utf-8"), run_id, ARTIFACT_PATH)
    rows = json.loads((out / "summary.json").read_text(encoding="utf-8"))["rows"]
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in report_store.group_metrics(rows).items()]
    client.log_batch(run_id, metrics=metrics[:1000], tags=[RunTag(report_store.NOTE_TAG, note)])
    for i in range(1000, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    if created:
        client.set_terminated(run_id, "FINISHED")
    return run_id


# ------------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lossbench.report", description=(
        "Compare the training runs of an MLflow experiment (or one sweep): a table of test accuracy, "
        "best validation NLL, generalisation gap and overfitting onset per loss × optimizer, with plots."))
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument("--sweep", default=None, help="only runs tagged sweep_id=SWEEP")
    p.add_argument("--tracking-uri", default=None,
                   help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})")
    p.add_argument("--out", default=None, help="report folder (default: reports/<experiment>[-<sweep>])")
    p.add_argument("--onset-patience", type=int, default=3,
                   help="epochs val NLL must rise (train NLL falling) to call overfitting (default: 3)")
    p.add_argument("--no-log", action="store_true", help="write the folder only; do not log it to MLflow")
    return p


def main(argv: Sequence[str] | None = None, echo: Callable[[str], None] = print) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 for a :class:`ReportError`)."""
    args = _parser().parse_args(argv)
    try:
        result = build_report(args.experiment, sweep_id=args.sweep, tracking_uri=args.tracking_uri,
                              out_dir=args.out, onset_patience=args.onset_patience, log_to_mlflow=not args.no_log)
    except ReportError as error:
        print(f"lossbench.report: {error}", file=sys.stderr)
        return 2
    from lossbench import store_links

    counts = result.summary["counts"]
    echo(f"Report: {result.html} (also report.md, summary.json, {len(result.figures)} figures)")
    echo(f"Runs: {counts['finished']} finished and counted, {counts['superseded']} superseded, "
         f"{counts['not_finished']} not finished.")
    if result.report_run_id:
        echo(f"Logged on MLflow run {result.report_run_id} (experiment id {result.experiment_id}): its description, "
             f"per-group metrics, and the artifacts '{ARTIFACT_PATH}/'.")
        url = store_links.run_url(result.tracking_uri, result.experiment_id, result.report_run_id)
    elif args.sweep is not None:
        url = store_links.sweep_url(result.tracking_uri, result.experiment_id, args.sweep)
    else:
        url = store_links.experiment_url(result.tracking_uri, result.experiment_id)
    for line in store_links.look_lines(result.tracking_uri, url):
        echo(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
