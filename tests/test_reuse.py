"""Work a job no longer repeats: data a process loaded already (never stale), a second test of the same weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import compose, read_runs, tiny_overrides
from idx import write_mnist_family

from lossbench.data import ImageData


def mnist(**kw) -> ImageData:
    """conf/data/mnist.yaml's data module with ``kw`` instead of its keys."""
    from hydra.utils import instantiate

    return instantiate(compose("data=mnist").data, **kw)


def test_a_second_job_on_the_same_data_reuses_the_loaded_splits(tmp_path: Path):
    root = write_mnist_family(tmp_path / "data", "MNIST", n_train=600, n_test=200)
    first = mnist(root=str(root), download=False, val_size=100, train_eval_size=100, shuffle_seed=0).load()
    again = mnist(
        root=str(root), download=False, val_size=100, train_eval_size=100, shuffle_seed=7, batch_size=32
    ).load()
    assert again.train_x is first.train_x and again.test_y is first.test_y, (
        "the run seed and batch size do not change the splits"
    )

    other_split = mnist(root=str(root), download=False, val_size=150, train_eval_size=100).load()
    assert len(other_split.val_y) == 150 and other_split.train_x is not first.train_x


def test_rewritten_files_are_read_again(tmp_path: Path):
    root = write_mnist_family(tmp_path / "data", "MNIST", n_train=600, n_test=200, seed=0)
    first = mnist(root=str(root), download=False, val_size=100, train_eval_size=100).load()
    write_mnist_family(root, "MNIST", n_train=600, n_test=200, seed=1)  # same sizes, other images
    for f in (root / "MNIST" / "raw").iterdir():  # a later modification time, whatever the clock's resolution
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    reread = mnist(root=str(root), download=False, val_size=100, train_eval_size=100).load()
    assert reread.train_x is not first.train_x and not torch.equal(reread.test_x, first.test_x)


def test_last_is_best_only_when_the_last_epoch_beats_every_earlier_one_strictly():
    from lossbench.phases import last_is_best

    assert last_is_best([0.5], "max") and last_is_best([0.5, 0.7], "max") and last_is_best([0.9, 0.4], "min")
    assert not last_is_best([0.7, 0.7], "max"), "on a tie ModelCheckpoint keeps the earlier epoch"
    assert not last_is_best([0.8, 0.7], "max") and not last_is_best([0.4, 0.9], "min")
    assert not last_is_best([], "max") and not last_is_best([0.5, float("nan")], "max")


@pytest.mark.parametrize(
    "extra", [["trainer.max_epochs=1"], ["trainer.max_epochs=4", "optimizer.lr=0.05"]], ids=["one-epoch", "four-epochs"]
)  # four: val/acc 0.89, 1.0, 0.99, 1.0 — the best is not the last
def test_test_and_test_last_are_the_best_and_the_final_checkpoints_accuracy(tiny_mnist: Path, tmp_path: Path, extra):
    from hydra.utils import instantiate

    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    cfg = compose(*tiny_overrides(tiny_mnist, store, "model=mlp", *extra))
    run(cfg)
    (recorded,) = read_runs(store)[1]
    test = instantiate(cfg.data, shuffle_seed=cfg.seed).load()
    for name, prefix in (("best.ckpt", "test"), ("last.ckpt", "test_last")):
        state = torch.load(
            Path(recorded.data.tags["lossbench.checkpoint_dir"]) / name, map_location="cpu", weights_only=True
        )["state_dict"]
        net = instantiate(cfg.model.net)
        net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
        with torch.no_grad():
            accuracy = (net.eval()(test.test_x).argmax(1) == test.test_y).float().mean().item()
        assert recorded.data.metrics[f"{prefix}/acc"] == pytest.approx(accuracy, abs=1e-6), prefix
