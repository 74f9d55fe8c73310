"""Sweeps: what a job needs to know about the sweep it belongs to, and the Hydra callback around it.

``python -m lossbench.train -m loss=mse,mae optimizer=adam,sgd`` runs one job per combination through
any Hydra launcher (basic, joblib, submitit). Before the jobs start, :class:`SweepCallback` creates
the tracking store once (SQLite's schema creation races when parallel jobs create it together),
derives the sweep id from the sweep's own command line (so re-running it resumes the same sweep) and
opens a parent run; each job writes its outcome to its output folder; at the end the callback puts
the sweep's report on the parent run, reads the outcomes back and prints one screen with the links.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lossbench import analysis, job, provenance, store_links, workers
from lossbench.errors import first_line
from lossbench.names import (
    CONFIG_HASH_TAG,
    KIND_SWEEP,
    KIND_TAG,
    KIND_TRAIN,
    OBJECTIVE,
    SWEEP_OVERRIDES_TAG,
    SWEEP_TAG,
)

log = logging.getLogger("lossbench")


def sweep_id_of(config: DictConfig) -> str:
    """The sweep's identity: an explicit ``tracking.sweep_id``, else a hash of its command line and sweeper params."""
    if config.tracking.sweep_id:
        return str(config.tracking.sweep_id)
    params = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=False) if params is not None else {}
    text = json.dumps(
        {"overrides": sorted(config.hydra.overrides.task), "params": params, "experiment": config.tracking.experiment},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Ending:
    """What a sweep's closing screen shows besides its jobs' outcomes: where its runs are, and its report."""

    tracking_uri: str
    experiment: str
    sweep_id: str
    experiment_id: str | None = None
    parent_run_id: str | None = None
    report: Any = None
    """lossbench.report.build.ReportResult, or None when the report could not be written."""
    report_error: str = ""


def summary_screen(outcomes: list[dict[str, Any]], ending: Ending) -> str:
    """The sweep's closing screen: counts, the report's answer (its first lines), failures, the report's path and
    how to look at the runs in MLflow, each once."""
    counts = {s: sum(o["status"] == s for o in outcomes) for s in job.OUTCOMES}
    resumed = sum(1 for o in outcomes if o.get("resumed"))  # one line for the sweep, not one per job
    lines = [
        f"sweep {ending.sweep_id}: {len(outcomes)} jobs — {counts['finished']} finished, {counts['failed']} failed, "
        f"{counts['killed']} killed, {counts['skipped']} skipped (already finished)"
        + (f"; {resumed} of them resumed from a checkpoint" if resumed else "")
    ]
    if ending.report is not None:
        lines += ending.report.answer
    for o in outcomes:
        if o["status"] in ("failed", "killed"):
            lines.append(f"{o['status'].upper()} {' '.join(o['overrides'])}: {o['reason']}")
    if ending.report is not None:
        lines.append(f"report: {ending.report.html}")
    else:
        command = (
            f"python -m lossbench.report --experiment {shlex.quote(ending.experiment)} --sweep {ending.sweep_id} "
            f"--tracking-uri {shlex.quote(ending.tracking_uri)}"
        )
        lines.append(f"report: not written ({ending.report_error or 'no store'}); write it with: {command}")
    lines += _look_lines(ending)
    return "\n".join(lines)


def _look_lines(ending: Ending) -> list[str]:
    uri, experiment_id, sweep_id = ending.tracking_uri, ending.experiment_id, ending.sweep_id
    if experiment_id is None:
        return [f"runs:   {store_links.ui_command(uri) or uri}   (filter: tags.{SWEEP_TAG} = '{sweep_id}')"]
    lines = store_links.look_lines(uri, store_links.sweep_url(uri, experiment_id, sweep_id))
    lines[-1] += "   (the sweep's runs)"
    if ending.parent_run_id is not None:
        url = store_links.run_url(uri, experiment_id, ending.parent_run_id)
        lines.append(f"answer: {url}   (the sweep's run: the report's front page and its artifacts)")
    share_key = store_links.curves_view(sweep_id)[2]
    url = store_links.curves_url(uri, experiment_id, share_key)
    grouping = ending.report.grouping if ending.report is not None else (("tag", "loss"),)
    words = store_links.grouping_words(grouping)
    lines.append(f"curves: {url}   (overfitting and drift on one scale for every loss, grouped by {words})")
    return lines


def write_report(tracker, experiment: str, sweep_id: str, rule, report_cfg) -> tuple[Any, str]:
    """Build the sweep's report onto its parent run, and save its curves view in the experiment: ``(the report,
    "")``, or ``(None, why not)``; a failure is never the sweep's outcome."""
    from lossbench.report.build import build_report  # MLflow, matplotlib, scipy: imported while the jobs ran

    try:
        tag, state, _ = store_links.curves_view(sweep_id)
        tracker.client.set_experiment_tag(tracker.experiment_id, tag, state)
        min_effect = None if report_cfg.min_effect_pp is None else report_cfg.min_effect_pp / 100
        result = build_report(
            experiment,
            sweep_id=sweep_id,
            tracking_uri=tracker.uri,
            rule=rule,
            client=tracker.client,
            reference=report_cfg.reference,
            min_effect=min_effect,
        )
        if result.grouping != (("tag", "loss"),):  # the view groups as the report compares (loss × optimizer)
            tag, state, _ = store_links.curves_view(sweep_id, result.grouping)
            tracker.client.set_experiment_tag(tracker.experiment_id, tag, state)
        return result, ""
    except Exception as e:
        reason = f"{type(e).__name__}: {first_line(e)}"
        log.warning("sweep %s: the report was not written (%s)", sweep_id, reason)
        return None, reason


def open_sweep(
    uri: str, experiment: str, timeout_s: float, sweep_id: str, overrides: list[str], owner: int
) -> dict[str, Any]:
    """Create the store if needed, end KILLED the runs whose process is gone, find or create the sweep's parent
    run (owned by process ``owner``, the sweep's), list the configs that FINISHED.

    Plain data only, so a warm worker process can do this while the sweep's own process composes the
    jobs' configs (lossbench.workers): ``uri`` (as resolved), ``experiment_id``, ``parent_id``,
    ``finished``: :func:`finished_configs`, and ``orphans``: the runs left RUNNING by a process that no longer exists
    (a kill -9, a machine that lost power), now KILLED, so that this sweep resumes them. The parent run gets this
    process's code, libraries, CPU and the sweep's command (again when a sweep is re-run: its latest launch's).
    """
    from lossbench.store import Tracker, process_tags, sweep_filter  # MLflow: a single run uses this module too

    tracker = Tracker.connect(uri, experiment, timeout_s)
    orphans = tracker.end_orphaned_runs()
    parents = tracker.runs(sweep_filter(sweep_id))
    if parents:
        parent_id = parents[0].info.run_id
        tracker.reopen(parent_id, pid=owner)
    else:
        tags = {KIND_TAG: KIND_SWEEP, SWEEP_TAG: sweep_id, **process_tags(owner)}
        with tracker.refusals():  # a login that may read but not write: one line, before any job
            parent_id = tracker.client.create_run(
                tracker.experiment_id, run_name=f"sweep-{sweep_id}", tags=tags
            ).info.run_id
        tracker.set_tags(parent_id, {SWEEP_OVERRIDES_TAG: json.dumps(list(overrides))})
    made = provenance.run_tags(provenance.code(), provenance.command(overrides, sweep=True))
    tracker.set_tags(parent_id, {**made, **provenance.device_tags()})
    return {
        "store": [uri, experiment],
        "uri": tracker.uri,
        "experiment_id": tracker.experiment_id,
        "parent_id": parent_id,
        "finished": finished_configs(tracker),
        "orphans": orphans,
    }


def finished_configs(tracker) -> dict[str, list]:
    """{config hash: [[run id, objective, code version], ...]}: the FINISHED training runs of each config of the
    experiment, newest first (lossbench.provenance.reused chooses among them)."""
    from lossbench.store import tag_filter  # MLflow: a single run instantiates this callback too

    finished: dict[str, list] = {}
    for r in tracker.runs(tag_filter(KIND_TRAIN), ["FINISHED"]):  # newest first
        made_by = provenance.code_version_of(r.data.tags)
        finished.setdefault(r.data.tags.get(CONFIG_HASH_TAG), []).append(
            [r.info.run_id, r.data.metrics.get(OBJECTIVE, math.nan), made_by]
        )
    return finished


_opened: dict[str, Any] = {}  # this process's sweep, once open_sweep's answer is in (see opened())


def set_opened(opened: dict[str, Any]) -> None:
    """Adopt ``open_sweep``'s answer: jobs find the parent run and the store through the environment."""
    _opened.clear()
    _opened.update(opened)
    if opened.get("orphans"):
        log.warning(
            "runs left RUNNING by a process that no longer exists, now KILLED so that they resume: %s",
            ", ".join(opened["orphans"]),
        )
    os.environ[job.PARENT_RUN_ENV] = opened["parent_id"]
    os.environ.setdefault("MLFLOW_TRACKING_URI", opened["uri"])  # jobs in other folders find the same store


_deferred: list[tuple] = []  # open_sweep's arguments, while the sweeper checks every job's config first


def checks_jobs_first(config: DictConfig) -> bool:
    """True when the sweep's sweeper checks every job's config before the sweep opens (and calls :func:`begin`)."""
    return str(config.hydra.sweeper.get("_target_", "")).endswith(".SkipFinishedSweeper")


def begin() -> None:
    """Open the sweep (the store, its parent run), every job's config having passed: in a warm worker when the
    sweep has workers, else here. Nothing to do when :class:`SweepCallback` already opened it."""
    if not _deferred:
        return
    args = _deferred.pop()
    if not workers.open_in_worker(open_sweep, args, set_opened):
        set_opened(open_sweep(*args))


def opened() -> dict[str, Any] | None:
    """The sweep's store and parent run (waiting for a warm worker still opening them); None outside a sweep."""
    workers.wait_for_warm_up()
    return dict(_opened) or None


class SweepCallback(Callback):
    """Hydra callback: prepare the store and the parent run before the jobs, summarise after them."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_id = sweep_id_of(config)
        os.environ[job.SWEEP_ID_ENV] = sweep_id
        args = (
            config.tracking.uri,
            config.tracking.experiment,
            config.tracking.timeout_s,
            sweep_id,
            list(config.hydra.overrides.task),
            os.getpid(),  # the parent run's owner: this process
        )
        if checks_jobs_first(config):  # the sweeper calls begin() once every job's config passed
            workers.warm_up(config)  # parallel jobs: their workers import what a job needs meanwhile
            _deferred[:] = [args]
            return
        # Parallel jobs: their workers start now and one of them opens the store meanwhile; else it is done here.
        if not workers.warm_up(config, open_sweep, args, set_opened):
            set_opened(open_sweep(*args))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print the sweep's screen; exit non-zero when a job failed or was killed (after every job has run)."""
        from lossbench.store import Tracker  # MLflow: a single run instantiates this callback too

        workers.shut_down()  # every job is done: the workers log their last figures and exit
        sweep_id = os.environ.get(job.SWEEP_ID_ENV, "?")
        outcomes = job.read_outcomes(Path(config.hydra.sweep.dir))
        failed = sum(o["status"] == "failed" for o in outcomes)
        killed = sum(o["status"] == "killed" for o in outcomes)
        ending = Ending(config.tracking.uri, config.tracking.experiment, sweep_id)
        sweep = opened()
        if sweep is not None:
            tracker = Tracker.connect(config.tracking.uri, config.tracking.experiment, config.tracking.timeout_s)
            status = "FAILED" if failed else "KILLED" if killed else "FINISHED"
            tracker.end(
                sweep["parent_id"],
                status,
                f"{failed} failed and {killed} killed of {len(outcomes)} jobs" if failed or killed else None,
            )
            rule = analysis.Rule.from_config(config.analysis)
            report, error = write_report(tracker, config.tracking.experiment, sweep_id, rule, config.report)
            ending = Ending(
                tracker.uri,
                config.tracking.experiment,
                sweep_id,
                tracker.experiment_id,
                sweep["parent_id"],
                report,
                error,
            )
        print(summary_screen(outcomes, ending), flush=True)
        if failed or killed:
            raise SystemExit(1)
