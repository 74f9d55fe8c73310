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


def summary_screen(
    outcomes: list[dict[str, Any]],
    tracking_uri: str,
    experiment: str,
    sweep_id: str,
    experiment_id: str | None = None,
    parent_run_id: str | None = None,
) -> str:
    """The sweep's closing screen: counts, the best job, failures, and where to look at the runs and the report."""
    counts = {s: sum(o["status"] == s for o in outcomes) for s in ("finished", "failed", "killed", "skipped")}
    lines = [
        f"sweep {sweep_id}: {len(outcomes)} jobs — {counts['finished']} finished, {counts['failed']} failed, "
        f"{counts['killed']} killed, {counts['skipped']} skipped (already finished)"
    ]
    scored = [
        o
        for o in outcomes
        if o["status"] in ("finished", "skipped") and o["objective"] is not None and not math.isnan(o["objective"])
    ]
    if scored:
        best = max(scored, key=lambda o: o["objective"])
        lines.append(f"best val/acc {best['objective']:.4f}: {' '.join(best['overrides'])} (run {best['run_id']})")
    for o in outcomes:
        if o["status"] in ("failed", "killed"):
            lines.append(f"{o['status'].upper()} {' '.join(o['overrides'])}: {o['reason']}")
    lines.append(
        f"report: python -m lossbench.report --experiment {experiment} --sweep {sweep_id} --tracking-uri {tracking_uri}"
    )
    if experiment_id is not None:
        lines += store_links.look_lines(tracking_uri, store_links.sweep_url(tracking_uri, experiment_id, sweep_id))
        if parent_run_id is not None:
            lines.append(
                f"answer: {store_links.run_url(tracking_uri, experiment_id, parent_run_id)}   (the sweep's run: report and figures)"
            )
        share_key = store_links.curves_view(sweep_id)[2]
        lines.append(
            f"curves: {store_links.curves_url(tracking_uri, experiment_id, share_key)}   (val/nll, train_eval/nll by loss)"
        )
    else:
        lines.append(f"runs:   mlflow ui --backend-store-uri {tracking_uri}   (filter: tags.sweep_id = '{sweep_id}')")
    return "\n".join(lines)


def write_report(tracker, experiment: str, sweep_id: str, rule) -> None:
    """Build the sweep's report onto its parent run, and save its curves view (grouped NLL charts) in the
    experiment; a failure is a warning, never the sweep's outcome."""
    from lossbench.report.build import build_report  # MLflow, matplotlib, scipy: imported while the jobs ran

    try:
        tag, state, _ = store_links.curves_view(sweep_id)
        tracker.client.set_experiment_tag(tracker.experiment_id, tag, state)
        result = build_report(experiment, sweep_id=sweep_id, tracking_uri=tracker.uri, rule=rule, client=tracker.client)
        log.info("sweep %s: report %s, also on the sweep's parent run", sweep_id, result.html)
    except Exception as e:
        log.warning(
            "sweep %s: the report was not written (%s: %s); run the report command below",
            sweep_id,
            type(e).__name__,
            first_line(e),
        )


def open_sweep(uri: str, experiment: str, timeout_s: float, sweep_id: str, overrides: list[str]) -> dict[str, Any]:
    """Create the store if needed, find or create the sweep's parent run, list the configs that FINISHED.

    Plain data only, so a warm worker process can do this while the sweep's own process composes the
    jobs' configs (lossbench.workers): ``uri`` (as resolved), ``experiment_id``, ``parent_id``, and
    ``finished``: :func:`finished_configs`. The parent run gets this process's code, libraries, CPU and the sweep's
    command (again when a sweep is re-run: the code of its latest launch).
    """
    from lossbench.store import Tracker, sweep_filter  # MLflow: a single run instantiates this callback too

    tracker = Tracker.connect(uri, experiment, timeout_s)
    parents = tracker.runs(sweep_filter(sweep_id))
    if parents:
        parent_id = parents[0].info.run_id
        tracker.reopen(parent_id)
    else:
        run = tracker.client.create_run(
            tracker.experiment_id, run_name=f"sweep-{sweep_id}", tags={KIND_TAG: KIND_SWEEP, SWEEP_TAG: sweep_id}
        )
        parent_id = run.info.run_id
        tracker.set_tags(parent_id, {SWEEP_OVERRIDES_TAG: " ".join(overrides)})
    made = provenance.run_tags(provenance.code(), provenance.command(overrides, sweep=True))
    tracker.set_tags(parent_id, {**made, **provenance.device_tags()})
    return {
        "store": [uri, experiment],
        "uri": tracker.uri,
        "experiment_id": tracker.experiment_id,
        "parent_id": parent_id,
        "finished": finished_configs(tracker),
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
    os.environ[job.PARENT_RUN_ENV] = opened["parent_id"]
    os.environ.setdefault("MLFLOW_TRACKING_URI", opened["uri"])  # jobs in other folders find the same store


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
        )
        # Parallel jobs: their workers start now and one of them opens the store meanwhile; else it is done here.
        if not workers.warm_up(config, open_sweep, args, set_opened):
            set_opened(open_sweep(*args))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print the sweep's screen; exit non-zero when a job failed or was killed (after every job has run)."""
        from lossbench.store import Tracker  # MLflow: a single run instantiates this callback too

        sweep_id = os.environ.get(job.SWEEP_ID_ENV, "?")
        outcomes = job.read_outcomes(Path(config.hydra.sweep.dir))
        failed = sum(o["status"] == "failed" for o in outcomes)
        killed = sum(o["status"] == "killed" for o in outcomes)
        sweep = opened()
        tracker = None
        if sweep is not None:
            self.parent_id = sweep["parent_id"]
            tracker = Tracker.connect(config.tracking.uri, config.tracking.experiment, config.tracking.timeout_s)
            status = "FAILED" if failed else "KILLED" if killed else "FINISHED"
            tracker.end(
                self.parent_id,
                status,
                f"{failed} failed and {killed} killed of {len(outcomes)} jobs" if failed or killed else None,
            )
            write_report(tracker, config.tracking.experiment, sweep_id, analysis.Rule.from_config(config.analysis))
        print(
            summary_screen(
                outcomes,
                tracker.uri if tracker else config.tracking.uri,
                config.tracking.experiment,
                sweep_id,
                tracker.experiment_id if tracker else None,
                self.parent_id if tracker else None,
            ),
            flush=True,
        )
        if failed or killed:
            raise SystemExit(1)
