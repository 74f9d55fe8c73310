"""What every job knows about itself and the sweep it belongs to: one low floor, imported downward.

``lossbench.train`` (a run), ``lossbench.sweep`` (the Hydra callback around a sweep), ``lossbench.workers``
(the parallel launcher's processes), ``lossbench.gpus`` and the Hydra plugins all ask the same questions:
am I in a sweep, which launcher runs me, how many torch threads may I take, where does my outcome go, which
tags tie my run to the sweep, what do I import. The answers live here, from Hydra's runtime config and the
environment the sweep sets; nothing here imports torch, MLflow or another lossbench module but the
vocabulary (:mod:`lossbench.names`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from lossbench.names import PARENT_RUN_TAG, SWEEP_JOB_TAG, SWEEP_TAG

SWEEP_ID_ENV = "LOSSBENCH_SWEEP_ID"
PARENT_RUN_ENV = "LOSSBENCH_SWEEP_PARENT_RUN"
OUTCOME_FILE = "lossbench_outcome.json"
OUTCOMES = ("finished", "failed", "killed", "skipped")
"""How a sweep's job can end, as its outcome file says (``skipped``: its config had FINISHED before)."""

# ----------------------------------------------------------------------------------- launchers

LAUNCHERS = {
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher": "basic",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher": "joblib",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": "submitit",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": "submitit",
    "hydra_plugins.lossbench.slurm.SlurmLauncher": "submitit",
}
"""Hydra launcher class -> its kind: ``basic`` (one job at a time, in this process), ``joblib`` (parallel
worker processes on this machine: lossbench.workers), ``submitit`` (one process per job, given its CPUs:
submitit_local, Slurm). Any other launcher is ``other``."""


def launcher_kind(launcher: Any) -> str:
    """The kind of a launcher: its config node (``hydra.launcher``), its ``_target_`` or the launcher itself."""
    if isinstance(launcher, str):
        target = launcher
    elif hasattr(launcher, "get") and callable(launcher.get):
        target = str(launcher.get("_target_", ""))
    else:
        target = f"{type(launcher).__module__}.{type(launcher).__qualname__}"
    return LAUNCHERS.get(target, "other")


def in_sweep() -> bool:
    """True inside a job of a multirun (``python -m lossbench.train -m ...``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_launcher_kind() -> str | None:
    """This job's launcher kind (:func:`launcher_kind`), or None outside a sweep."""
    return launcher_kind(HydraConfig.get().launcher) if in_sweep() else None


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job() -> int:
    """Torch threads for this job: cores / parallel jobs, so jobs x threads never exceeds the cores."""
    cores = available_cores()
    kind = sweep_launcher_kind()
    if kind is None:
        return cores
    launcher = HydraConfig.get().launcher
    if kind == "submitit" and launcher.get("cpus_per_task"):  # what the scheduler gave us
        return max(1, min(cores, int(launcher.cpus_per_task)))
    n_jobs = parallel_workers(launcher.get("n_jobs")) if kind == "joblib" else 1
    return max(1, cores // n_jobs)


def parallel_workers(n_jobs: int | None) -> int:
    """How many jobs the parallel launcher runs at once (its worker processes, lossbench.workers) for its
    ``n_jobs``, as joblib reads it: a positive number as is, -1 every core, -k all cores but k - 1; null 1."""
    if n_jobs is None:
        return 1
    n_jobs = int(n_jobs)
    return n_jobs if n_jobs >= 1 else max(1, available_cores() + 1 + n_jobs)


_scratch: list[tempfile.TemporaryDirectory] = []  # outside Hydra: one folder holding this process's runs' folders
_run_dirs: list[Path] = []  # outside Hydra: the output folder of each run this process started, the current last


def new_output_dir() -> None:
    """Outside Hydra (tests, notebooks, the benchmark): give the run about to start its own output folder, inside
    one temporary folder of this process that is removed when the process exits (what a run writes there, its
    figures and resolved config, is on the run in MLflow by then). Under Hydra each job has Hydra's."""
    if HydraConfig.initialized():
        return
    if not _scratch or not os.path.isdir(_scratch[0].name):  # none yet, or removed with the folder it was made in
        _scratch[:] = [tempfile.TemporaryDirectory(prefix="lossbench-")]
    folder = Path(_scratch[0].name) / f"run-{len(_run_dirs)}"
    folder.mkdir()
    _run_dirs.append(folder)


def output_dir() -> str:
    """This job's output folder: Hydra's, or outside Hydra the current run's (:func:`new_output_dir`)."""
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.output_dir
    if not _run_dirs:
        new_output_dir()
    return str(_run_dirs[-1])


def job_output_dir(cfg: Any) -> Path:
    """Where a sweep job with this composed config (Hydra's node included) writes: ``hydra.sweep.dir/hydra.sweep.subdir``."""
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def job_number() -> int | None:
    """This job's number in its sweep (its output folder), or None outside a sweep."""
    return int(HydraConfig.get().job.num) if in_sweep() else None


def sweep_tags() -> dict[str, str]:
    """Tags tying a job's run to its sweep and parent run (empty outside a sweep)."""
    if not in_sweep():
        return {}
    sweep_id = (
        os.environ.get(SWEEP_ID_ENV)
        or hashlib.sha256(str(Path(HydraConfig.get().sweep.dir).resolve()).encode()).hexdigest()[:10]
    )
    found = {SWEEP_TAG: sweep_id, SWEEP_JOB_TAG: str(HydraConfig.get().job.num)}
    if os.environ.get(PARENT_RUN_ENV):
        found[PARENT_RUN_TAG] = os.environ[PARENT_RUN_ENV]
    return found


# ------------------------------------------------------------------------------------- its log


class _Label(logging.Filter):
    """Prefixes every line of the ``lossbench`` logger with the job's run: parallel jobs' lines interleave."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"[{self.label}] {record.msg}"
        return True


def label_logs(label: str) -> None:
    """In a sweep, prefix this job's lines with ``label`` (its run's name once it has one); nothing outside one."""
    logger = logging.getLogger("lossbench")
    for old in [f for f in logger.filters if isinstance(f, _Label)]:
        logger.removeFilter(old)
    if in_sweep():
        logger.addFilter(_Label(label))


# ------------------------------------------------------------------------------------ outcomes


def record_outcome(
    status: str, run_id: str | None, objective: float | None, reason: str | None = None, **extra: Any
) -> None:
    """Leave this job's outcome in its output folder, for the sweep's closing screen (nothing outside a sweep);
    ``extra`` keys ride along (``resumed``: the job continued an interrupted run from its checkpoint)."""
    if not in_sweep():
        return
    hc = HydraConfig.get()
    write_outcome(Path(hc.runtime.output_dir), status, run_id, objective, reason, list(hc.overrides.task), **extra)


def write_outcome(
    job_dir: Path,
    status: str,
    run_id: str | None,
    objective: float | None,
    reason: str | None,
    overrides: list[str],
    **extra: Any,
) -> None:
    """A job's outcome (one of :data:`OUTCOMES`) in its output folder ``job_dir``; ``extra`` keys ride along."""
    if status not in OUTCOMES:
        raise ValueError(f"a job's outcome is one of {', '.join(OUTCOMES)}, not {status!r}")
    outcome = {
        "status": status,
        "run_id": run_id,
        "objective": objective,
        "reason": reason,
        "overrides": list(overrides),
        **extra,
    }
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    Path(job_dir, OUTCOME_FILE).write_text(json.dumps(outcome, default=str))


def read_outcome(job_dir: Path) -> dict[str, Any] | None:
    """The outcome a job left in ``job_dir``, or None when it left none (killed before it could)."""
    path = Path(job_dir, OUTCOME_FILE)
    return json.loads(path.read_text()) if path.is_file() else None


def read_outcomes(sweep_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(sweep_dir).glob(f"*/{OUTCOME_FILE}"))]


# --------------------------------------------------------------------------------- its run

_run_listeners: list[Callable[[str], None]] = []


def on_run_opened(listener: Callable[[str], None] | None) -> None:
    """Have ``listener(run_id)`` called whenever a job of this process opens (creates or reopens) its run; a
    worker of the parallel launcher tells its sweep that way, so a worker lost mid-job costs that run only
    (lossbench.pool_worker). None: nobody listens."""
    _run_listeners[:] = [] if listener is None else [listener]


def announce_run(run_id: str) -> None:
    """This job records into run ``run_id`` from now on (lossbench.train, as soon as the run exists)."""
    for listener in _run_listeners:
        listener(run_id)


# ------------------------------------------------------------------------------------- imports

JOB_MODULES = (
    "torch",
    "pytorch_lightning",
    "lossbench.callbacks",
    "lossbench.console",
    "lossbench.data",
    "lossbench.losses",
    "lossbench.module",
    "lossbench.preflight",
    "lossbench.store",
)
"""What a job imports beyond Hydra, once per process, with the collector paused (lossbench.process.import_heavy);
a sweep worker imports them before its first job (lossbench.workers)."""


def job_modules(tracking_uri: str) -> tuple[str, ...]:
    """:data:`JOB_MODULES` and the MLflow store module that a client of ``tracking_uri`` imports on connecting
    (SQLAlchemy's for a database, ~1.5 s of imports; the REST client's for a server)."""
    remote = str(tracking_uri).startswith(("http://", "https://"))
    return (*JOB_MODULES, "mlflow.store.tracking." + ("rest_store" if remote else "sqlalchemy_store"))
