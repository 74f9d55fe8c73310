"""``python -m lossbench.claims [--quick] [--out DIR] [hydra overrides ...]``: run every claim's protocol as a
lossbench sweep, read the runs back, judge each claim, write the pages and put them on an MLflow run.

The overrides go to every protocol's sweep, after the protocol's own (and ``--quick``'s): ``data.root=/data``,
``tracking.uri=...``, ``seed=0,1,2,3,4`` (more seeds everywhere). Re-running the same command skips every job that
FINISHED and only re-judges; a sweep with failed jobs is judged on the runs that finished, and the command exits 1.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser

from lossbench import provenance, store_links
from lossbench.claims.protocols import (
    PROTOCOLS,
    Design,
    Launched,
    Protocol,
    arguments,
    design,
    launch,
    portable,
    split_overrides,
    tuned_overrides,
    written,
)
from lossbench.config import validate
from lossbench.errors import (
    COMPOSITION_ERRORS,
    ConfigError,
    LossbenchError,
    OneLineParser,
    access_refused,
    composition_message,
    error_line,
    first_line,
)
from lossbench.names import FAILURE_TAG
from lossbench.paths import compose, conf_dir, folder_problem

if TYPE_CHECKING:
    from lossbench.claims.rules import Finding

PROGRAM = "lossbench.claims"
DEFAULT_OUT, QUICK_OUT = "reports/claims", "reports/claims-quick"


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m lossbench.claims",
        description=(
            "Test the textbook's claims about losses: run one protocol per kind of evidence "
            "(conf/experiment/claim_*.yaml) as lossbench sweeps, then write claims.md, claims.html, claims.json and "
            "figures with a verdict per claim (supported, contradicted, depends, inconclusive) and the rule behind it."
        ),
    )
    p.add_argument(
        "--quick", action="store_true", help="reduced protocols (fewer epochs, images, seeds, models): minutes"
    )
    p.add_argument(
        "--out",
        default=None,
        help=f"folder for the pages and the sweeps' folders (default: {DEFAULT_OUT}, with --quick {QUICK_OUT})",
    )
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides for every protocol, e.g. data.root=/data tracking.uri=..."
    )
    return p


def read_back(
    designs: Sequence[Design], launched: Sequence[Launched]
) -> tuple[list[dict], list[tuple[str, str, str, str]]]:
    """Every protocol's counted runs as one table, and the runs its sweep made that did not finish."""
    from mlflow.tracking import MlflowClient  # MLflow: after the sweeps, which import it in their own processes

    from lossbench.claims import results  # MLflow and scipy: after the input checks
    from lossbench.store import resolve_uri  # MLflow too

    rows, not_finished = [], []
    detector = written()["detector"]["protocol"]
    for d, sweep in zip(designs, launched):
        ids = results.run_ids(sweep.outcomes)
        client = MlflowClient(resolve_uri(d.tracking_uri))
        experiment = client.get_experiment_by_name(d.experiment)
        if experiment is None or not ids:
            continue
        curves = results.CURVES if d.protocol == detector else ()
        selection = results.read(client, experiment.experiment_id, ids, curves=curves)
        rows += results.tidy(d.protocol, selection.finished)
        not_finished += [(d.protocol, r.name, r.status, r.tags.get(FAILURE_TAG, "")) for r in selection.not_finished]
    for sweep in launched:
        not_finished += [
            (sweep.protocol, " ".join(o["overrides"]), o["status"], o.get("reason") or "")
            for o in sweep.outcomes
            if o["status"] in ("failed", "killed")
        ]
    return rows, not_finished


def decide_command(findings: Sequence[Finding], rows: Sequence[dict], overrides: Sequence[str], quick: bool) -> str:
    """The command that runs the seeds the undecided predictions need, as one second look (tracking.stage=2)."""
    from lossbench.claims.rules import UNDECIDED  # scipy: after the input checks

    words = ["python -m lossbench.claims", *(shlex.quote(o) for o in overrides)]
    if quick:
        return " ".join(words)  # the full protocols: three seeds, enough for a first look
    extras = [t.extra_seeds for f in findings for t in f.tested if t.outcome == UNDECIDED and t.extra_seeds]
    if not extras or any(r.get("stage", 1) > 1 for r in rows):
        return ""
    seeds = max(len({r["seed"] for r in rows if r["protocol"] == p}) for p in {r["protocol"] for r in rows})
    return " ".join([*words, shlex.quote(f"seed=range(0,{seeds + max(extras)})"), "tracking.stage=2"])


def tune(
    out: Path, overrides: Sequence[str], quick: bool, echo: Callable[[str], None]
) -> tuple[list[Design], list[Launched], list[str]]:
    """Run the tuning protocols, read their runs back, and choose each loss x model's learning rate on clean
    validation (lossbench.claims.protocols.tuned_overrides): the overrides every other protocol gets."""
    from lossbench.claims import results  # MLflow and scipy: after the input checks

    tuning = [p for p in PROTOCOLS.values() if p.tunes]
    designs, launched = _run(tuning, out, overrides, quick, echo)
    rows, _ = read_back(designs, launched)
    chosen = tuned_overrides(rows, results.SUMMARY_BEST_VAL_ACC)
    echo(f"tuned on clean validation: {' '.join(o.removeprefix('++tuned.lr.') for o in chosen) or 'nothing'}")
    return designs, launched, chosen


def _run(
    protocols: Sequence[Protocol], out: Path, overrides: Sequence[str], quick: bool, echo: Callable[[str], None]
) -> tuple[list[Design], list[Launched]]:
    designs = [design(p, overrides, quick) for p in protocols]
    launched = []
    for protocol, d in zip(protocols, designs):
        shown = " ".join(portable(a) for a in arguments(protocol, overrides, quick))
        echo(f"{protocol.name}: {d.jobs} jobs (python -m lossbench.train -m {shown})")
        sweep = launch(protocol, overrides, quick, out / "sweeps" / protocol.name)
        counts = sweep.counts()
        echo(
            f"  {counts['finished']} ran, {counts['skipped']} reused, {counts['failed']} failed, {counts['killed']} killed "
            f"in {sweep.seconds:.0f} s (log: sweeps/{protocol.name}.log)"
        )
        launched.append(sweep)
    return designs, launched


def run_protocols(
    out: Path, overrides: Sequence[str], quick: bool, echo: Callable[[str], None]
) -> tuple[list[Design], list[Launched], list[str]]:
    """Every protocol's every job checked as train checks it (a bad override fails in seconds, before any sweep),
    then equal tuning first, then every other protocol at the rates it chose; ``(designs, sweeps, tuned overrides)``."""
    for protocol in PROTOCOLS.values():
        check_jobs(protocol, design(protocol, overrides, quick), overrides, quick)
    designs, launched, chosen = tune(out, overrides, quick, echo)
    rest = [p for p in PROTOCOLS.values() if not p.tunes]
    more_designs, more_launched = _run(rest, out, [*overrides, *chosen], quick, echo)
    return designs + more_designs, launched + more_launched, chosen


def check_jobs(protocol: Protocol, d: Design, overrides: Sequence[str], quick: bool) -> None:
    """Raise ConfigError naming the protocol, the job and the key when one of the protocol's jobs breaks a config
    rule train checks (lossbench.config.validate). Jobs sharing their groups (loss=, model=) are composed once and
    differ by their swept values, applied as Hydra applies them."""
    plain, _ = split_overrides(arguments(protocol, overrides, quick))
    groups = [k for k in d.grid if (conf_dir() / k.lstrip("+~")).is_dir()]
    parser, composed = OverridesParser.create(), {}
    for combination in itertools.product(*d.grid.values()):
        chosen = [f"{k}={v}" for k, v in zip(d.grid, combination)]
        by_group = tuple(o for o in chosen if o.partition("=")[0] in groups)
        if by_group not in composed:
            composed[by_group] = compose(*plain, *by_group)
        cfg = copy.deepcopy(composed[by_group])
        ConfigLoaderImpl._apply_overrides_to_config(
            parser.parse_overrides([o for o in chosen if o not in by_group]), cfg
        )
        try:
            validate(cfg)
        except ConfigError as e:
            raise ConfigError(f"protocol {protocol.name}, job {' '.join(chosen)}: {e}") from e


def main(argv: Sequence[str] | None = None, echo: Callable[[str], None] = print) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 when a sweep had failed jobs, 2 for bad input)."""
    args = _parser().parse_args(argv)
    started = time.monotonic()
    out = Path(args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)).resolve()
    command = " ".join(
        [
            "python -m lossbench.claims",
            *(["--quick"] if args.quick else []),
            *(shlex.quote(portable(o)) for o in args.overrides),
        ]
    )
    if problem := folder_problem(out):
        print(error_line(f"--out={args.out or out}: {problem}; choose another folder", PROGRAM), file=sys.stderr)
        return 2
    try:
        designs, launched, tuned = run_protocols(out, args.overrides, args.quick, echo)
    except COMPOSITION_ERRORS as e:  # an override Hydra cannot compose: the user's input, said as train says it
        print(error_line(composition_message(e), PROGRAM), file=sys.stderr)
        return 2
    except LossbenchError as e:  # a value a job cannot train with, a store it cannot use: before any sweep starts
        print(error_line(str(e), PROGRAM), file=sys.stderr)
        return 2
    except Exception as e:  # a protocol's sweep could not start: one line, exit 2 as before any training
        print(error_line(f"{type(e).__name__}: {first_line(e)}", PROGRAM), file=sys.stderr)
        return 2
    from lossbench.claims import evaluate, write  # scipy, matplotlib: once the input has passed its checks

    rows, not_finished = read_back(designs, launched)
    findings = evaluate.evaluate(rows)
    context = write.Context(
        command,
        args.quick,
        time.monotonic() - started,
        designs,
        launched,
        not_finished,
        provenance.label(provenance.code().tags()),
        decide_command(findings, rows, [portable(o) for o in args.overrides], args.quick),
        evaluate.controls(rows),
        tuned,
    )
    files = write.write(out, findings, context)
    for f in findings:
        echo(f"claim {f.claim.number}: {f.verdict.kind} — {f.verdict.text} ({f.key})")
    echo(f"claims: {out / write.FILES[1]}   (also claims.md, claims.json, {len(files) - len(write.FILES)} figures)")
    _log(
        designs[0],
        files,
        findings,
        [arguments(p, args.overrides, args.quick) for p in PROTOCOLS.values()],
        command,
        echo,
    )
    echo(f"wall time: {(time.monotonic() - started) / 60:.1f} min")
    return 1 if any(s.returncode != 0 for s in launched) else 0


def _log(
    d: Design, files: Sequence[Path], findings: Sequence[Finding], args: Sequence[Sequence[str]], command: str, echo
) -> None:
    from lossbench.claims import write  # matplotlib: after the input checks
    from lossbench.store import resolve_uri  # MLflow: only once the pages are written

    uri = resolve_uri(d.tracking_uri)
    try:
        run_id, experiment_id = write.log_run(uri, 30, files, findings, write.claims_id(args), command)
    except Exception as e:  # the pages are written; a store that went away (or says no) must not lose them
        why = (
            access_refused(e, store_links.ui_base(uri), write.CLAIMS_EXPERIMENT)
            or f"{type(e).__name__}: {first_line(e)}"
        )
        echo(f"not logged to MLflow ({why}); the pages are in {files[-1].parent}")
        return
    echo(f"logged: MLflow run {run_id} (experiment '{write.CLAIMS_EXPERIMENT}'), artifacts '{write.ARTIFACT_PATH}/'")
    for line in store_links.look_lines(uri, store_links.run_url(uri, experiment_id, run_id)):
        echo(line)
