"""Running one benchmark command in its own process: its wall time, its own peak RSS and its output in a log."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.settings import REPO


@dataclass
class Child:
    rc: int
    started: float  # time.time() just before the process was spawned
    wall_s: float
    max_rss_mb: float
    log: Path


def child_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["TMPDIR"] = str(tmp)  # run()'s scratch output folder lands in the benchmark's temp dir
    return env


def spawn(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> Child:
    """Run a command to completion; its own peak RSS (wait4), wall time and output (into ``log``)."""
    with open(log, "ab") as out:
        out.write(f"$ {shlex.join(cmd)}\n".encode())
        out.flush()
        started, t0 = time.time(), time.perf_counter()
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        wall = time.perf_counter() - t0
    process.returncode = os.waitstatus_to_exitcode(status)
    return Child(process.returncode, started, wall, usage.ru_maxrss / 1024, log)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
