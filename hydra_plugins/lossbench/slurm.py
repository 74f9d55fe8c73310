"""``hydra/launcher=slurm``: Hydra's submitit_slurm launcher, made safe for long sweeps.

What it adds to hydra_submitit_launcher's SlurmLauncher (same parameters, conf/hydra/launcher/):

* In the job: Slurm's warning signal before the time limit (or a preemption announced with it,
  ``--signal=USR2@signal_delay_s``) stops training like SIGTERM does: the run ends KILLED with that
  reason and ``last.ckpt`` on disk; then submitit's own hook requeues the job, at most
  ``max_num_timeout`` times, and the requeued job resumes the same run (``resume`` is true in sweeps).
* In the job: a job whose run FAILED or was KILLED ends with exit code 1, so Slurm's accounting
  (COMPLETED vs FAILED) agrees with MLflow; the outcome file still tells the sweep what happened.
* In the sweep: waiting never hangs. A job is over when it left a result, or when Slurm no longer
  lists it (cancelled before training, killed by the node, out of memory) for ``LOST_AFTER_S``
  seconds; such a job's outcome is ``killed`` with Slurm's state as its reason. No accounting
  (``sacct``) is needed: the states come from ``squeue`` and ``scontrol``.
* Jobs are submitted under their own numbers, so the sweeper can leave finished ones out.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf

from hydra_plugins.lossbench.sweeper import job_config, task_hash, tracker_of
from lossbench import job
from lossbench.names import SWEEP_TAG

log = logging.getLogger("lossbench")

POLL_S = 2.0  # how often the sweep looks at its jobs
LOST_AFTER_S = 30.0  # a job Slurm no longer lists, without a result after this long, was killed
ACTIVE = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "STOPPED",
    "SIGNALING",
    "STAGE_OUT",
    "PREEMPTED",
}
LIMIT_SIGNAL = signal.SIGUSR2  # submitit's --signal (SUBMITIT_PREEMPT_SIGNAL changes it; lossbench keeps USR2)


class JobEnded(Exception):
    """Raised in a job whose run did not finish, so that the job's exit code is 1."""


class SlurmLauncher(SubmititSlurmLauncher):
    """submitit_slurm that requeues on the time-limit signal, exits non-zero on failure and never hangs."""

    # ------------------------------------------------------------------ in the job (on a Slurm node)

    def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state) -> JobReturn:
        requeue = signal.getsignal(LIMIT_SIGNAL)  # submitit's checkpoint-and-requeue handler
        warned: list[int] = []

        def time_limit(signum, frame):
            warned.append(signum)
            raise KeyboardInterrupt(
                f"{signal.Signals(signum).name}: Slurm's time limit is near or the job is preempted"
            )

        signal.signal(LIMIT_SIGNAL, time_limit)
        interrupted: BaseException | None = None
        ret = None
        try:
            ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        except (KeyboardInterrupt, SystemExit) as e:  # Hydra's run_job lets interrupts through; the run is KILLED
            interrupted = e
        finally:
            signal.signal(LIMIT_SIGNAL, requeue)
        if warned and callable(requeue):
            log.info("time limit or preemption: requeueing through submitit; the requeued job resumes the same run")
            requeue(LIMIT_SIGNAL, None)  # checkpoints, requeues, exits; raises UncompletedJobError when out of requeues
        if interrupted is not None:  # Lightning turns an interrupt into SystemExit(1); its context says which
            cause = (
                interrupted.__context__
                if isinstance(interrupted, SystemExit) and interrupted.__context__
                else interrupted
            )
            raise JobEnded(f"interrupted: {cause}")
        outcome = job.read_outcome(Path(ret.hydra_cfg.hydra.runtime.output_dir)) or {}
        if outcome.get("status") in ("failed", "killed"):
            raise JobEnded(f"{outcome['status']}: {outcome.get('reason')}")
        return ret

    # ------------------------------------------------------------------ in the sweep (where -m runs)

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        return self.launch_numbered(list(enumerate(job_overrides, initial_job_idx)))

    def launch_numbered(self, jobs: list[tuple[int, Any]]) -> list[JobReturn]:
        """Submit ``(number, overrides)`` jobs as one Slurm array; wait until each is over, however it ends."""
        import submitit  # the sweep's own process only: a job of this launcher never submits

        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_max_num_timeout": self.params.get("max_num_timeout", 0)},
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in base else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in ("submitit_folder", "max_num_timeout")
            }
        )
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        for num, overrides in jobs:
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        params = [(list(o), "hydra.sweep.dir", num, f"job_id_for_{num}", state) for num, o in jobs]
        submitted = executor.map_array(self, *zip(*params))
        log.info("submitted %d Slurm jobs: %s", len(submitted), " ".join(j.job_id for j in submitted))
        return self.wait(submitted, jobs)

    def wait(self, submitted: list, jobs: list[tuple[int, Any]]) -> list[JobReturn]:
        """Each job's JobReturn once it left a result or Slurm stopped listing it (for LOST_AFTER_S)."""
        results: dict[int, JobReturn] = {}
        gone_since: dict[int, float] = {}
        while len(results) < len(submitted):
            active = slurm_states([j.job_id for i, j in enumerate(submitted) if i not in results])
            for i, slurm_job in enumerate(submitted):
                if i in results:
                    continue
                if slurm_job.paths.result_pickle.exists():
                    results[i] = self.job_return(slurm_job, jobs[i], None)
                elif active is not None and active.get(slurm_job.job_id) not in ACTIVE:
                    since = gone_since.setdefault(i, time.monotonic())
                    if time.monotonic() - since > LOST_AFTER_S:
                        results[i] = self.job_return(slurm_job, jobs[i], ended_state(slurm_job.job_id))
                else:
                    gone_since.pop(i, None)
            if len(results) < len(submitted):
                time.sleep(POLL_S)
        return [results[i] for i in range(len(submitted))]

    def job_return(self, slurm_job, numbered: tuple[int, Any], lost_state: str | None) -> JobReturn:
        """The job's own JobReturn; for a job that ended otherwise, one built from its outcome file."""
        if lost_state is None:
            try:
                return slurm_job.result()
            except Exception as e:  # the job raised (JobEnded for a failed or killed run) or submitit gave up on it
                error = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        num, overrides = numbered
        cfg = job_config(self.hydra_context, self.config, num, overrides)
        job_dir = job.job_output_dir(cfg)
        if job.read_outcome(job_dir) is None:  # killed before its run could say so (or before it had one)
            reason = (
                f"Slurm job {slurm_job.job_id} ended {lost_state} without a result"
                if lost_state
                else f"Slurm job {slurm_job.job_id}: {error}"
            )
            job.write_outcome(job_dir, "killed" if lost_state else "failed", None, None, reason, list(overrides))
            log.error("job #%d: %s", num, reason)
            if lost_state:  # killed outright (SIGKILL, out of memory): its run, if it had one, is still RUNNING
                tracker = tracker_of(cfg)
                for run in tracker.runs_of_config(task_hash(cfg), ["RUNNING"]):
                    if run.data.tags.get(SWEEP_TAG) == os.environ.get(job.SWEEP_ID_ENV):
                        tracker.end(run.info.run_id, "KILLED", reason)
        ret = JobReturn(
            overrides=list(overrides), cfg=cfg, hydra_cfg=cfg, working_dir=str(job_dir), task_name=cfg.hydra.job.name
        )
        ret.status, ret.return_value = JobStatus.COMPLETED, math.nan  # the sweep goes on; the outcome file says why
        return ret


def slurm_states(job_ids: list[str]) -> dict[str, str] | None:
    """``{job id: state}`` of the jobs Slurm still lists (array tasks one by one), or None when squeue fails."""
    if not job_ids:
        return {}
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode and "Invalid job id" not in out.stderr:
        return None  # slurmctld unreachable: know nothing rather than declare jobs lost
    return dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)


def ended_state(job_id: str) -> str:
    """The state a finished job ended in, from ``scontrol`` (no accounting needed), e.g. CANCELLED or TIMEOUT."""
    try:
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    fields = dict(word.split("=", 1) for word in out.split() if "=" in word)
    return f"{fields.get('JobState', 'UNKNOWN')} (reason {fields.get('Reason', '?')}, exit code {fields.get('ExitCode', '?')})"
