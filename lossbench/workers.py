"""The parallel launcher's worker processes: started while the sweep starts, given configs already composed.

A local multirun (``hydra/launcher=parallel`` or ``joblib``) runs its jobs in loky worker processes.
Hydra would start them only when the first job is handed out, and each then spends seconds importing
torch, Lightning and MLflow; every job would also compose its config again. Here:

- :func:`warm_up` starts the workers (the same joblib executor the jobs will use) in a background
  thread: they import what a job needs, and one of them opens the sweep (creates the store and the
  parent run, lists what FINISHED: lossbench.sweep.open_sweep), while the sweep's own process composes
  the jobs' configs;
- :func:`run_numbered` hands each job its number, its config as the sweeper composed it, and the
  sweep's ``LOSSBENCH_*``/``MLFLOW_*`` environment as it is at launch (the workers started earlier).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from lossbench import job, run_figures
from lossbench.process import import_heavy

log = logging.getLogger("lossbench")
_warming: dict[str, Any] = {}  # the warm-up thread and what it found (this process's one sweep)


def joblib_args(launcher_options: dict[str, Any]) -> dict[str, Any]:
    """``joblib.Parallel`` keywords from the launcher's options, as hydra_joblib_launcher derives them (loky)."""
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg  # joblib: a parallel sweep's process only

    args = {k: v for k, v in launcher_options.items() if k != "_target_"}
    args["backend"] = "loky"
    process_joblib_cfg(args)
    return args


def _warm(modules: tuple[str, ...], figures: bool, opener=None, args: tuple = ()) -> tuple[int, Any]:
    """In a worker: import ``modules``, what every job imports (the collector paused, then frozen:
    lossbench.process), start the drawing process when runs draw figures (it imports matplotlib), then run
    ``opener(*args)`` if given; (pid, the opener's answer)."""
    import_heavy(*modules)
    if figures:
        run_figures.drawer()  # started now: it imports matplotlib before the first job's figures
    run_figures.finish_in_background()  # a run's figures are logged while this worker's next job starts
    return os.getpid(), opener(*args) if opener is not None else None


def warm_up(config: DictConfig, opener, args: tuple, on_opened) -> bool:
    """Start the joblib launcher's workers in the background: each imports what a job needs, and one of them
    runs ``opener(*args)``, whose answer goes to ``on_opened`` in this process. False (nothing started) for
    other launchers: the caller then opens the sweep itself."""
    launcher = config.hydra.launcher
    if job.launcher_kind(launcher) != "joblib":
        return False
    parallel_args = joblib_args(OmegaConf.to_container(launcher, resolve=True))

    def start() -> None:
        from joblib import Parallel, delayed  # joblib (loky): only a parallel sweep's own process needs it

        n = parallel_args.get("n_jobs") or 1
        setup = (job.job_modules(config.tracking.uri), bool(config.analysis.figures))
        tasks = [delayed(_warm)(*setup, opener, args)] + [delayed(_warm)(*setup) for _ in range(n - 1)]
        try:
            answers = Parallel(**parallel_args)(tasks)
        except Exception as e:  # opened again in this process by wait_for_warm_up, which then raises it plainly
            _warming["error"] = e
            return
        _warming["pids"] = sorted({pid for pid, _ in answers})
        on_opened(answers[0][1])

    _warming.clear()
    _warming.update(opener=opener, args=args, on_opened=on_opened)
    _warming["thread"] = threading.Thread(target=start, name="lossbench-warm-workers", daemon=True)
    _warming["thread"].start()
    return True


def wait_for_warm_up() -> None:
    """Block until the warm-up is over; if it failed, open the sweep here (so its error is raised here)."""
    thread = _warming.get("thread")
    if thread is None:
        return
    thread.join()
    if "error" in _warming:
        log.warning("warming the workers up failed (%s); opening the sweep in this process", _warming.pop("error"))
        _warming["on_opened"](_warming["opener"](*_warming["args"]))
    elif "pids" in _warming:
        log.info("workers %s started and imported while the sweep started", ", ".join(map(str, _warming.pop("pids"))))
    _warming.pop("thread")


def _import_report_modules() -> None:
    import_heavy("lossbench.report.build")  # MLflow, matplotlib, scipy: seconds the sweep's end no longer waits
    run_figures.drawer()  # started now: the report draws some of its figures there


def sweep_environment() -> dict[str, str]:
    """The sweep's settings that jobs read from the environment (sweep id, parent run, store, job count)."""
    return {k: v for k, v in os.environ.items() if k.startswith(("LOSSBENCH_", "MLFLOW_"))}


def execute(
    num: int,
    sweep_config: DictConfig,
    environment: dict[str, str],
    hydra_context,
    task_function,
    singleton_state: dict,
):
    """hydra_joblib_launcher's ``execute_job``, with the job's config composed once, by the sweeper."""
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
    """Run ``(number, overrides)`` jobs on the joblib launcher's workers, each on its ``composed`` config (the
    sweeper composed every job's); JobReturns in the same order."""
    from joblib import Parallel, delayed  # joblib (loky): only a parallel sweep's own process needs it

    setup_globals()
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    args = joblib_args(launcher.joblib)
    wait_for_warm_up()
    # While the workers train, this process would only wait: it imports what the sweep's report needs now.
    threading.Thread(target=_import_report_modules, name="lossbench-import-report", daemon=True).start()
    log.info("Joblib.Parallel(n_jobs=%s) is launching %d jobs", args.get("n_jobs"), len(jobs))
    state, environment = Singleton.get_state(), sweep_environment()
    return list(
        Parallel(**args)(
            delayed(execute)(num, composed[num], environment, launcher.hydra_context, launcher.task_function, state)
            for num, _ in jobs
        )
    )
