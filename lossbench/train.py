"""python -m lossbench.train loss=mae — the door: one run (with ``-m``, a sweep of runs), answered in one line.

A run is four phases (:mod:`lossbench.phases`): prepare -> open or resume the run -> fit and test -> record.
The config is checked before anything heavy is imported, and whatever can be wrong with the input fails
before a run exists in the store. A run always ends FINISHED, FAILED (with the reason) or KILLED; bad input
exits 2 and a failed run exits 1, each with one ``lossbench: error:`` line; in a sweep a failed job is
recorded as such and the sweep goes on.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra._internal.utils import get_args_parser
from omegaconf import DictConfig

from lossbench import gpus, job, launch, store_links  # noqa: F401  (launch registers its resolver)
from lossbench.config import is_regression, validate
from lossbench.errors import (
    COMPOSITION_ERRORS,
    LossbenchError,
    composition_message,
    describe,
    error_line,
    first_line,
    usage_error,
)
from lossbench.names import (
    OBJECTIVE,
    SUMMARY_EPOCHS,
    SUMMARY_SELECTED_EPOCH,
    TEST_ACC,
    TEST_LAST_ACC,
    TEST_LAST_RMSE_DEG,
    TEST_RMSE_DEG,
)
from lossbench.paths import conf_dir
from lossbench.process import import_heavy  # before torch/Lightning/MLflow: its exit handler runs after theirs

log = logging.getLogger("lossbench")


def run(cfg: DictConfig, extra_callbacks: list | None = None) -> float:
    """Train and record one configuration; return the last epoch's validation accuracy (the sweep's objective).

    ``extra_callbacks``: your own Lightning callbacks, added to the trainer after lossbench's (e.g. to
    time epochs or inspect the optimizer; see benchmarks/ for examples).
    """
    job.label_logs(f"job {job.job_number()}")  # in a sweep: until the run has its name
    job.new_output_dir()  # outside Hydra: this run's figures and resolved config in one folder of its own
    validate(cfg)  # what the config alone decides answers before the heavy imports
    import_heavy(*job.job_modules(cfg.tracking.uri))
    from lossbench import phases  # torch, Lightning, MLflow: imported above, once the config is known to be valid

    prepared = phases.prepare(cfg)
    opened = phases.open_run(cfg.tracking, cfg.resume, phases.identity(cfg))
    if opened.skipped:
        job.record_outcome("skipped", opened.run_id, opened.objective)
        return opened.objective
    job.announce_run(opened.run_id)  # a sweep's worker tells its sweep which run it now owns
    opened.tracker.set_tags(opened.run_id, phases.run_tags(opened, prepared))
    with recorded(opened.tracker, opened.run_id):
        fitted = phases.fit_and_test(cfg, prepared, opened, extra_callbacks)
        verdict = phases.record(cfg, opened, fitted)
    objective = fitted.history[OBJECTIVE][-1] if fitted.history.get(OBJECTIVE) else math.nan
    job.record_outcome("finished", opened.run_id, objective, resumed=opened.ckpt_path is not None)
    best, last = (TEST_RMSE_DEG, TEST_LAST_RMSE_DEG) if is_regression(cfg) else (TEST_ACC, TEST_LAST_ACC)
    log.info(
        "run %s finished: %s %.4f at the selected epoch %d (%s %s), %.4f at the last epoch %d; %s",
        opened.run_id,
        best,
        fitted.tests[best],
        fitted.summary.get(SUMMARY_SELECTED_EPOCH, -1),
        "highest" if cfg.checkpoint.mode == "max" else "lowest",
        cfg.checkpoint.monitor,
        fitted.tests[last],
        fitted.summary.get(SUMMARY_EPOCHS, -1),
        verdict.text,
    )
    if not job.in_sweep():  # a sweep says where to look once, at its end
        tracker = opened.tracker
        url = store_links.run_url(tracker.uri, tracker.experiment_id, opened.run_id)
        for line in store_links.look_lines(tracker.uri, url):
            log.info(line)
    return objective


class recorded:
    """Context manager: end the MLflow run FINISHED, KILLED (SIGINT/SIGTERM) or FAILED (with the reason)."""

    def __init__(self, tracker, run_id: str):
        self.tracker, self.run_id = tracker, run_id

    def __enter__(self):
        self._previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, kind, error, tb) -> bool:
        signal.signal(signal.SIGTERM, self._previous)
        if error is None:
            status, reason = "FINISHED", None
        elif isinstance(error, KeyboardInterrupt) or (isinstance(error, SystemExit) and _interrupted(error)):
            cause = error if isinstance(error, KeyboardInterrupt) else error.__context__
            status, reason = "KILLED", f"interrupted ({str(cause or '') or 'SIGINT'}); continue it with resume=true"
            job.record_outcome("killed", self.run_id, None, reason)
        else:
            status, reason = "FAILED", f"{type(error).__name__}: {first_line(error) or 'no message'}"
        try:
            self.tracker.end(self.run_id, status, reason)
        except Exception as e:  # the store itself may be what failed: never hide the original error
            log.error("could not mark run %s %s in %s: %s", self.run_id, status, self.tracker.uri, e)
            if error is None:
                raise
        return False


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"{signal.Signals(signum).name}: cancelled, preempted or stopped")


def _interrupted(error: SystemExit) -> bool:
    """Lightning turns Ctrl-C into sys.exit(1) after its own clean-up; its context is the KeyboardInterrupt."""
    return isinstance(error.__context__, KeyboardInterrupt) or type(error).__name__ == "SIGTERMException"


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def task(cfg: DictConfig) -> float:
    """Hydra's task function, one job: bad input exits 2 and a failed run exits 1, each with one line; in a
    sweep the job is recorded as failed and the sweep goes on."""
    try:
        return run(cfg)
    except LossbenchError as e:
        message, code = str(e), e.exit_code
    except Exception as e:  # not the user's input (a full disk, a store that went away): the traceback goes to the log
        message, code = f"{describe(e, 300)} ({save_traceback(e)})", 1
    finally:
        gpus.release()  # a parallel sweep worker's GPU slot, free for the next job
    if job.in_sweep():  # one bad job must not stop the sweep
        log.error("job failed: %s", message)
        job.record_outcome("failed", None, None, message)
        return math.nan
    print(error_line(message), file=sys.stderr)
    sys.exit(code)


def main() -> None:
    """``python -m lossbench.train`` (``lossbench-train``): Hydra composes the config and runs :func:`task` once
    per job; a command line Hydra cannot compose (an unknown option, experiment or key) answers in one line,
    exit 2, like any other bad input. ``HYDRA_FULL_ERROR=1`` shows Hydra's own report instead."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        task()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its multi-line report and exiting 1
    check_usage(sys.argv[1:])
    try:
        task()
    except COMPOSITION_ERRORS as e:
        print(error_line(composition_message(e)), file=sys.stderr)
        sys.exit(2)
    except LossbenchError as e:  # around the jobs: a sweep that refused a job's config, or a store refusing the login
        print(error_line(str(e)), file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:  # around the jobs (a launcher, a callback): one line, the traceback in a log
        print(error_line(f"{describe(e, 300)} ({save_traceback(e)})"), file=sys.stderr)
        sys.exit(1)


def check_usage(argv: list[str]) -> None:
    """Hydra's own command line (``-m``, ``--help``, overrides) read first with Hydra's parser: a usage mistake
    (``loss=ce -m seed=0,1``: options go before the overrides) is one line and exit 2, not argparse's usage text."""
    parser = get_args_parser()
    parser.prog = "python -m lossbench.train"
    parser.error = lambda message: usage_error(parser.prog, message, "lossbench")  # type: ignore[method-assign]
    parser.parse_args(argv)


def save_traceback(error: BaseException) -> str:
    """Append ``error``'s traceback to the job's log file (Hydra's, else one in the output folder); say where it went."""
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "run failed", None, (type(error), error, error.__traceback__)
    )
    hydra_log = next((h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)), None)
    path = Path(hydra_log.baseFilename) if hydra_log else Path(job.output_dir()) / "lossbench_error.log"
    formatter = (
        hydra_log.formatter
        if hydra_log and hydra_log.formatter
        else logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    )
    try:
        if hydra_log:
            hydra_log.flush()
        with open(path, "a") as f:
            f.write(formatter.format(record) + "\n")
    except OSError as e:  # the disk that filled up may hold the log too
        return f"full traceback not saved: {path}: {e.strerror}"
    return f"full traceback in {path}"


if __name__ == "__main__":
    main()
