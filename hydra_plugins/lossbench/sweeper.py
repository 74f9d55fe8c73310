"""Launching a sweep's jobs: configs that already FINISHED are left out before any launcher sees them.

``conf/config.yaml`` selects :class:`SkipFinishedSweeper` (Hydra's basic sweeper plus this filter;
Hydra accepts plugins only from the ``hydra_plugins`` namespace, hence this folder).
Before each batch goes to the launcher (basic, joblib, submitit_local, slurm), every job's config is
composed exactly as the job would compose it, and a job whose ``config_hash`` already has a FINISHED
run in the store is not launched: its output folder gets a ``skipped`` outcome, so the sweep's
closing screen still lists it. A re-run of a 1,000-job sweep with 990 finished submits 10 jobs.

Each job keeps its own number (``hydra.job.num``, its output folder): launchers that can start jobs
under given numbers (joblib, lossbench's Slurm launcher) get them all at once; any other launcher
gets each run of consecutive numbers in turn.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger("lossbench")

Job = tuple[int, Sequence[str]]  # (job number, its overrides)


class SkipFinishedSweeper(BasicSweeper):
    """Hydra's basic sweeper whose launcher never receives a job whose identical config already FINISHED."""

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = SkippingLauncher(self.launcher, hydra_context, config)


class SkippingLauncher:
    """Wraps a Hydra launcher: ``launch`` leaves out finished configs and launches the rest under their own numbers."""

    def __init__(self, inner, hydra_context, config: DictConfig):
        self.inner, self.hydra_context, self.config = inner, hydra_context, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        jobs = list(enumerate(job_overrides, initial_job_idx))
        skipped = {num: ret for num, overrides in jobs if (ret := self.skip_if_finished(num, overrides)) is not None}
        todo = [(num, overrides) for num, overrides in jobs if num not in skipped]
        if skipped:
            log.info(
                "%d of %d jobs skipped before launch: their config already FINISHED (tracking.skip_finished=false runs them again)",
                len(skipped),
                len(jobs),
            )
        launched = dict(zip([num for num, _ in todo], launch_numbered(self.inner, todo)))
        return [skipped[num] if num in skipped else launched[num] for num, _ in jobs]

    def skip_if_finished(self, num: int, overrides: Sequence[str]) -> JobReturn | None:
        """A ``skipped`` JobReturn (outcome written) when this job's config FINISHED before, else None."""
        from lossbench import sweep
        from lossbench.train import OBJECTIVE

        cfg = job_config(self.hydra_context, self.config, num, overrides)
        if cfg.tracking.get("skip_finished") is False:
            return None
        done = tracker_of(cfg).runs_of_config(task_hash(cfg), ["FINISHED"])
        if not done:
            return None
        objective = done[0].data.metrics.get(OBJECTIVE, math.nan)
        job_dir = job_output_dir(cfg)
        sweep.write_outcome(job_dir, "skipped", done[0].info.run_id, objective, None, list(overrides))
        ret = JobReturn(
            overrides=list(overrides), cfg=cfg, hydra_cfg=cfg, working_dir=str(job_dir), task_name=cfg.hydra.job.name
        )
        ret.status, ret.return_value = JobStatus.COMPLETED, objective
        return ret

    def __getattr__(self, name: str):  # everything else is the wrapped launcher's
        return getattr(self.inner, name)


def job_config(hydra_context, config: DictConfig, num: int, overrides: Sequence[str]) -> DictConfig:
    """A job's config as its launcher composes it (Hydra's node included), with its number set."""
    cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(cfg.hydra.job):
        cfg.hydra.job.num = num
    return cfg


def task_hash(cfg: DictConfig) -> str:
    """lossbench's ``config_hash`` of a job's config, taken as the task receives it (without Hydra's node)."""
    from lossbench.config import config_hash

    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return config_hash(task)


_trackers: dict[tuple[str, str], Any] = {}


def tracker_of(cfg: DictConfig):
    """One connected Tracker per (store, experiment) for the sweep's own process."""
    from lossbench.store import Tracker

    key = (cfg.tracking.uri, cfg.tracking.experiment)
    if key not in _trackers:
        _trackers[key] = Tracker.connect(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.timeout_s)
    return _trackers[key]


def job_output_dir(cfg: DictConfig) -> Path:
    """Where a sweep job with this composed config writes: ``hydra.sweep.dir/hydra.sweep.subdir``."""
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def launch_numbered(launcher, jobs: list[Job]) -> list[JobReturn]:
    """Launch ``jobs`` under their own numbers; returns their JobReturns in the same order."""
    if not jobs:
        return []
    if hasattr(launcher, "launch_numbered"):
        return launcher.launch_numbered(jobs)
    if type(launcher).__name__ == "JoblibLauncher":
        return _joblib_numbered(launcher, jobs)
    returns: list[JobReturn] = []
    for _, run in groupby(enumerate(jobs), key=lambda item: item[1][0] - item[0]):  # runs of consecutive numbers
        run = [job for _, job in run]
        returns.extend(launcher.launch([overrides for _, overrides in run], initial_job_idx=run[0][0]))
    return returns


def _joblib_numbered(launcher, jobs: list[Job]) -> list[JobReturn]:
    """hydra_joblib_launcher's ``launch``, with each job's number given instead of counted from the first."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import setup_globals
    from hydra_plugins.hydra_joblib_launcher._core import execute_job, process_joblib_cfg
    from joblib import Parallel, delayed

    setup_globals()
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    joblib_cfg = launcher.joblib
    joblib_cfg["backend"] = "loky"
    process_joblib_cfg(joblib_cfg)
    log.info("Joblib.Parallel(n_jobs=%s) is launching %d jobs", joblib_cfg.get("n_jobs"), len(jobs))
    state = Singleton.get_state()
    return list(
        Parallel(**joblib_cfg)(
            delayed(execute_job)(num, overrides, launcher.hydra_context, launcher.config, launcher.task_function, state)
            for num, overrides in jobs
        )
    )
