"""``python -m lossbench.report``: compare the runs of an experiment (or one sweep)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lossbench import analysis, store_links
from lossbench.errors import LossbenchError, OneLineParser, access_refused, error_line
from lossbench.paths import folder_problem
from lossbench.report import FORMATS
from lossbench.store_links import DEFAULT_TRACKING_URI, default_tracking_uri

PROGRAM = "lossbench.report"

_RULE = analysis.Rule()


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m lossbench.report",
        description=(
            "Compare the training runs of an MLflow experiment (or one sweep): verdicts on overfitting, test accuracy "
            "at the selected and the last epoch with 95 % intervals, paired comparisons with a reference loss, "
            "tuned settings, gaps, and figures."
        ),
    )
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument("--sweep", default=None, help="only runs tagged sweep_id=SWEEP")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})",
    )
    p.add_argument("--out", default=None, help="report folder (default: reports/<experiment>[-<sweep>])")
    p.add_argument("--reference", default="ce", help="loss the others are compared with, paired by seed (default: ce)")
    p.add_argument(
        "--min-effect",
        type=float,
        default=None,
        metavar="PP",
        help="the smallest difference in test accuracy worth deciding, in percentage points: undecided comparisons "
        "are planned for it (default: for the difference observed)",
    )
    p.add_argument("--smooth", type=int, default=_RULE.smooth, help=f"epochs of smoothing (default: {_RULE.smooth})")
    p.add_argument(
        "--patience",
        type=int,
        default=_RULE.patience,
        help=f"the best epoch must be this many epochs before the end (default: {_RULE.patience})",
    )
    p.add_argument(
        "--margin-nll",
        type=float,
        default=_RULE.margin_nll,
        help=f"relative rise of val NLL that counts (default: {_RULE.margin_nll})",
    )
    p.add_argument(
        "--margin-acc",
        type=float,
        default=_RULE.margin_acc,
        help=f"fall of val accuracy that counts, as a fraction (default: {_RULE.margin_acc})",
    )
    p.add_argument("--no-log", action="store_true", help="write the folder only; do not log it to MLflow")
    p.add_argument(
        "--format",
        default=None,
        help=f"also write, into the folder, any of {','.join(FORMATS)} (comma-separated): a booktabs table "
        "(table.tex), tidy per-run and per-epoch files (runs.*, curves.*)",
    )
    return p


def main(argv: Sequence[str] | None = None, echo: Callable[[str], None] = print) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 for bad input)."""
    args = _parser().parse_args(argv)
    from lossbench.report import export  # scipy: after the command line is read (a usage mistake answers in 0.3 s)
    from lossbench.report.build import ARTIFACT_PATH, build_report, default_out_dir  # matplotlib, MLflow: likewise
    from lossbench.report.runs import ReportError  # MLflow: likewise
    from lossbench.store import resolve_uri  # MLflow: likewise

    try:
        rule = analysis.Rule(args.smooth, args.patience, args.margin_nll, args.margin_acc)
        if args.min_effect is not None and not args.min_effect > 0:
            raise ValueError(f"--min-effect={args.min_effect} must be a number of pp > 0, e.g. 0.5")
        out = Path(args.out) if args.out is not None else default_out_dir(args.experiment, args.sweep)
        if problem := folder_problem(out.resolve()):
            raise ValueError(f"--out={out}: {problem}; choose another folder")
    except ValueError as error:
        print(error_line(str(error), PROGRAM), file=sys.stderr)
        return 2
    uri = args.tracking_uri or default_tracking_uri()
    try:
        resolve_uri(uri)  # refuses a tracking server's URI that carries a login
        result = build_report(
            args.experiment,
            sweep_id=args.sweep,
            tracking_uri=args.tracking_uri,
            out_dir=args.out,
            rule=rule,
            reference=args.reference,
            log_to_mlflow=not args.no_log,
            min_effect=None if args.min_effect is None else args.min_effect / 100,
            formats=export.parse_formats(args.format),  # an unknown format is bad input (exit 2)
        )
    except (ReportError, LossbenchError) as error:
        print(error_line(str(error), PROGRAM), file=sys.stderr)
        return 2
    except Exception as error:  # a tracking server that refuses the login (401) or the permission (403)
        refused = access_refused(error, store_links.ui_base(uri), args.experiment)
        if refused is None:
            raise
        hint = "" if args.no_log else "; --no-log writes the report folder without logging it to MLflow"
        print(error_line(refused + hint, PROGRAM), file=sys.stderr)
        return 2
    counts = result.summary["counts"]
    for line in result.answer:
        echo(line)
    echo(f"report: {result.html}   (also report.md, summary.json, {len(result.figures)} figures)")
    if result.exports:
        echo("exported: " + ", ".join(str(path) for path in result.exports))
    echo(
        f"runs:   {counts['finished']} finished and counted, {counts['superseded']} superseded, "
        f"{counts['not_finished']} not finished"
    )
    if result.report_run_id:
        echo(
            f"logged: MLflow run {result.report_run_id} (experiment id {result.experiment_id}): its description, "
            f"and the artifacts '{ARTIFACT_PATH}/'"
        )
        url = store_links.run_url(result.tracking_uri, result.experiment_id, result.report_run_id)
    elif args.sweep is not None:
        url = store_links.sweep_url(result.tracking_uri, result.experiment_id, args.sweep)
    else:
        url = store_links.experiment_url(result.tracking_uri, result.experiment_id)
    for line in store_links.look_lines(result.tracking_uri, url):
        echo(line)
    return 0
