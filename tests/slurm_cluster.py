"""A real single-node Slurm cluster for tests: munged, slurmctld and slurmd from Debian's packages,
configured in a temporary folder for this host on 127.0.0.1 and stopped by PID, whatever happens.

Nothing is written under /etc: the daemons and every client (sbatch, squeue, scontrol, scancel,
and the jobs themselves) find the cluster through ``SLURM_CONF``, which :attr:`SlurmCluster.env`
carries. munged runs as the ``munge`` user on its own socket, named in slurm.conf's ``AuthInfo``.
There is no accounting: ``sacct`` fails, so job states are read with ``scontrol show job``.

    pytest_plugins = ["slurm_cluster"]

    def test_it(slurm):
        subprocess.run(["sbatch", ...], env=slurm.env)

Linux only, as root (slurmd runs jobs as their submitting user). Installed by scripts/setup.sh.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from servers import _tail, _wait_until, free_port, is_running

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
MUNGE_KEY = Path("/etc/munge/munge.key")
CPUS = 2
MEMORY_MB = 8000  # what the node offers; a job without mem_gb would take all of it


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    node: str
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment a client of this cluster needs (sbatch, squeue, a sweep that submits)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def scontrol(self, *args: str, timeout: float = 20) -> str:
        return subprocess.run(
            ["scontrol", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=True
        ).stdout

    def job_fields(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s KEY=VALUE fields of one job (JobState, ExitCode, Restarts, ...)."""
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", job_id], env=self.env, capture_output=True, text=True, timeout=20
        )
        return dict(word.split("=", 1) for word in out.stdout.split() if "=" in word)

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still remembers (MinJobAge keeps finished ones for an hour here)."""
        out = subprocess.run(
            ["scontrol", "-o", "show", "job"], env=self.env, capture_output=True, text=True, timeout=20
        )
        return [
            dict(w.split("=", 1) for w in line.split() if "=" in w)
            for line in out.stdout.splitlines()
            if line.startswith("JobId=")
        ]

    def node_state(self) -> str:
        fields = dict(w.split("=", 1) for w in self.scontrol("-o", "show", "node", self.node).split() if "=" in w)
        return fields.get("State", "")

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {name}\n{_tail(path, 20)}"
            for name, path in (
                ("munged", self.root / "munge" / "munged.log"),
                ("slurmctld", self.root / "slurmctld.log"),
                ("slurmd", self.root / "slurmd.log"),
            )
        )


def installed() -> bool:
    return all(Path(d).is_file() for d in DAEMONS) and shutil.which("sbatch") is not None and MUNGE_KEY.is_file()


def write_conf(root: Path, node: str, munge_socket: Path) -> Path:
    """slurm.conf for one node on loopback: cores and memory are consumable, so jobs share the node."""
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=lossbench",
                f"SlurmctldHost={node}(127.0.0.1)",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "SlurmUser=root",
                f"AuthInfo=socket={munge_socket},cred_expire=10",  # a requeued job waits cred_expire (default 120 s) to start again
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "SchedulerType=sched/backfill",
                "SchedulerParameters=sched_interval=5,bf_interval=5",  # a requeued job starts seconds after it may
                "ReturnToService=2",
                "MinJobAge=3600",
                "KillWait=20",  # seconds between a cancel's SIGTERM and its SIGKILL
                "MpiDefault=none",
                "JobAcctGatherType=jobacct_gather/none",
                f"NodeName={node} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={MEMORY_MB} State=UNKNOWN",
                f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    return conf


def _pid_from(path: Path, timeout: float) -> int:
    _wait_until(lambda: path.is_file() and path.read_text().strip().isdigit(), timeout)
    return int(path.read_text().strip())


@contextlib.contextmanager
def start_slurm(timeout: float = 60) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd; yield once the node is idle; stop them by PID afterwards."""
    node = socket.gethostname().split(".")[0]
    root = Path(tempfile.mkdtemp(prefix="lossbench-slurm-"))
    munge = pwd.getpwnam("munge")
    munge_dir = root / "munge"
    munge_dir.mkdir()
    os.chown(munge_dir, munge.pw_uid, munge.pw_gid)
    os.chmod(root, 0o755)
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    conf = write_conf(root, node, munge_dir / "munge.sock")
    cluster = SlurmCluster(root, conf, node)
    env = cluster.env
    try:
        started = subprocess.run(
            [
                "runuser",
                "-u",
                "munge",
                "--",
                "/usr/sbin/munged",
                f"--socket={munge_dir / 'munge.sock'}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={munge_dir / 'munged.log'}",
                f"--seed-file={munge_dir / 'seed'}",
                "--force",
            ],
            timeout=30,
            capture_output=True,
            text=True,
        )
        if started.returncode:
            raise RuntimeError(f"munged did not start: {started.stderr.strip()}")
        cluster.pids["munged"] = _pid_from(munge_dir / "munged.pid", 10)
        subprocess.run(["/usr/sbin/slurmctld", "-i"], env=env, check=True, timeout=30, capture_output=True)
        cluster.pids["slurmctld"] = _pid_from(root / "slurmctld.pid", 10)
        subprocess.run(["/usr/sbin/slurmd"], env=env, check=True, timeout=30, capture_output=True)
        cluster.pids["slurmd"] = _pid_from(root / "slurmd.pid", 10)

        def idle() -> bool:
            with contextlib.suppress(subprocess.SubprocessError):
                return cluster.node_state().startswith("IDLE")
            return False

        if not _wait_until(idle, timeout, interval=0.5):
            raise RuntimeError(f"the Slurm node did not become idle within {timeout:.0f} s\n{cluster.log_tail()}")
        yield cluster
    finally:
        stop(cluster)
        shutil.rmtree(root, ignore_errors=True)


def stop(cluster: SlurmCluster, grace: float = 15) -> None:
    """SIGTERM each daemon by its PID (slurmd first), SIGKILL it after ``grace`` seconds."""
    for name in ("slurmd", "slurmctld", "munged"):
        pid = cluster.pids.get(name)
        if pid is None or not is_running(pid):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_until(lambda pid=pid: not is_running(pid), grace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_until(lambda pid=pid: not is_running(pid), 5)


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A running single-node Slurm cluster for the session; skipped where Slurm is not installed."""
    if not installed():
        pytest.skip(
            "Slurm is not installed (apt-get install slurmctld slurmd slurm-client munge; scripts/setup.sh does it)"
        )
    if os.geteuid() != 0:
        pytest.skip("the test cluster's slurmd runs as root")
    with start_slurm() as cluster:
        yield cluster
    leaked = [f"{name} {pid}" for name, pid in cluster.pids.items() if is_running(pid)]
    assert not leaked, f"Slurm daemons leaked: {leaked}"


__all__ = ["SlurmCluster", "start_slurm", "slurm", "time"]
