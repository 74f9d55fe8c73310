"""The parallel launcher's worker processes: warm before the jobs, and a worker that dies costs one job.

A local multirun (``hydra/launcher=parallel``, the default, or ``joblib``) runs its jobs on a pool of
``n_jobs`` worker processes that lossbench owns (lossbench.pool; Hydra's joblib launcher is kept for
its config). Hydra would start workers only when the first job is handed out, each would then spend
seconds importing torch, Lightning and MLflow, and every job would compose its config again. Here:

- :func:`warm_up` starts the workers as the sweep starts: they import what a job needs, and one of them
  opens the sweep (creates the store and the parent run, lists what FINISHED, ends the runs whose process
  is gone: lossbench.sweep.open_sweep), while the sweep's own process composes the jobs' configs;
- :func:`run_numbered` hands each job to the next idle worker: its number, its config as the sweeper
  composed it, and the sweep's ``LOSSBENCH_*``/``MLFLOW_*`` environment as it is at launch;
- a worker lost mid-job (SIGKILL, the out-of-memory killer, a crash) costs that job only: its run ends
  KILLED with the reason (the signal, out of memory where the kernel says so, the job's peak memory
  against ``launch.job_memory_gb``), its outcome says ``killed``, a fresh worker takes its place and the
  sweep goes on; the other workers' jobs go on untouched. Re-running the sweep resumes the run.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from omegaconf import DictConfig, open_dict

from lossbench import job, run_figures
from lossbench.errors import describe
from lossbench.names import FAILURE_TAG, HOST_TAG, KIND_TRAIN, PID_TAG
from lossbench.pool import Kept, Pool, WorkerLost
from lossbench.process import import_heavy

log = logging.getLogger("lossbench")
_pool: list[Pool] = []  # this process's one sweep's workers
_warming: dict[str, Any] = {}  # the opener's call, while its answer has not been taken


def _warm(modules: tuple[str, ...], figures: bool) -> int:
    """In a worker, first: import ``modules``, what every job imports (the collector paused, then frozen:
    lossbench.process), and start the drawing process when runs draw figures (it imports matplotlib); its pid."""
    import_heavy(*modules)
    if figures:
        run_figures.drawer()  # started now: it imports matplotlib before the first job's figures
    run_figures.finish_in_background()  # a run's figures are logged while this worker's next job starts
    return os.getpid()


def start_pool(n_jobs: Any, tracking_uri: str, figures: bool) -> Pool:
    """The sweep's workers (``n_jobs`` as joblib reads it), each warming up first, replacements too."""
    _pool[:] = [Pool(job.parallel_workers(n_jobs), first=(_warm, (job.job_modules(tracking_uri), figures)))]
    return _pool[0]


def warm_up(config: DictConfig, opener=None, args: tuple = (), on_opened=None) -> bool:
    """Start the parallel launcher's workers; with ``opener``, one of them runs ``opener(*args)`` once warm
    (:func:`open_in_worker`). False (nothing started) for other launchers: the caller then opens the sweep itself."""
    launcher = config.hydra.launcher
    if job.launcher_kind(launcher) != "joblib":
        return False
    start_pool(launcher.get("n_jobs"), config.tracking.uri, bool(config.analysis.figures))
    if opener is not None:
        open_in_worker(opener, args, on_opened)
    return True


def open_in_worker(opener, args: tuple, on_opened) -> bool:
    """Run ``opener(*args)`` in the first worker once it is warm; its answer goes to ``on_opened`` in this process
    (:func:`wait_for_warm_up`). False when no workers were started: the caller then opens the sweep itself."""
    if not _pool:
        return False
    pool = _pool[0]
    _warming.clear()
    _warming.update(opener=opener, args=args, on_opened=on_opened, answer=pool.submit(pool.workers[0], opener, *args))
    return True


def wait_for_warm_up() -> None:
    """Block until the workers are warm and the sweep is open; if opening it failed there (or its worker died),
    open it in this process (so that its error is raised here)."""
    if "answer" not in _warming:
        return
    pool, answer = _pool[0], _warming["answer"]
    pool.wait([answer, *(w.first for w in pool.workers if w.first is not None)])
    warming = dict(_warming)
    _warming.clear()
    try:
        opened = answer.result().value
    except Exception as e:
        log.warning("opening the sweep in a worker failed (%s); opening it in this process", e)
        opened = warming["opener"](*warming["args"])
    warming["on_opened"](opened)
    for worker in pool.workers:
        if worker.first is not None and worker.first.exception() is not None:
            log.warning(
                "worker %d could not import what a job needs: %s", worker.pid, describe(worker.first.exception())
            )
    warm = [w.pid for w in pool.workers if w.first is not None and w.first.exception() is None]
    log.info("workers %s started and imported while the sweep started", ", ".join(map(str, warm)))


def shut_down() -> None:
    """End the sweep's workers once every job is done: each logs its last runs' figures, then exits."""
    wait_for_warm_up()  # the sweep's opening is taken first (a sweep whose jobs all skipped may not have)
    if _pool:
        _pool.pop().close()


def _import_report_modules() -> None:
    import_heavy("lossbench.report.build")  # MLflow, matplotlib, scipy: seconds the sweep's end no longer waits
    run_figures.drawer()  # started now: the report draws some of its figures there


def sweep_environment() -> dict[str, str]:
    """The sweep's settings that jobs read from the environment (sweep id, parent run, store, job count)."""
    return {k: v for k, v in os.environ.items() if k.startswith(("LOSSBENCH_", "MLFLOW_"))}


def execute(num: int, sweep_config: DictConfig, environment: dict[str, str], hydra: tuple):
    """In a worker: hydra_joblib_launcher's ``execute_job``, with the job's config composed once, by the sweeper.
    ``hydra``: (Hydra's context, the task function, Hydra's singletons), sent to each worker once."""
    hydra_context, task_function, singleton_state = hydra
    os.environ.update(environment)
    setup_globals()
    Singleton.set_state(singleton_state)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{num}"
        sweep_config.hydra.job.num = num
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def run_numbered(launcher, jobs: list[tuple[int, Sequence[str]]], composed: dict[int, DictConfig]) -> list:
    """Run ``(number, overrides)`` jobs on the workers, each on its ``composed`` config (the sweeper composed
    every job's); JobReturns in the same order. A job whose worker died returns NaN; its outcome says why."""
    setup_globals()
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    wait_for_warm_up()
    pool = _pool[0] if _pool else start_pool(launcher.joblib.get("n_jobs"), *_tracking(composed))
    # While the workers train, this process would only wait: it imports what the sweep's report needs now.
    threading.Thread(target=_import_report_modules, name="lossbench-import-report", daemon=True).start()
    log.info("%d workers are running %d job%s", pool.size, len(jobs), "" if len(jobs) == 1 else "s")
    pool.keep("hydra", (launcher.hydra_context, launcher.task_function, Singleton.get_state()))
    environment, returns = sweep_environment(), {}

    def answered(num: int, future: Future) -> None:
        returns[num] = job_answered(num, composed[num], future)

    def lost(num: int, error: WorkerLost) -> None:
        returns[num] = job_lost(num, composed[num], error)

    pool.map(
        [(num, execute, (num, composed[num], environment, Kept("hydra"))) for num, _ in jobs],
        answered,
        lost,
    )
    return [returns[num] for num, _ in jobs]


def _tracking(composed: dict[int, DictConfig]) -> tuple[str, bool]:
    cfg = next(iter(composed.values()))
    return cfg.tracking.uri, bool(cfg.analysis.figures)


def ended_return(cfg: DictConfig) -> JobReturn:
    """The JobReturn of a job that left no answer of its own: NaN, so the sweep goes on; its outcome says why."""
    ret = JobReturn(
        overrides=list(cfg.hydra.overrides.task),
        cfg=cfg,
        hydra_cfg=cfg,
        working_dir=str(job.job_output_dir(cfg)),
        task_name=cfg.hydra.job.name,
    )
    ret.status, ret.return_value = JobStatus.COMPLETED, math.nan
    return ret


def memory_note(peak_bytes: int | None, job_memory_gb: float) -> str | None:
    """``peak 2.10 GB > launch.job_memory_gb=1.5: raise it or lower launch.max_jobs`` when the job's peak went
    over what the launcher assumed when it chose how many jobs run at once; None otherwise."""
    if peak_bytes is None or peak_bytes / 2**30 <= job_memory_gb:
        return None
    return f"peak {peak_bytes / 2**30:.2f} GB > launch.job_memory_gb={job_memory_gb}: raise it or lower launch.max_jobs"


def lost_reason(error: WorkerLost, job_memory_gb: float) -> str:
    """One line: what happened to the worker, what memory had to do with it, and how to go on."""
    over = memory_note(error.peak_bytes, job_memory_gb)
    details = [d for d in ("out of memory" if error.out_of_memory else None, over) if d]
    if error.out_of_memory and over is None and error.peak_bytes is not None:
        details.append(f"peak {error.peak_bytes / 2**30:.2f} GB, within launch.job_memory_gb={job_memory_gb}")
    what = f"worker {error.pid} killed by {error.signal_name}" if error.signal_name else str(error)
    details_text = f" ({'; '.join(details)})" if details else ""
    return f"{what}{details_text}; the same command resumes the job"


def job_lost(num: int, cfg: DictConfig, error: WorkerLost) -> JobReturn:
    """A job whose worker died: its run (the one it announced, else the RUNNING one its process owned) ends
    KILLED with the reason, and its outcome says killed — unless the job had finished before its worker died."""
    job_dir, overrides = job.job_output_dir(cfg), list(cfg.hydra.overrides.task)
    done = job.read_outcome(job_dir)
    if done is not None and done["status"] in ("finished", "skipped"):
        log.warning("job %d: %s after its run was recorded; nothing is lost", num, error)
        return ended_return(cfg)
    reason = lost_reason(error, cfg.launch.job_memory_gb)
    run_id = None
    try:
        run_id = end_lost_run(cfg, error, reason)
    except Exception as e:  # the store may be what is failing: the outcome below still says what happened
        log.error("job %d: its run could not be ended KILLED: %s", num, describe(e))
    job.write_outcome(
        job_dir,
        "killed",
        run_id,
        None,
        reason,
        overrides,
        pid=error.pid,
        signal=error.signal_name,
        returncode=error.returncode,
    )
    log.error("job %d (%s): %s; the sweep goes on", num, " ".join(overrides), reason)
    return ended_return(cfg)


def end_lost_run(cfg: DictConfig, error: WorkerLost, reason: str) -> str | None:
    """End KILLED the RUNNING run that the lost worker's job recorded into; its id (None: it had none yet)."""
    from lossbench.store import Tracker, tag_filter  # MLflow: imported by now (the report's modules); only on a loss

    tracker = Tracker.connect(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.timeout_s)
    if error.notes:
        run_id = error.notes[-1]
        if tracker.client.get_run(run_id).info.status != "RUNNING":
            return run_id
    else:  # killed between creating its run and saying so: the run names its process
        owned = tracker.runs(
            tag_filter(KIND_TRAIN, {HOST_TAG: socket.gethostname(), PID_TAG: str(error.pid)}), ["RUNNING"]
        )
        if not owned:
            return None
        run_id = owned[0].info.run_id
    tracker.end(run_id, "KILLED", reason)
    return run_id


def job_answered(num: int, cfg: DictConfig, future: Future) -> JobReturn:
    """A job's JobReturn from its worker's answer; a job that used more memory than the launcher assumed says so."""
    try:
        answer = future.result()
    except BaseException as e:  # raised outside the task (Ctrl-C in the worker, Hydra itself): the job failed
        if job.read_outcome(job.job_output_dir(cfg)) is None:
            reason = describe(e)
            job.write_outcome(job.job_output_dir(cfg), "failed", None, None, reason, list(cfg.hydra.overrides.task))
        return ended_return(cfg)
    over = memory_note(answer.peak_bytes, cfg.launch.job_memory_gb)
    if over is not None:
        log.warning("job %d: %s", num, over)
        outcome = job.read_outcome(job.job_output_dir(cfg))
        if outcome is not None and outcome["status"] == "failed":
            _add_to_failure(cfg, outcome, answer.notes[-1] if answer.notes else None, over)
    return answer.value


def _add_to_failure(cfg: DictConfig, outcome: dict, run_id: str | None, note: str) -> None:
    """A failed job's reason, on its outcome and its run ``run_id``, gains ``note`` (its memory went over the
    budget)."""
    reason = f"{outcome['reason']} ({note})"
    extra = {k: v for k, v in outcome.items() if k not in ("status", "run_id", "objective", "reason", "overrides")}
    job.write_outcome(
        job.job_output_dir(cfg),
        "failed",
        outcome["run_id"],
        outcome["objective"],
        reason,
        outcome["overrides"],
        **extra,
    )
    if run_id is not None:
        from lossbench.store import Tracker  # MLflow: imported by now (the report's modules); only for such a job

        tracker = Tracker.connect(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.timeout_s)
        tracker.set_tags(
            run_id, {FAILURE_TAG: f"{tracker.client.get_run(run_id).data.tags.get(FAILURE_TAG, '')} ({note})"[:5000]}
        )
