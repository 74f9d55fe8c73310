"""What a process reuses from one job to the next (a joblib worker runs many): the loaded data, never stale."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from idx import write_mnist_family

from lossbench.data import MNISTFamily


def test_a_second_job_on_the_same_data_reuses_the_loaded_splits(tmp_path: Path):
    root = write_mnist_family(tmp_path / "data", "MNIST", n_train=600, n_test=200)
    first = MNISTFamily(root=root, download=False, val_size=100, train_eval_size=100, shuffle_seed=0).load()
    again = MNISTFamily(root=root, download=False, val_size=100, train_eval_size=100, shuffle_seed=7, batch_size=32).load()
    assert again.train_x is first.train_x and again.test_y is first.test_y, "the run seed and batch size do not change the splits"

    other_split = MNISTFamily(root=root, download=False, val_size=150, train_eval_size=100).load()
    assert len(other_split.val_y) == 150 and other_split.train_x is not first.train_x


def test_rewritten_files_are_read_again(tmp_path: Path):
    root = write_mnist_family(tmp_path / "data", "MNIST", n_train=600, n_test=200, seed=0)
    first = MNISTFamily(root=root, download=False, val_size=100, train_eval_size=100).load()
    write_mnist_family(root, "MNIST", n_train=600, n_test=200, seed=1)  # same sizes, other images
    for f in (root / "MNIST" / "raw").iterdir():  # a later modification time, whatever the clock's resolution
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    reread = MNISTFamily(root=root, download=False, val_size=100, train_eval_size=100).load()
    assert reread.train_x is not first.train_x and not torch.equal(reread.test_x, first.test_x)
