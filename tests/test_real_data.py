"""Debian's real Fashion-MNIST (package dataset-fashion-mnist), imported the way a user would, then trained on.

Slow: unpacking 60k + 10k images and one epoch of a linear model take a few seconds each on a
2-core CPU. Skipped only where /usr/share/datasets/fashion-mnist is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose, read_runs
from idx import read_idx_bytes

pytestmark = pytest.mark.slow


def test_real_fashion_mnist_loads_with_the_published_split_sizes(fashion_root: Path):
    from hydra.utils import instantiate

    raw = fashion_root / "FashionMNIST" / "raw"
    cfg = compose("data=fashion_mnist", f"data.root={fashion_root}", "data.download=false")
    dm = instantiate(cfg.data, shuffle_seed=0)
    images, labels = (lambda split: (split.images[:, 0], split.labels))(dm.read_split("train"))
    assert images.shape == (60_000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60_000,) and labels.dtype == torch.int64
    np.testing.assert_array_equal(images.numpy(), read_idx_bytes(raw / "train-images-idx3-ubyte", ndim=3))

    assert dm.sizes == {"train": 55_000, "val": 5_000, "test": 10_000, "train_eval": 5_000}
    s = dm.load()
    assert s.train_x.shape == (55_000, 1, 28, 28) and s.test_x.shape == (10_000, 1, 28, 28)
    assert s.train_x.dtype == torch.float32 and s.test_y.dtype == torch.int64
    # Fashion-MNIST's test set has exactly 1000 images of each of its 10 classes, its training set 6000
    assert torch.bincount(s.test_y, minlength=10).tolist() == [1000] * 10
    assert torch.bincount(labels, minlength=10).tolist() == [6000] * 10
    # the config's mean and std are this data's own (computed here from the raw bytes)
    pixels = read_idx_bytes(raw / "train-images-idx3-ubyte", ndim=3) / 255
    (mean,), (std,) = cfg.data.mean, cfg.data.std
    assert abs(pixels.mean() - mean) < 5e-4 and abs(pixels.std() - std) < 5e-4
    assert abs(float(torch.cat([s.train_x, s.val_x]).double().mean())) < 2e-3


def test_one_epoch_of_a_linear_model_reaches_logistic_regression_accuracy(fashion_root: Path, tmp_path: Path):
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    cfg = compose(
        "data=fashion_mnist",
        "model=linear",
        "optimizer=adam",
        "loss=ce",
        f"data.root={fashion_root}",
        f"tracking.uri=sqlite:///{store}",
        f"tracking.checkpoint_dir={tmp_path / 'checkpoints'}",
        "trainer.max_epochs=1",
        "analysis.figures=false",
        # Where the run executes, not what it trains (not part of the config hash). With the default
        # (all cores) an epoch took 60 s instead of 2.5 s on a 2-core machine busy with other jobs.
        "threads=1",
    )
    assert cfg.data.batch_size == 64 and cfg.optimizer.name == "adam"
    run(cfg)
    _, runs = read_runs(store)
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED"
    assert (
        r.data.tags["data"] == "fashion_mnist"
        and r.data.params["data.source.dataset"] == "torchvision.datasets.FashionMNIST"
    )
    # published: multinomial logistic regression on Fashion-MNIST reaches 0.842 test accuracy
    assert r.data.metrics["test/acc"] >= 0.80, r.data.metrics


def _verdict_of(fashion_root: Path, tmp_path: Path, *overrides: str):
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    run(
        compose(
            "data=fashion_mnist",
            "model=mlp",
            "loss=ce",
            f"data.root={fashion_root}",
            f"tracking.uri=sqlite:///{store}",
            f"tracking.checkpoint_dir={tmp_path / 'checkpoints'}",
            "analysis.figures=false",
            "threads=1",
            *overrides,
        )
    )
    client, runs = read_runs(store)
    r = runs[0]
    curves = {
        k: [m.value for m in sorted(client.get_metric_history(r.info.run_id, k), key=lambda m: m.step)]
        for k in ("val/nll", "val/acc", "train_eval/nll", "train_eval/acc")
    }
    return r, curves


def test_an_mlp_on_2000_images_overfits_and_is_flagged_with_an_onset(fashion_root: Path, tmp_path: Path):
    """The case the first rule missed (see tests/data/real_curves.json, recorded from the same setting for 25 epochs)."""
    from lossbench import analysis

    r, curves = _verdict_of(fashion_root, tmp_path, "data.train_size=2000", "trainer.max_epochs=18")
    assert r.data.tags["verdict"] == "overfits", r.data.tags["verdict_text"]
    onset = int(r.data.tags["onset_epoch"])
    assert 3 <= onset <= 12 and r.data.metrics["summary/onset_epoch"] == onset
    assert r.data.metrics["summary/val_nll_rise"] > 0.10
    assert analysis.judge(curves).onset_epoch == onset, "the tag is the verdict of the logged curves"
    # The selected checkpoint is the best validation accuracy, not an early NLL minimum.
    assert r.data.metrics["summary/selected_epoch"] == analysis.best_epoch(curves, "val/acc", "max")


def test_an_mlp_on_the_full_training_set_for_three_epochs_is_not_flagged(fashion_root: Path, tmp_path: Path):
    r, _ = _verdict_of(fashion_root, tmp_path, "trainer.max_epochs=3")
    assert r.data.tags["verdict"] != "overfits" and r.data.tags["onset_epoch"] == "none", r.data.tags["verdict_text"]


def test_fashion_mnists_noise_map_is_where_a_linear_model_errs_most(fashion_root: Path):
    """conf/data/fashion_mnist.yaml's map: the five classes a linear model gets wrong most often on the real test set,
    each to the class it takes them for most often (measured as its comment says)."""
    from hydra.utils import instantiate

    from lossbench.shipped import data_yaml

    torch.manual_seed(0)
    s = instantiate(compose("data=fashion_mnist", f"data.root={fashion_root}").data, shuffle_seed=0).load()
    net = torch.nn.Linear(784, 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(5):
        order = torch.randperm(len(s.train_y))
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            loss = torch.nn.functional.cross_entropy(net(s.train_x[idx].flatten(1)), s.train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = net(s.test_x.flatten(1)).argmax(1)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (s.test_y.numpy(), predicted.numpy()), 1)
    np.fill_diagonal(confusion, 0)
    worst = np.argsort(-confusion.sum(axis=1), kind="stable")[:5]
    assert sorted([int(c), int(confusion[c].argmax())] for c in worst) == sorted(
        [list(pair) for pair in data_yaml("fashion_mnist").noise_map]
    ), confusion
