"""Sweeps on a real Slurm cluster (tests/slurm_cluster.py): what MLflow, Slurm and the sweep each say
when jobs finish, diverge, are cancelled, or reach their time limit, and what a re-run submits.

Slurm's accounting (sacct) is off, so Slurm's view is ``scontrol show job`` (finished jobs are kept
an hour). The time-limit warning is sent with ``scancel --signal=USR2``: the signal slurmctld sends
``signal_delay_s`` before the limit, at a moment the test chooses (slurmctld itself sends it up to a
minute early or late, which on a one-minute limit may fall inside the job's imports).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import read_runs, tiny_overrides

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]  # one Slurm installation: its tests run on one worker
pytest_plugins = ["slurm_cluster"]
TESTS = Path(__file__).parent
LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]
# SlowCE sleeps 0.08 s per training call: 8 calls, about 0.7 s per epoch; two jobs share the 2 cores.
SLOW = [
    "loss=ce",
    "loss.name=slowce",
    "loss.criterion._target_=faults.SlowCE",
    "+loss.criterion.delay_s=0.08",
    "trainer.max_epochs=12",
]
EPOCH_KEYS = ("train/loss", "val/loss", "val/acc", "train_eval/acc")


def env_of(slurm) -> dict[str, str]:
    env = {k: v for k, v in slurm.env.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def sweep_args(root: Path, store: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "lossbench.train", "-m", *tiny_overrides(root, store, *LAUNCHER, *overrides)]


def run_sweep(slurm, work: Path, root: Path, *overrides: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        sweep_args(root, work / "mlflow.db", *overrides),
        cwd=work,
        env=env_of(slurm),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submitted(output: str) -> list[str]:
    """The Slurm job ids the sweep submitted, in job order (from its log line)."""
    return [i for line in re.findall(r"submitted \d+ Slurm jobs: (.*)", output) for i in line.split()]


def train_runs(store: Path) -> dict[str, object]:
    """Training runs by their sweep job number."""
    _, runs = read_runs(store)
    return {r.data.tags["sweep_job"]: r for r in runs if r.data.tags.get("lossbench.kind") == "train"}


def epochs(client, run_id: str, key: str = "val/loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def assert_every_epoch_once(client, run_id: str, n: int) -> None:
    for key in EPOCH_KEYS:
        assert epochs(client, run_id, key) == list(range(1, n + 1)), (key, epochs(client, run_id, key))  # from 1


def wait_for_an_epoch_in_each(
    store: Path, n_jobs: int, proc: subprocess.Popen, log: Path, timeout: float = 150
) -> dict:
    """The sweep's runs once each has an epoch; the store is read only after the sweep created it and submitted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the sweep ended early ({proc.returncode}):\n{log.read_text()[-3000:]}"
        if submitted(log.read_text()):
            client, _ = read_runs(store)
            runs = train_runs(store)
            if len(runs) == n_jobs and all(epochs(client, r.info.run_id) for r in runs.values()):
                return runs
        time.sleep(1)
    raise AssertionError(f"no epoch in each of {n_jobs} runs within {timeout} s")


def test_a_sweep_finishes_and_a_diverging_job_fails_in_mlflow_and_in_slurm(slurm, tiny_mnist: Path, tmp_path: Path):
    nan_loss = ["loss=ce", "loss.name=nanafter", "loss.criterion._target_=faults.NaNAfter"]
    done = run_sweep(slurm, tmp_path, tiny_mnist, *nan_loss, "+loss.criterion.after=1000,3")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-3000:]
    assert "1 finished, 1 failed, 0 killed, 0 skipped" in done.stdout, out[-3000:]
    client, _ = read_runs(tmp_path / "mlflow.db")
    runs = train_runs(tmp_path / "mlflow.db")
    assert runs["0"].info.status == "FINISHED" and runs["1"].info.status == "FAILED"
    assert_every_epoch_once(client, runs["0"].info.run_id, 2)
    assert runs["1"].data.tags["lossbench.failure"].startswith("DivergenceError: diverged")
    parent = [r for r in read_runs(tmp_path / "mlflow.db")[1] if r.data.tags.get("lossbench.kind") == "sweep"]
    assert [p.info.status for p in parent] == ["FAILED"]

    finished, diverged = (slurm.job_fields(j) for j in submitted(out))
    assert (finished["JobState"], finished["ExitCode"]) == ("COMPLETED", "0:0")
    assert (diverged["JobState"], diverged["ExitCode"]) == ("FAILED", "1:0"), (
        "Slurm must not call a diverged job COMPLETED"
    )


def test_cancelled_job_ends_killed_and_a_timed_out_one_is_requeued_into_the_same_run(
    slurm, tiny_mnist: Path, tmp_path: Path
):
    store = tmp_path / "mlflow.db"
    log = tmp_path / "sweep.log"
    args = sweep_args(tiny_mnist, store, *SLOW, "seed=0,1", "hydra.launcher.max_num_timeout=2")
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env_of(slurm), stdout=out, stderr=subprocess.STDOUT)
    try:
        runs = wait_for_an_epoch_in_each(store, 2, proc, log)
        cancelled, timed_out = submitted(log.read_text())
        subprocess.run(["scancel", cancelled], env=slurm.env, check=True, timeout=30)
        subprocess.run(
            ["scancel", "--signal=USR2", timed_out], env=slurm.env, check=True, timeout=30
        )  # the time-limit warning
        code = proc.wait(timeout=200)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 1, text[-3000:]
    assert "1 finished, 0 failed, 1 killed, 0 skipped" in text, text[-3000:]
    client, _ = read_runs(store)
    now = train_runs(store)
    assert now["0"].info.status == "KILLED" and "SIGTERM" in now["0"].data.tags["lossbench.failure"]
    assert now["1"].info.run_id == runs["1"].info.run_id and now["1"].info.status == "FINISHED", (
        "requeued into the same run"
    )
    assert_every_epoch_once(client, now["1"].info.run_id, 12)
    requeued = slurm.job_fields(timed_out)
    assert (requeued["JobState"], requeued["Restarts"], requeued["ExitCode"]) == ("COMPLETED", "1", "0:0")
    assert slurm.job_fields(cancelled)["JobState"] == "CANCELLED"
    parent = [r for r in read_runs(store)[1] if r.data.tags.get("lossbench.kind") == "sweep"]
    assert [p.info.status for p in parent] == ["KILLED"]

    # The same command again: the finished job is not submitted, the cancelled one resumes its own run.
    again = subprocess.run(args, cwd=tmp_path, env=env_of(slurm), capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "1 finished, 0 failed, 0 killed, 1 skipped" in again.stdout
    assert len(submitted(again.stdout + again.stderr)) == 1
    resumed = train_runs(store)["0"]
    assert resumed.info.run_id == runs["0"].info.run_id and resumed.info.status == "FINISHED"
    assert_every_epoch_once(client, resumed.info.run_id, 12)

    # And once more: everything finished, nothing is submitted.
    jobs_before = len(slurm.jobs())
    last = subprocess.run(args, cwd=tmp_path, env=env_of(slurm), capture_output=True, text=True, timeout=240)
    assert last.returncode == 0 and "0 finished, 0 failed, 0 killed, 2 skipped" in last.stdout, (
        last.stdout + last.stderr
    )[-3000:]
    assert submitted(last.stdout + last.stderr) == [] and len(slurm.jobs()) == jobs_before
