"""GPU slots of a parallel sweep on one machine: the assignment rule, and real lock files between processes."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path

import pytest

from lossbench.gpus import claim, gpu_of_slot, release, slot_order


def test_one_job_per_gpu_goes_round_the_gpus():
    assert [gpu_of_slot(s, n_gpus=4, jobs_per_gpu=1) for s in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_several_jobs_per_gpu_fill_each_gpu_to_its_share():
    slots = [gpu_of_slot(s, n_gpus=2, jobs_per_gpu=3) for s in range(6)]
    assert slots == [0, 0, 0, 1, 1, 1]
    assert Counter(slots) == {0: 3, 1: 3}


@pytest.mark.parametrize("n_gpus, per_gpu", [(1, 1), (3, 1), (2, 2), (4, 3)])
def test_every_gpu_carries_exactly_its_share_of_the_slots(n_gpus: int, per_gpu: int):
    load = Counter(gpu_of_slot(s, n_gpus, per_gpu) for s in range(n_gpus * per_gpu))
    assert load == {g: per_gpu for g in range(n_gpus)}


def test_a_job_tries_its_own_turn_first_then_the_next_slots():
    assert slot_order(0, 4) == [0, 1, 2, 3]
    assert slot_order(5, 4) == [1, 2, 3, 0]


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="jobs_per_gpu"):
        gpu_of_slot(0, n_gpus=2, jobs_per_gpu=0)


def _hold(lock_dir: str, job_num: int, n_gpus: int, per_gpu: int, got, ready, done) -> None:
    got.put((job_num, claim(Path(lock_dir), job_num, n_gpus, per_gpu)))
    ready.wait(30)
    done.wait(30)
    release()


def test_jobs_running_together_never_share_a_slot(tmp_path: Path):
    """Four processes, 2 GPUs x 2 slots, all preferring slot 0: the locks spread them two per GPU."""
    ctx = multiprocessing.get_context("spawn")
    got, ready, done = ctx.Queue(), ctx.Barrier(5), ctx.Event()
    procs = [ctx.Process(target=_hold, args=(str(tmp_path), 4 * k, 2, 2, got, ready, done)) for k in range(4)]
    for p in procs:
        p.start()
    try:
        ready.wait(60)
        gpus = dict(got.get(timeout=30) for _ in procs)
        assert Counter(gpus.values()) == {0: 2, 1: 2}, gpus
        # A fifth job while all four slots are held shares its preferred slot's GPU instead of waiting.
        assert claim(tmp_path, 1, 2, 2) == gpu_of_slot(1, 2, 2)
        release()
    finally:
        done.set()
        for p in procs:
            p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    # Released: the next job gets its own turn again.
    assert claim(tmp_path, 3, 2, 2) == gpu_of_slot(3, 2, 2)
    release()
