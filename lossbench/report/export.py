"""The report's numbers out of lossbench, in the forms papers and notebooks use: ``--format latex,csv,parquet``.

Written into the report's folder from the same objects the report is written from (:class:`Findings`: its rows,
their intervals, the comparisons), never from summary.json:

- ``table.tex``: a booktabs table, one row per group the comparison uses (each at its tuned setting when the
  runs tuned one), test accuracy at the selected and at the last epoch as mean with its 95 % interval over seeds
  in %, the best mean of each column in bold, and each group's comparison with the reference loss as a mark
  (``$^\\uparrow$`` better, ``$^\\downarrow$`` worse, ``$^\\approx$`` equivalent within the minimum effect set).
  ``\\input{table.tex}`` it in a paper whose preamble has
  ``\\usepackage{booktabs}``; ``table_standalone.tex`` is a whole document around it (``pdflatex`` compiles it).
- ``runs.csv`` / ``runs.parquet``: one row per run counted (its group, tags, provenance, config params, the
  report's per-run figures and the test metrics), typed columns;
- ``curves.csv`` / ``curves.parquet``: one row per run × epoch × metric (``run_id, loss, optimizer, seed, epoch,
  metric, value``), the epoch numbered as the report shows it.

Load them with pandas: ``runs = pd.read_parquet(".../runs.parquet")``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lossbench import stats
from lossbench.names import (
    CODE_VERSION_TAG,
    COMMAND_TAG,
    COMMIT_TAG,
    CONFIG_HASH_TAG,
    CPU_TAG,
    CUDA_TAG,
    DIFF_TAG,
    DIMENSION_TAGS,
    DRIVER_TAG,
    GPU_COUNT_TAG,
    GPU_TAG,
    LIBRARY_TAGS,
    LOSSBENCH_VERSION_TAG,
    MODIFIED_TAG,
    ONSET_TAG,
    SEED_TAG,
    SWEEP_TAG,
    TEST_LAST_PREFIX,
    TEST_PREFIX,
    THREADS_TAG,
    VERDICT_TAG,
    epoch_number,
)
from lossbench.report import FORMATS
from lossbench.report.aggregate import HEADERS, Findings, GroupRow
from lossbench.report.runs import ReportError, RunRecord

FILES = {
    "latex": ("table.tex", "table_standalone.tex"),
    "csv": ("runs.csv", "curves.csv"),
    "parquet": ("runs.parquet", "curves.parquet"),
}
"""What each format writes into the report's folder (stale copies are removed whatever is asked for)."""
TABLE_FIGURES = ("test_acc", "test_last_acc")
"""The :func:`~lossbench.report.aggregate.run_values` figures the LaTeX table gives, in %, in this order."""
TABLE_HEADERS = {"test_acc": r"test acc.\ @selected (\%)", "test_last_acc": r"test acc.\ @last (\%)"}
MARKS = {stats.BETTER: r"$^{\uparrow}$", stats.WORSE: r"$^{\downarrow}$", stats.EQUIVALENT: r"$^{\approx}$"}
"""A comparison's outcome as its family decided it (``Comparison.outcome``) -> its mark beside the group's test
accuracy."""

RUN_TAGS = (
    *DIMENSION_TAGS,
    CONFIG_HASH_TAG,
    SWEEP_TAG,
    VERDICT_TAG,
    ONSET_TAG,
    THREADS_TAG,
    LOSSBENCH_VERSION_TAG,
    COMMIT_TAG,
    MODIFIED_TAG,
    DIFF_TAG,
    CODE_VERSION_TAG,
    COMMAND_TAG,
    *LIBRARY_TAGS.values(),
    CPU_TAG,
    GPU_TAG,
    GPU_COUNT_TAG,
    DRIVER_TAG,
    CUDA_TAG,
)
"""The tags runs.csv gives, one column each, named as the tag."""
INT_TAGS = (SEED_TAG, THREADS_TAG, GPU_COUNT_TAG)
BOOL_TAGS = (MODIFIED_TAG,)
FLAG_FIGURES = ("has_onset", "drift")
"""Per-run figures that are yes/no (1.0/0.0 in :func:`~lossbench.report.aggregate.run_values`)."""
CONFIG_PREFIX = "config."
"""Column prefix of a run's config params (``config.optimizer.lr``)."""


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"latex,csv"`` (or a list of them) -> ``("latex", "csv")``; a :class:`ReportError` for an unknown one."""
    if not text:
        return ()
    words = [w.strip() for part in ([text] if isinstance(text, str) else text) for w in part.split(",") if w.strip()]
    unknown = [w for w in words if w not in FORMATS]
    if unknown:
        raise ReportError(f"--format {','.join(unknown)}: unknown; choose from {', '.join(FORMATS)} (comma-separated)")
    return tuple(dict.fromkeys(words))


def write(out: Path, findings: Findings, formats: Iterable[str], name: str) -> list[Path]:
    """Write the files of ``formats`` into ``out`` (removing any other format's stale copies); the paths written.
    ``name`` names the table (its label, its caption)."""
    for files in FILES.values():
        for file in files:
            (out / file).unlink(missing_ok=True)
    formats = parse_formats(list(formats))
    written: list[Path] = []
    if "latex" in formats:
        table, standalone = (out / file for file in FILES["latex"])
        table.write_text(latex_table(findings, name), encoding="utf-8")
        standalone.write_text(latex_document(table.name), encoding="utf-8")
        written += [table, standalone]
    tidy = [f for f in ("csv", "parquet") if f in formats]
    if tidy:
        frames = (runs_frame(findings), curves_frame(findings))
        for kind in tidy:
            for frame, file in zip(frames, FILES[kind]):
                path = out / file
                frame.to_csv(path, index=False) if kind == "csv" else frame.to_parquet(path, index=False)
                written.append(path)
    return written


# ------------------------------------------------------------------------------------------ LaTeX

_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex(text: object) -> str:
    """``text`` as LaTeX prints it literally (``nce_rce`` -> ``nce\\_rce``)."""
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _TEX_SPECIAL[m.group(0)], str(text))


def _best(rows: Sequence[GroupRow], name: str) -> str | None:
    """The highest mean of one figure among ``rows``, as the table writes it (in %, 2 decimals)."""
    means = [row.interval(name).mean for row in rows if row.interval(name).n]
    return f"{max(means) * 100:.2f}" if means else None


def _cell(row: GroupRow, name: str, best: str | None, mark: str = "") -> str:
    """``\\textbf{82.67}$^{\\uparrow}$ {\\scriptsize[82.02, 83.32]}``: the mean in %, bold when best, its mark, its interval."""
    iv = row.interval(name)
    if iv.n == 0:
        return "--"
    mean = f"{iv.mean * 100:.2f}"
    if mean == best:
        mean = rf"\textbf{{{mean}}}"
    interval = rf" {{\scriptsize[{iv.low * 100:.2f}, {iv.high * 100:.2f}]}}" if iv.has_interval else ""
    return mean + mark + interval


def latex_table(findings: Findings, name: str) -> str:
    """The booktabs table of :data:`TABLE_FIGURES` for the groups the comparison uses (:attr:`Findings.shown`)."""
    rows, dims, tuned = findings.shown, findings.dims, findings.tuning is not None
    marks = {id(c.row): MARKS.get(c.outcome, "") for c in findings.decided}
    best = {figure: _best(rows, figure) for figure in TABLE_FIGURES}
    header = [*(tex(HEADERS.get(d, d)) for d in dims), *(["setting"] if tuned else []), "$n$"]
    lines = [
        "% " + " ".join(f"lossbench report {name}: python -m lossbench.report --format latex".split()),
        r"% Needs \usepackage{booktabs}; table_standalone.tex compiles it as a document.",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _caption(findings) + "}",
        r"\label{tab:lossbench-" + re.sub(r"[^A-Za-z0-9:.-]+", "-", name).strip("-") + "}",
        r"\begin{tabular}{" + "l" * (len(header) - 1) + "r" * (1 + len(TABLE_FIGURES)) + "}",
        r"\toprule",
        " & ".join([*header, *(TABLE_HEADERS[f] for f in TABLE_FIGURES)]) + r" \\",
        r"\midrule",
    ]
    for row in rows:
        cells = [
            *(tex(v) for v in row.key.values()),
            *([tex(row.setting or "--")] if tuned else []),
            str(len(row.runs)),
        ]
        cells.append(_cell(row, TABLE_FIGURES[0], best[TABLE_FIGURES[0]], marks.get(id(row), "")))
        cells += [_cell(row, figure, best[figure]) for figure in TABLE_FIGURES[1:]]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _caption(findings: Findings) -> str:
    what = " $\\times$ ".join(tex(HEADERS.get(d, d)) for d in findings.dims)
    text = (
        f"Test accuracy (\\%) per {what}"
        + (", each at the setting chosen on validation accuracy" if findings.tuning else "")
        + ", at the selected epoch (best validation accuracy) and at the last epoch: mean "
        r"{\scriptsize[95\,\% interval]} over $n$ seeds. Bold: the best mean of its column."
    )
    if findings.comparisons:
        text += (
            rf" $\uparrow$/$\downarrow$: better/worse than \texttt{{{tex(findings.reference)}}} in the report's "
            "paired comparison on the seeds both have, decided with its other comparisons (Holm; two-look design); "
            "no mark: not distinguishable."
        )
        if findings.min_effect is not None:
            text += rf" $\approx$: within $\pm{findings.min_effect * 100:.2g}$\,pp of it (95\,\% interval)."
    return text


def latex_document(table_file: str) -> str:
    """A whole document around the table (what ``pdflatex table_standalone.tex`` compiles)."""
    return "\n".join(
        [
            r"\documentclass{article}",
            r"\usepackage[T1]{fontenc}",
            r"\usepackage{booktabs}",
            r"\begin{document}",
            rf"\input{{{table_file}}}",
            r"\end{document}",
            "",
        ]
    )


# ------------------------------------------------------------------------------------ tidy files


def runs_frame(findings: Findings):
    """One row per run counted: its run id, name, status, start, group, setting and whether its group is
    compared (``compared``: a row of the table); the tags of :data:`RUN_TAGS`; its config params
    (``config.<key>``); the report's per-run figures (``test_acc``, ``selected_epoch``, ...); its test metrics."""
    import pandas as pd  # pandas: only when a tidy file is asked for

    compared = {id(row) for row in findings.shown}
    records = []
    for row in findings.rows:
        for run in row.runs:
            record: dict[str, Any] = {
                "run_id": run.run_id,
                "run_name": run.name,
                "status": run.status,
                "start_time": pd.Timestamp(run.start_time, unit="ms", tz="UTC"),
                "group": row.group,
                "setting": row.setting,
                "compared": id(row) in compared,
                **{tag: run.tags.get(tag) for tag in RUN_TAGS},
                **{CONFIG_PREFIX + key: value for key, value in run.params.items()},
                **row.values[run.run_id],
                **{k: v for k, v in run.metrics.items() if k.startswith((TEST_PREFIX, TEST_LAST_PREFIX))},
            }
            records.append(record)
    return typed(pd.DataFrame.from_records(records), findings)


def typed(frame, findings: Findings):
    """Each column of :func:`runs_frame` in its type: integers (nullable) for seeds, threads and epochs, booleans
    for flags, floats for figures and metrics, strings for the rest; config params by what their values hold."""
    import pandas as pd  # pandas: only when a tidy file is asked for

    figures = {name for row in findings.rows for values in row.values.values() for name in values}
    for column in frame.columns:
        values = frame[column]
        if column in INT_TAGS or (column in figures and column.endswith(("epoch", "epochs"))):
            frame[column] = pd.to_numeric(values.replace({"none": None}), errors="coerce").round().astype("Int64")
        elif column in BOOL_TAGS:
            frame[column] = values.map({"true": True, "false": False}).astype("boolean")
        elif column in FLAG_FIGURES:
            frame[column] = values.map({1.0: True, 0.0: False}).astype("boolean")
        elif column in figures or column.startswith((TEST_PREFIX, TEST_LAST_PREFIX)):
            frame[column] = values.astype("float64")
        elif column.startswith(CONFIG_PREFIX):
            frame[column] = _param_column(values)
        elif column not in ("start_time", "compared"):
            frame[column] = values.astype("string")
    return frame


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.I)


def _param_column(values):
    """A config param's column (MLflow keeps params as text): Int64, float64 or boolean when every value it has
    reads so (``None``: missing), else strings."""
    import pandas as pd  # pandas: only when a tidy file is asked for

    present = values[values.notna() & (values != "None")].astype(str)
    missing = values.isna() | (values == "None")
    if len(present) and present.str.fullmatch(_INT.pattern).all():
        return pd.to_numeric(values.mask(missing)).astype("Int64")
    if len(present) and present.str.fullmatch(_FLOAT.pattern, flags=re.I).all():
        return pd.to_numeric(values.mask(missing)).astype("float64")
    if len(present) and present.isin(["True", "False"]).all():
        return values.mask(missing).map({"True": True, "False": False}).astype("boolean")
    return values.mask(missing).astype("string")


def curves_frame(findings: Findings):
    """One row per run counted × epoch × metric of its curves (``RunRecord.curves``; epochs never logged left
    out): ``run_id``, ``loss``, ``optimizer``, ``seed``, ``epoch`` (:func:`lossbench.names.epoch_number`), ``metric``, ``value``."""
    import pandas as pd  # pandas: only when a tidy file is asked for

    rows = [
        (run.run_id, run.dimension("loss"), run.dimension("optimizer"), _seed(run), epoch_number(i), metric, value)
        for row in findings.rows
        for run in row.runs
        for metric, values in run.curves.items()
        for i, value in enumerate(values)
        if value is not None and math.isfinite(value)
    ]
    frame = pd.DataFrame(rows, columns=["run_id", "loss", "optimizer", "seed", "epoch", "metric", "value"])
    return frame.astype(
        {
            "run_id": "string",
            "loss": "string",
            "optimizer": "string",
            "seed": "Int64",
            "epoch": "int64",
            "metric": "string",
            "value": "float64",
        }
    )


def _seed(run: RunRecord) -> int | None:
    return int(run.seed) if _INT.fullmatch(str(run.seed)) else None
