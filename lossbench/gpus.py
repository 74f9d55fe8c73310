"""One machine's GPUs shared by a sweep's parallel jobs (``hydra/launcher=joblib hydra.launcher.n_jobs=N``).

The machine has ``n_gpus * jobs_per_gpu`` slots; slot ``s`` is on GPU ``(s // jobs_per_gpu) % n_gpus``.
A job takes the first free slot from ``job_num % slots`` on (a lock file per slot, held until the job
ends), so jobs go to the GPUs in turn and a GPU never carries more than ``jobs_per_gpu`` of them
while a slot is free. With every slot taken (more parallel jobs than slots) a job shares its
preferred slot's GPU rather than wait. Slurm jobs need none of this: Slurm gives each its own GPU.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from lossbench import job

log = logging.getLogger("lossbench")

_held: list = []  # the open lock file of this process's slot, while its job runs


def gpu_of_slot(slot: int, n_gpus: int, jobs_per_gpu: int) -> int:
    """The GPU that slot ``slot`` runs on: ``jobs_per_gpu`` consecutive slots per GPU, GPUs in turn."""
    if n_gpus < 1 or jobs_per_gpu < 1:
        raise ValueError(f"need n_gpus >= 1 and jobs_per_gpu >= 1, got {n_gpus} and {jobs_per_gpu}")
    return (slot // jobs_per_gpu) % n_gpus


def slot_order(job_num: int, n_slots: int) -> list[int]:
    """The slots job ``job_num`` tries, in order: its own turn ``job_num % n_slots`` first, then the next ones."""
    return [(job_num + k) % n_slots for k in range(n_slots)]


def claim(lock_dir: Path, job_num: int, n_gpus: int, jobs_per_gpu: int) -> int:
    """Hold a free slot's lock for this process (until :func:`release`) and return its GPU."""
    release()
    n_slots = n_gpus * jobs_per_gpu
    order = slot_order(job_num, n_slots)
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    for slot in order:
        f = open(Path(lock_dir) / f"slot-{slot}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        _held.append(f)
        return gpu_of_slot(slot, n_gpus, jobs_per_gpu)
    log.warning(
        "all %d GPU slots are taken (more parallel jobs than GPUs x jobs_per_gpu): job %d shares GPU %d",
        n_slots,
        job_num,
        gpu_of_slot(order[0], n_gpus, jobs_per_gpu),
    )
    return gpu_of_slot(order[0], n_gpus, jobs_per_gpu)


def release() -> None:
    """Give this process's slot back (a finished job's, before the worker takes its next job)."""
    while _held:
        _held.pop().close()


def gpu_for_sweep_job(jobs_per_gpu: int) -> int | None:
    """This job's GPU when it is one of several parallel jobs on a machine with GPUs, else None (Lightning decides)."""
    if job.sweep_launcher_kind() != "joblib":
        return None
    import torch  # lossbench.train imports this module before it checks the config: torch only once a job runs

    n_gpus = torch.cuda.device_count()
    if n_gpus == 0:
        return None
    hc = HydraConfig.get()
    gpu = claim(Path(hc.sweep.dir) / ".gpu-slots", int(hc.job.num), n_gpus, jobs_per_gpu)
    log.info("job %s runs on GPU %d of %d (pid %d)", hc.job.num, gpu, n_gpus, os.getpid())
    return gpu
