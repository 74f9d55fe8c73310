"""lossbench's worker pool (lossbench.pool) with real processes and real signals: a worker killed mid-call costs
that call only, a fresh worker takes its place, and what the call said and its peak memory come back."""

from __future__ import annotations

import os
import signal

import pytest

from lossbench import job
from lossbench.pool import FRAME, Answer, Frames, Pool, WorkerLost, frame
from lossbench.workers import lost_reason, memory_note


def square(x: int) -> int:
    return x * x


def die(sig: int) -> None:
    os.kill(os.getpid(), sig)


def announce_then_die(run_id: str) -> None:
    job.announce_run(run_id)
    os.kill(os.getpid(), signal.SIGKILL)


def hold(mb: int) -> int:
    """Hold ``mb`` MiB, written to (resident), for the call's length; its length."""
    block = bytearray(mb * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    return len(block)


def fail() -> None:
    raise ValueError("bad input")


def run_all(pool: Pool, tasks: list) -> tuple[dict, dict]:
    answered, lost = {}, {}
    pool.map(tasks, lambda key, future: answered.__setitem__(key, future), lambda key, e: lost.__setitem__(key, e))
    return answered, lost


@pytest.fixture
def pool():
    made = Pool(2)
    yield made
    made.close(stop=True, timeout=30)


def test_a_worker_killed_mid_call_costs_that_call_only_and_a_new_worker_takes_the_rest(pool: Pool):
    first = {w.pid for w in pool.workers}
    tasks = [(i, square, (i,)) for i in range(6)]
    tasks[2] = (2, die, (signal.SIGKILL,))
    answered, lost = run_all(pool, tasks)
    assert {k: f.result().value for k, f in answered.items()} == {0: 0, 1: 1, 3: 9, 4: 16, 5: 25}
    assert list(lost) == [2]
    error = lost[2]
    assert isinstance(error, WorkerLost) and error.pid in first and error.returncode == -signal.SIGKILL
    assert str(error) == f"worker {error.pid} killed by SIGKILL"
    assert len(pool.workers) == 2 and error.pid not in {w.pid for w in pool.workers}, "the lost worker is replaced"


def test_any_signal_or_exit_is_named_and_an_exception_is_an_answer_not_a_loss(pool: Pool):
    answered, lost = run_all(pool, [("term", die, (signal.SIGTERM,)), ("exit", os._exit, (3,)), ("raise", fail, ())])
    assert lost["term"].signal_name == "SIGTERM" and str(lost["exit"]).endswith("exited with code 3")
    with pytest.raises(ValueError, match="bad input"):
        answered["raise"].result()


def test_the_run_a_call_announced_comes_back_with_its_loss(pool: Pool):
    _, lost = run_all(pool, [("job", announce_then_die, ("run-123",))])
    assert lost["job"].notes == ("run-123",)


def test_each_call_reports_its_own_peak_memory(pool: Pool):
    worker = pool.workers[0]
    big = pool.submit(worker, hold, 300)
    small = pool.submit(worker, square, 3)
    pool.wait([big, small])
    assert isinstance(big.result(), Answer) and big.result().value == 300 * 2**20
    peak_big, peak_small = big.result().peak_bytes, small.result().peak_bytes
    assert peak_big is not None and peak_small is not None, "this Linux can reset a process's high-water mark"
    assert peak_big >= 300 * 2**20 > peak_small + 200 * 2**20, (peak_big, peak_small)


def test_frames_come_whole_however_the_pipe_splits_them():
    data = frame(("note", "a")) + frame(("answer", 1, True, [1] * 1000, None))
    frames, got = Frames(), []
    for i in range(0, len(data), 7):
        got += frames.feed(data[i : i + 7])
    assert len(got) == 2 and not frames.buffer and FRAME.size == 8


def test_the_reason_a_lost_job_gives_names_signal_memory_and_what_to_do():
    gib = 2**30
    oom = WorkerLost(4321, -signal.SIGKILL, out_of_memory=True, peak_bytes=int(2.1 * gib))
    assert lost_reason(oom, 1.5) == (
        "worker 4321 killed by SIGKILL (out of memory; peak 2.10 GB > launch.job_memory_gb=1.5: raise it or lower "
        "launch.max_jobs); the same command resumes the job"
    )
    short = WorkerLost(4321, -signal.SIGKILL, out_of_memory=True, peak_bytes=int(1.2 * gib))
    assert lost_reason(short, 1.5) == (
        "worker 4321 killed by SIGKILL (out of memory; peak 1.20 GB, within launch.job_memory_gb=1.5); "
        "the same command resumes the job"
    )
    plain = WorkerLost(4321, -signal.SIGKILL, out_of_memory=False, peak_bytes=int(1.2 * gib))
    assert lost_reason(plain, 1.5) == "worker 4321 killed by SIGKILL; the same command resumes the job"
    assert memory_note(int(1.2 * gib), 1.5) is None
