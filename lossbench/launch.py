"""How many jobs of a multirun run at once on this machine: the ``${lossbench.parallel_jobs:...}`` resolver.

``conf/hydra/launcher/parallel.yaml`` (the default launcher of ``python -m lossbench.train -m``) is
Hydra's joblib launcher with ``n_jobs`` set by :func:`parallel_jobs`, from the ``launch`` keys of
``conf/config.yaml``. The rule: never more jobs than cores (each job then runs
``cores // n_jobs`` torch threads, see :func:`lossbench.job.threads_per_job`), never more than the
available memory holds at ``launch.job_memory_gb`` per job, and on a GPU run
``launch.jobs_per_gpu`` jobs per visible GPU. ``hydra/launcher=basic`` runs jobs one at a time;
the Slurm launchers never read this.

The first answer is kept in ``$LOSSBENCH_PARALLEL_JOBS``, so the launcher and every job it starts
(which asks again to size its threads) agree even when free memory changes meanwhile.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from omegaconf import OmegaConf

from lossbench.job import available_cores

RESOLVER = "lossbench.parallel_jobs"
CHOSEN_ENV = "LOSSBENCH_PARALLEL_JOBS"
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def available_memory_gb() -> float | None:
    """Memory the kernel says new work can take without swapping (``MemAvailable``); None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        pass
    return None


def visible_gpus() -> int:
    """NVIDIA GPUs this process may use: ``$CUDA_VISIBLE_DEVICES`` when set, else the driver's list (no torch import)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def jobs_for(
    cores: int, memory_gb: float | None, gpus: int, job_memory_gb: float, jobs_per_gpu: int, max_jobs: int | None = None
) -> int:
    """Parallel jobs: ``gpus * jobs_per_gpu`` (or one per core without GPUs), capped by cores, memory and ``max_jobs``; at least 1."""
    if not job_memory_gb > 0:
        raise ValueError(f"launch.job_memory_gb must be a positive number of GiB, got {job_memory_gb!r}")
    if not (isinstance(jobs_per_gpu, int) and jobs_per_gpu >= 1):
        raise ValueError(f"launch.jobs_per_gpu must be a whole number >= 1, got {jobs_per_gpu!r}")
    if max_jobs is not None and not (isinstance(max_jobs, int) and max_jobs >= 1):
        raise ValueError(f"launch.max_jobs must be null or a whole number >= 1, got {max_jobs!r}")
    wanted = gpus * jobs_per_gpu if gpus else cores
    limits = [wanted, cores, max_jobs or wanted]
    if memory_gb is not None:
        limits.append(math.floor(memory_gb / job_memory_gb))
    return max(1, min(limits))


def parallel_jobs(accelerator: str, job_memory_gb: float, jobs_per_gpu: int, max_jobs: int | None = None) -> int:
    """The resolver: :func:`jobs_for` on this machine (GPUs count unless ``trainer.accelerator=cpu``), fixed once per sweep."""
    if os.environ.get(CHOSEN_ENV):
        return int(os.environ[CHOSEN_ENV])
    gpus = visible_gpus() if str(accelerator).lower() in GPU_ACCELERATORS else 0
    chosen = jobs_for(available_cores(), available_memory_gb(), gpus, job_memory_gb, jobs_per_gpu, max_jobs)
    os.environ[CHOSEN_ENV] = str(chosen)
    return chosen


def register() -> None:
    """Make ``${lossbench.parallel_jobs:...}`` known to OmegaConf (idempotent). Done when this module is imported:
    by lossbench.train (every process that runs a job or a sweep) and lossbench.paths.compose."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, parallel_jobs)


register()
