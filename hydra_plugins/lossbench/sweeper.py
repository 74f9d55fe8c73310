"""Launching a sweep's jobs: configs that already FINISHED are left out before any launcher sees them.

``conf/config.yaml`` selects :class:`SkipFinishedSweeper` (Hydra's basic sweeper plus this filter;
Hydra accepts plugins only from the ``hydra_plugins`` namespace, hence this folder).
Before each batch goes to the launcher (basic, joblib, submitit_local, slurm), every job's config is
composed exactly as the job would compose it, and a job whose ``config_hash`` already has a FINISHED
run in the store is not launched: its output folder gets a ``skipped`` outcome, so the sweep's
closing screen still lists it. A re-run of a 1,000-job sweep with 990 finished submits 10 jobs.

Each job's config is composed once, here (Hydra's check that every job composes, before any runs),
and that config is what the skip check hashes and what a parallel sweep's worker runs (lossbench.workers).
The store is asked once per batch for the configs that FINISHED; with none, no job is hashed.

Each job keeps its own number (``hydra.job.num``, its output folder): launchers that can start jobs
under given numbers (joblib, lossbench's Slurm launcher) get them all at once; any other launcher
gets each run of consecutive numbers in turn.
"""

from __future__ import annotations

import copy
import logging
import shlex
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, open_dict, read_write

from lossbench import job, provenance, sweep
from lossbench.config import config_hash, validate
from lossbench.errors import ConfigError
from lossbench.job import job_output_dir, launcher_kind
from lossbench.workers import run_numbered

log = logging.getLogger("lossbench")

Job = tuple[int, Sequence[str]]  # (job number, its overrides)


class SkipFinishedSweeper(BasicSweeper):
    """Hydra's basic sweeper whose launcher never receives a job whose identical config already FINISHED.

    ``+hydra.sweeper.groups=["loss=mae optimizer.lr=0.001 seed=range(3,9)", "loss=ce ..."]`` sweeps those
    groups instead of every combination: each group is its own small sweep (Hydra's override syntax), combined
    with the sweep's other keys; a key a group sets is dropped from the combinations. It is how a report's
    extension asks for more seeds of just the undecided losses, each at its own tuned setting.
    """

    def __init__(self, max_batch_size: int | None = None, params: dict | None = None, groups: list | None = None):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.groups = [str(g) for g in groups or []]

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        if not self.groups:
            return BasicSweeper.split_arguments(overrides, max_batch_size)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        groups = [parser.parse_overrides(shlex.split(group)) for group in self.groups]
        keys = {o.get_key_element() for group in groups for o in group}
        base = [o for o in overrides if o.get_key_element() not in keys]
        jobs: list[list[str]] = []
        for group in groups:
            (combinations,) = BasicSweeper.split_arguments([*base, *group], None)
            jobs.extend(c for c in combinations if c not in jobs)  # a group listed twice runs once
        size = max_batch_size or len(jobs) or 1
        return [jobs[i : i + size] for i in range(0, len(jobs), size)]

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = SkippingLauncher(self.launcher, hydra_context, config)

    def sweep(self, arguments: list[str]) -> Any:
        """Every job's config composed and checked (lossbench.config's rules, as train checks one run) before the
        sweep opens: one refused job is one line and exit 2, with no parent run and no job started."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        jobs = [tuple(j) for batch in self.split_arguments(overrides, None) for j in batch]
        self.validate_batch_is_legal(jobs)
        refused = [(j, e) for j in jobs if (e := refusal(self.launcher.composed[j])) is not None]
        if refused:
            raise ConfigError(refused_jobs(jobs, refused))
        sweep.begin()
        return super().sweep(arguments)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Hydra's check (every job's config composes) done once per job: the launcher reuses the configs."""
        for overrides in batch:
            if tuple(overrides) not in self.launcher.composed:
                self.launcher.composed[tuple(overrides)] = self.hydra_context.config_loader.load_sweep_config(
                    self.config, list(overrides)
                )


class SkippingLauncher:
    """Wraps a Hydra launcher: ``launch`` leaves out finished configs and launches the rest under their own numbers."""

    def __init__(self, inner, hydra_context, config: DictConfig):
        self.inner, self.hydra_context, self.config = inner, hydra_context, config
        self.composed: dict[tuple[str, ...], DictConfig] = {}  # overrides -> config, filled by the sweeper's check
        self.finished: dict[tuple[str, str], dict] = {}  # (store, experiment) -> sweep.finished_configs
        self.other_code = {"reused": 0, "run again": 0}  # jobs whose FINISHED runs were made by other code
        self.batches = 0

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        jobs = list(enumerate(job_overrides, initial_job_idx))
        configs = {num: self.job_config(num, overrides) for num, overrides in jobs}
        self.finished.clear()  # asked again for every batch: an earlier batch may have finished some
        self.other_code = dict.fromkeys(self.other_code, 0)
        self.batches += 1
        skipped = {
            num: ret for num, overrides in jobs if (ret := self.skip_if_finished(configs[num], overrides)) is not None
        }
        todo = [(num, overrides) for num, overrides in jobs if num not in skipped]
        if skipped:
            log.info(
                "%d of %d jobs skipped before launch: their config already FINISHED (tracking.skip_finished=false runs them again)",
                len(skipped),
                len(jobs),
            )
        if any(self.other_code.values()):
            log.warning(
                "jobs whose config FINISHED before by other code (not this lossbench.code_version %s): %d reused "
                "(tracking.reuse=any_code), %d run again (tracking.reuse=same_code)",
                provenance.code().code_version,
                self.other_code["reused"],
                self.other_code["run again"],
            )
        launched = dict(zip([num for num, _ in todo], launch_numbered(self.inner, todo, configs)))
        return [skipped[num] if num in skipped else launched[num] for num, _ in jobs]

    def job_config(self, num: int, overrides: Sequence[str]) -> DictConfig:
        """The job's config as the sweeper's check composed it (composed now if it did not), with its number set."""
        cfg = self.composed.pop(tuple(overrides), None)
        if cfg is None:
            return job_config(self.hydra_context, self.config, num, overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = num
        return cfg

    def skip_if_finished(self, cfg: DictConfig, overrides: Sequence[str]) -> JobReturn | None:
        """A ``skipped`` JobReturn (outcome written) when this job's config FINISHED before, else None."""
        if cfg.tracking.get("skip_finished") is False:
            return None
        key = (cfg.tracking.uri, cfg.tracking.experiment)
        if key not in self.finished:  # one question per store and batch, not one per job
            opened = sweep.opened() if self.batches == 1 else None  # the first batch: what open_sweep found
            same = opened is not None and tuple(opened["store"]) == key
            self.finished[key] = opened["finished"] if same else sweep.finished_configs(tracker_of(cfg))
        if not self.finished[key] or (done := self.finished[key].get(task_hash(cfg))) is None:
            return None
        current = provenance.code().code_version
        chosen = provenance.reused([made_by for _, _, made_by in done], current, cfg.tracking.reuse)
        if chosen is None or done[chosen][2] != current:
            self.other_code["run again" if chosen is None else "reused"] += 1
        if chosen is None:
            return None
        run_id, objective, _ = done[chosen]
        job_dir = job_output_dir(cfg)
        job.write_outcome(job_dir, "skipped", run_id, objective, None, list(overrides))
        ret = JobReturn(
            overrides=list(overrides), cfg=cfg, hydra_cfg=cfg, working_dir=str(job_dir), task_name=cfg.hydra.job.name
        )
        ret.status, ret.return_value = JobStatus.COMPLETED, objective
        return ret

    def __getattr__(self, name: str):  # everything else is the wrapped launcher's
        return getattr(self.inner, name)


def refusal(cfg: DictConfig) -> ConfigError | None:
    """What :func:`lossbench.config.validate` says against a job's config, or None when it passes."""
    try:
        validate(cfg)
    except ConfigError as e:
        return e
    return None


def refused_jobs(jobs: Sequence[Sequence[str]], refused: Sequence[tuple[Sequence[str], ConfigError]]) -> str:
    """One line for the refused jobs of a sweep: how many, and the first one by the overrides it sweeps."""
    keys = [{o.partition("=")[0]: o for o in j} for j in jobs]
    swept = {k for k in keys[0] if len({j.get(k) for j in keys}) > 1}
    first, error = refused[0]
    label = " ".join(o for o in first if o.partition("=")[0] in swept) or " ".join(first)
    return f"{len(refused)} of the sweep's {len(jobs)} jobs refused, the first ({label}): {error}"


def job_config(hydra_context, config: DictConfig, num: int, overrides: Sequence[str]) -> DictConfig:
    """A job's config as its launcher composes it (Hydra's node included), with its number set."""
    cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(cfg.hydra.job):
        cfg.hydra.job.num = num
    return cfg


def task_hash(cfg: DictConfig) -> str:
    """lossbench's ``config_hash`` of a job's config, taken as the task receives it (without Hydra's node)."""
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return config_hash(task)


_trackers: dict[tuple[str, str], Any] = {}


def tracker_of(cfg: DictConfig):
    """One connected Tracker per (store, experiment) for the sweep's own process."""
    from lossbench.store import Tracker  # MLflow: only when a batch asks the store what FINISHED

    key = (cfg.tracking.uri, cfg.tracking.experiment)
    if key not in _trackers:
        _trackers[key] = Tracker.connect(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.timeout_s)
    return _trackers[key]


def launch_numbered(launcher, jobs: list[Job], configs: dict[int, DictConfig]) -> list[JobReturn]:
    """Launch ``jobs`` under their own numbers (the parallel launcher's workers get their composed ``configs``); JobReturns in order."""
    if not jobs:
        return []
    if hasattr(launcher, "launch_numbered"):  # lossbench's Slurm launcher
        return launcher.launch_numbered(jobs)
    if launcher_kind(launcher) == "joblib":
        return run_numbered(launcher, jobs, configs)
    returns: list[JobReturn] = []
    for _, run in groupby(enumerate(jobs), key=lambda item: item[1][0] - item[0]):  # runs of consecutive numbers
        run = [job for _, job in run]
        returns.extend(launcher.launch([overrides for _, overrides in run], initial_job_idx=run[0][0]))
    return returns
