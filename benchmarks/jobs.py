"""Whole jobs: start-up to the first step, peak memory, the per-job overhead outside the epochs, and the
README's 30-job sweep as typed, before and after."""

from __future__ import annotations

import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.settings import (
    BARE_IMPORT,
    FIRST_STEP_ENV,
    JOB_OVERHEAD_TARGET_S,
    MEMORY_TARGET_MB,
    REPO,
    STARTUP_TARGET,
    SWEEP_AS_TYPED,
    SWEEP_BEFORE_OVERRIDES,
    SWEEP_TARGET,
    Settings,
)
from benchmarks.spawn import child_env, spawn, tail
from lossbench.paths import compose


def measure_startup(settings: Settings, tmp: Path, model: str) -> dict[str, Any]:
    """Bare import of the heavy libraries vs a ``python -m lossbench.train`` job up to its first training step.

    Both are fresh processes timed from just before spawn. The tracking store exists already (as it
    does for every run after a project's first); each job runs to the end, so its peak RSS is also
    the memory of one whole job.
    """
    env = child_env(tmp)
    log = tmp / "startup.log"
    bare = []
    for _ in range(settings.reps):
        ran = spawn([sys.executable, "-c", BARE_IMPORT], log, env, tmp)
        if ran.rc != 0:
            raise RuntimeError(f"bare import failed (exit {ran.rc}):\n{tail(log)}")
        bare.append(ran.wall_s)
    jobs, first_steps = [], []
    fresh = not (tmp / "mlflow.db").exists()
    for i in range(settings.reps + (1 if fresh else 0)):
        mark = tmp / f"first-step-{i}.txt"
        mark.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "benchmarks.first_step", *settings.job_overrides(model, tmp, f"startup-{i}")]
        ran = spawn(cmd, log, {**env, FIRST_STEP_ENV: str(mark)}, tmp)
        if ran.rc != 0 or not mark.is_file():
            raise RuntimeError(f"lossbench job failed (exit {ran.rc}) or wrote no first-step mark:\n{tail(log)}")
        job = {
            "first_step_s": round(float(mark.read_text()) - ran.started, 3),
            "wall_s": round(ran.wall_s, 3),
            "max_rss_mb": round(ran.max_rss_mb, 1),
            "store": "fresh" if fresh and i == 0 else "existing",
        }
        jobs.append(job)
        if job["store"] == "existing":
            first_steps.append(job["first_step_s"])
    notes = ["the first job created the tracking store; it is reported but not in the median"] if fresh else []
    if not first_steps:
        first_steps = [j["first_step_s"] for j in jobs]
    bare_median, first_median = statistics.median(bare), statistics.median(first_steps)
    method = "python -m benchmarks.first_step: lossbench.train's @hydra.main and run(), plus a first-step callback passed to run()"
    return {
        "model": model,
        "method": method,
        "bare_import_cmd": f"{sys.executable} -c {shlex.quote(BARE_IMPORT)}",
        "bare_import_s": [round(b, 3) for b in bare],
        "bare_import_median_s": round(bare_median, 3),
        "first_step_s": first_steps,
        "first_step_median_s": round(first_median, 3),
        "ratio": round(first_median / bare_median, 3),
        "target": STARTUP_TARGET,
        "jobs": jobs,
        "notes": notes,
    }


def measure_memory(settings: Settings, tmp: Path, model: str, startup: dict[str, Any] | None) -> dict[str, Any]:
    """Peak RSS of one real job (``python -m lossbench.train``, one epoch, to its end): the start-up jobs', else one of its own."""
    if startup and startup.get("jobs"):
        peaks = [j["max_rss_mb"] for j in startup["jobs"]]
        source = "the start-up section's jobs (wait4 ru_maxrss of each child)"
    else:
        log = tmp / "memory.log"
        ran = spawn(
            [sys.executable, "-m", "lossbench.train", *settings.job_overrides(model, tmp, "memory")],
            log,
            child_env(tmp),
            tmp,
        )
        if ran.rc != 0:
            raise RuntimeError(f"lossbench job failed (exit {ran.rc}):\n{tail(log)}")
        peaks, source = [round(ran.max_rss_mb, 1)], "one job of its own (wait4 ru_maxrss)"
    return {
        "model": model,
        "max_rss_mb": max(peaks),
        "jobs_max_rss_mb": peaks,
        "source": source,
        "target_mb": MEMORY_TARGET_MB,
    }


def gpu_present() -> bool:
    """Cheap check before spending a child process on the GPU section (the child asks torch itself)."""
    return Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()


def job_marks():
    """A Lightning callback marking the first epoch's start, the end of training and each test's end."""
    import pytorch_lightning as pl

    class JobMarks(pl.Callback):
        def __init__(self):
            self.first_epoch = self.train_end = None
            self.test_ends: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.first_epoch = self.first_epoch or time.perf_counter()

        def on_train_end(self, trainer, pl_module) -> None:
            self.train_end = time.perf_counter()

        def on_test_end(self, trainer, pl_module) -> None:
            self.test_ends.append(time.perf_counter())

    return JobMarks()


def time_overhead(settings: Settings, model: str, tmp: Path) -> dict[str, Any]:
    """One-epoch jobs (figures on) one after another in this process, as a joblib worker runs them (each
    job's config composed before it, its figures logged in the background while the next job starts): the
    first warms the imports up and is not counted; for the others, the wall time outside the epochs."""
    from lossbench import run_figures

    overrides = [o for o in settings.job_overrides(model, tmp, "overhead") if not o.startswith("hydra.")]
    with run_figures.in_background():  # as lossbench.workers sets up a worker: figures logged after each job
        jobs = [_overhead_job(overrides, i) for i in range(1 + settings.reps)]
        waited = time.perf_counter()
        run_figures.finish_pending()  # the last job's figures, as a worker waits for them before it exits
    measured = [j for j in jobs if not j["warm_up"]]
    measured[-1]["figures_after_last_s"] = time.perf_counter() - waited
    return {
        "model": model,
        "jobs": jobs,
        **{
            f"{k}_median": statistics.median(j[k] for j in measured)
            for k in ("overhead_s", "setup_s", "tests_s", "record_s", "epochs_s")
        },
    }


def _overhead_job(overrides: list[str], i: int) -> dict[str, Any]:
    """One timed job of :func:`time_overhead` (job 0 warms the process up and is not counted)."""
    from lossbench.train import run

    marks = job_marks()
    cfg = compose(*overrides, f"seed={i}")  # a worker receives its job's config composed by the sweep
    started = time.perf_counter()
    run(cfg, extra_callbacks=[marks])
    ended = time.perf_counter()
    epochs = marks.train_end - marks.first_epoch
    return {
        "wall_s": ended - started,
        "epochs_s": epochs,
        "overhead_s": ended - started - epochs,
        "setup_s": marks.first_epoch - started,
        "tests_s": marks.test_ends[-1] - marks.train_end,
        "record_s": ended - marks.test_ends[-1],
        "warm_up": i == 0,
    }


def sweep_command(settings: Settings, tmp: Path, name: str, extra: list[str]) -> list[str]:
    """The README's sweep as typed, plus one epoch, the data, and a store and folders of its own."""
    return [
        sys.executable,
        "-m",
        "lossbench.train",
        *SWEEP_AS_TYPED,
        "trainer.max_epochs=1",
        f"data={settings.data}",
        f"data.root={settings.root}",
        "data.download=false",
        f"tracking.uri=sqlite:///{tmp}/{name}.db",
        f"tracking.checkpoint_dir={tmp}/{name}-ckpt",
        f"hydra.sweep.dir={tmp}/{name}-multirun",
        *settings.data_overrides,
        *extra,
    ]


def source_at(rev: str, tmp: Path) -> Path:
    """The project's files at git revision ``rev``, unpacked (and byte-compiled) under ``tmp``."""
    dest = tmp / f"source-{rev}"
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest / "lossbench")], check=True)
    return dest


def run_sweep(cmd: list[str], tmp: Path, name: str, env: dict[str, str]) -> dict[str, Any]:
    """Run one sweep to its end; its wall time and how much of it went into training epochs."""
    from mlflow.tracking import MlflowClient

    log = tmp / f"{name}.log"
    ran = spawn(cmd, log, env, tmp)
    if ran.rc != 0:
        raise RuntimeError(f"sweep {name} failed (exit {ran.rc}):\n{tail(log)}")
    client = MlflowClient(f"sqlite:///{tmp}/{name}.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = [
        r for r in client.search_runs(experiments, max_results=5000) if r.data.tags.get("lossbench.kind") == "train"
    ]
    epochs = sorted(m.value for r in runs for m in client.get_metric_history(r.info.run_id, "time/epoch_s"))
    return {
        "command": shlex.join(cmd),
        "jobs": len(runs),
        "finished": sum(r.info.status == "FINISHED" for r in runs),
        "wall_s": round(ran.wall_s, 3),
        "sum_epoch_s": round(sum(epochs), 3),
        "threads": sorted({r.data.tags.get("threads") for r in runs}),
        "epoch_s_median": round(statistics.median(epochs), 3) if epochs else None,
        "max_rss_mb": round(ran.max_rss_mb, 1),
    }


def measure_sweep(settings: Settings, tmp: Path) -> dict[str, Any]:
    """The README's 30-job sweep, one epoch each: "before" (``--before-rev``'s code as typed, else today's code
    with ``hydra/launcher=basic optimizer.fused=false``), then "after" (today's code as typed)."""
    env = child_env(tmp)
    if settings.before_rev:
        source = source_at(settings.before_rev, tmp)
        before_env = {**env, "PYTHONPATH": str(source)}
        before = run_sweep(sweep_command(settings, tmp, "sweep-before", []), tmp, "sweep-before", before_env)
        before["code"] = f"git revision {settings.before_rev} (as typed; PYTHONPATH={source})"
    else:
        before = run_sweep(
            sweep_command(settings, tmp, "sweep-before", SWEEP_BEFORE_OVERRIDES), tmp, "sweep-before", env
        )
        before["code"] = f"this checkout with {' '.join(SWEEP_BEFORE_OVERRIDES)}"
    after = run_sweep(sweep_command(settings, tmp, "sweep-after", []), tmp, "sweep-after", env)
    after["code"] = "this checkout, as typed"
    ratio = after["wall_s"] / before["wall_s"]
    return {
        "before": before,
        "after": after,
        "ratio": round(ratio, 3),
        "target": SWEEP_TARGET,
        "pass": None if settings.smoke else ratio <= SWEEP_TARGET,
    }


def overhead_verdict(overhead: dict[str, Any], smoke: bool) -> bool | None:
    return None if smoke else overhead["overhead_s_median"] <= JOB_OVERHEAD_TARGET_S
