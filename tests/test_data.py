"""The data layer: splits, normalisation, batches, label-noise wiring, and bad data failing early.

Every data set here is written as real idx files and read back by torchvision's own reader. Images
from ``write_indexed_family`` spell their own index in two pixels (tests/idx.py), so a test can
tell which sample of the file landed in which split, and in which order.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.datasets
from conftest import compose, read_runs, tiny_overrides
from hydra.utils import instantiate
from idx import (
    RAW_FILES,
    decode_index,
    overwrite,
    raw_path,
    read_idx_bytes,
    truncate,
    write_idx,
    write_indexed_family,
)
from omegaconf import OmegaConf

from lossbench.data import Batches, DataError, ImageData, ShuffledBatches
from lossbench.errors import ConfigError
from lossbench.sources import import_files

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST = 600, 200
MEAN, STD = 0.5, 0.25  # not MNIST's own, so the tests see that the given values are the ones used
ALL_FILES = RAW_FILES[True] + RAW_FILES[False]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> tuple[Path, dict]:
    """A 600/200 MNIST root whose images spell their index; also the arrays written."""
    root = tmp_path_factory.mktemp("indexed")
    return root, write_indexed_family(root, "MNIST", N_TRAIN, N_TEST)


@functools.cache
def data_node(name: str = "mnist"):
    """The composed ``data`` node of ``data=<name>`` (composed once: the tests build many modules from it)."""
    return compose(f"data={name}").data


def family(root: Path, name: str = "mnist", **kw) -> ImageData:
    """An offline data module of ``conf/data/<name>.yaml`` over ``root`` with small splits (val 100, train_eval 50)."""
    kw = {"download": False, "mean": MEAN, "std": STD, "val_size": 100, "train_eval_size": 50, **kw}
    return instantiate(data_node(name), root=str(root), **kw)


def pixels_of(x: torch.Tensor, mean: float = MEAN, std: float = STD) -> np.ndarray:
    """Undo the normalisation: the uint8 pixel values a normalised ``(N, 1, 28, 28)`` tensor came from."""
    return np.rint((x.double().numpy()[:, 0] * std + mean) * 255).astype(np.int64)


def origin(x: torch.Tensor, mean: float = MEAN, std: float = STD) -> np.ndarray:
    """The file index of each normalised image."""
    return decode_index(pixels_of(x, mean, std))


def flat(batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (x, y) mini-batches in order, whether given one by one or in chunks (lists of them)."""
    return [pair for item in batches for pair in (item if isinstance(item, list) else [item])]


def labels_in_order(batches) -> list[int]:
    return torch.cat([y for _, y in flat(batches)]).tolist()


# --------------------------------------------------------------------------- splits


def test_split_sizes_with_val_size_as_a_count(indexed):
    root, _ = indexed
    dm = family(root, val_size=100, train_eval_size=50)
    s = dm.load()
    assert dm.sizes == {"train": 500, "val": 100, "test": 200, "train_eval": 50}
    assert (
        s.train_x.shape == (500, 1, 28, 28) and s.val_x.shape == (100, 1, 28, 28) and s.test_x.shape == (200, 1, 28, 28)
    )
    assert s.train_y.shape == (500,) and s.val_y.shape == (100,) and s.test_y.shape == (200,)
    assert {t.dtype for t in (s.train_x, s.val_x, s.test_x)} == {torch.float32}
    assert {t.dtype for t in (s.train_y, s.val_y, s.test_y)} == {torch.int64}


@pytest.mark.parametrize("fraction, n_val", [(0.25, 150), (0.1, 60), (0.3333, 200)])
def test_val_size_as_a_fraction_of_the_training_file(indexed, fraction, n_val):
    root, _ = indexed
    assert family(root, val_size=fraction).sizes == {
        "train": N_TRAIN - n_val,
        "val": n_val,
        "test": N_TEST,
        "train_eval": 50,
    }


def test_train_size_caps_the_training_split_with_the_same_images_for_every_run_seed(indexed):
    root, _ = indexed
    full = family(root, shuffle_seed=0).load()
    capped = [family(root, train_size=120, shuffle_seed=seed) for seed in (0, 7)]
    assert [dm.sizes["train"] for dm in capped] == [120, 120]
    first, second = (origin(dm.load().train_x) for dm in capped)
    assert first.tolist() == second.tolist() == origin(full.train_x)[:120].tolist()
    assert set(origin(capped[0].load().train_x[capped[0].load().train_eval_idx])) <= set(first.tolist())
    assert origin(capped[0].load().val_x).tolist() == origin(full.val_x).tolist(), "validation is unchanged"


@pytest.mark.parametrize("val_size", [600, 10_000, 0.0001, 0.9999])
def test_val_size_leaving_a_split_empty_is_a_data_error(indexed, val_size):
    root, _ = indexed
    with pytest.raises(DataError, match=r"data\.val_size"):
        family(root, val_size=val_size).load()


def test_train_and_val_partition_the_training_file_and_keep_their_labels_and_pixels(indexed):
    root, written = indexed
    images, labels = written["train"]
    s = family(root).load()
    train_i, val_i = origin(s.train_x), origin(s.val_x)

    assert len(set(train_i)) == 500 and len(set(val_i)) == 100
    assert not set(train_i) & set(val_i)
    assert sorted([*train_i, *val_i]) == list(range(N_TRAIN))
    # a shuffled split, not the first or last rows of the file (files can be sorted by class)
    assert sorted(val_i) != list(range(min(val_i), min(val_i) + 100))
    # every pixel and every label follows its image into its split
    np.testing.assert_array_equal(pixels_of(s.train_x), images[train_i])
    np.testing.assert_array_equal(pixels_of(s.val_x), images[val_i])
    np.testing.assert_array_equal(s.train_y.numpy(), labels[train_i])
    np.testing.assert_array_equal(s.val_y.numpy(), labels[val_i])


def test_validation_split_depends_on_split_seed_not_on_the_run_seed(indexed, tmp_path):
    root, _ = indexed

    def val_rows(seed: int, *extra: str) -> list[int]:
        cfg = compose(*tiny_overrides(root, tmp_path / "unused.db", f"seed={seed}", "data.download=false", *extra))
        return origin(instantiate(cfg.data, shuffle_seed=cfg.seed).load().val_x, cfg.data.mean, cfg.data.std).tolist()

    base = val_rows(0)
    assert len(base) == 100
    assert val_rows(7) == base, "the run seed changed the validation split"
    assert val_rows(123, "data.label_noise.rate=0.3") == base, "label noise changed the validation split"
    other = val_rows(0, "data.split_seed=1")
    assert sorted(other) != sorted(base), "data.split_seed did not change the validation split"


def test_test_set_is_the_files_content_normalised_in_file_order(indexed):
    root, _ = indexed
    s = family(root).load()
    images = read_idx_bytes(raw_path(root, "MNIST", False, "images"), ndim=3)
    labels = read_idx_bytes(raw_path(root, "MNIST", False, "labels"), ndim=1)
    expected = (images.astype(np.float64) / 255 - MEAN) / STD
    np.testing.assert_allclose(s.test_x[:, 0].numpy(), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(s.test_y.numpy(), labels)


def test_normalising_with_the_datas_own_mean_and_std_gives_zero_mean_and_unit_std(indexed):
    root, _ = indexed
    pixels = read_idx_bytes(raw_path(root, "MNIST", True, "images"), ndim=3).astype(np.float64) / 255
    mean, std = float(pixels.mean()), float(pixels.std())
    s = family(root, mean=mean, std=std).load()
    train_and_val = torch.cat([s.train_x, s.val_x]).double()
    assert abs(float(train_and_val.mean())) < 1e-5
    assert abs(float(train_and_val.std(correction=0)) - 1) < 1e-5
    # each value is (pixel / 255 - mean) / std
    images = read_idx_bytes(raw_path(root, "MNIST", True, "images"), ndim=3)
    rows = origin(s.train_x, mean, std)
    np.testing.assert_allclose(s.train_x[:, 0].numpy(), (images[rows] / 255 - mean) / std, rtol=0, atol=1e-5)


def test_mean_and_std_come_from_the_config(indexed, tmp_path):
    root, _ = indexed
    cfg = compose(*tiny_overrides(root, tmp_path / "unused.db", "data.download=false", "data.mean=0.2", "data.std=0.4"))
    s = instantiate(cfg.data, shuffle_seed=0).load()
    images = read_idx_bytes(raw_path(root, "MNIST", False, "images"), ndim=3)
    np.testing.assert_allclose(s.test_x[:, 0].numpy(), (images / 255 - 0.2) / 0.4, rtol=0, atol=1e-5)


@pytest.mark.parametrize("data", ["mnist", "fashion_mnist"])
def test_the_data_node_builds_the_data_module_with_every_key(data: str):
    cfg = compose(f"data={data}", "data.label_noise.rate=0.2", "data.train_size=300", "seed=4")
    dm = instantiate(cfg.data, shuffle_seed=cfg.seed)
    assert type(dm) is ImageData
    node = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k != "_target_"}
    derived = {"root", "source", "shape", "class_names", "noise_map"}  # built into objects, checked below
    built = {key: getattr(dm, key) for key in node if key not in derived}
    assert built == {k: v for k, v in node.items() if k not in derived}
    assert dm.root == Path(node["root"]).resolve() and dm.shape == tuple(node["shape"])
    assert dm.class_names_given is None and dm.noise_map == [tuple(p) for p in node["noise_map"]]
    assert dm.source.dataset == node["source"]["dataset"] and dm.source.folder == node["source"]["folder"]
    assert type(dm.source).__name__ == node["source"]["_target_"].rsplit(".", 1)[1] == "IdxFiles"
    assert (dm.name, dm.source.dataset, dm.shuffle_seed) == (
        data,
        {"mnist": "torchvision.datasets.MNIST"}.get(data, "torchvision.datasets.FashionMNIST"),
        4,
    )
    assert type(dm.label_noise) is dict and dm.label_noise["rate"] == 0.2


# --------------------------------------------------------------------------- the fixed training subset


@pytest.mark.parametrize("size, expected", [(50, 50), (500, 500), (10_000, 500), (0, 0)])
def test_train_eval_subset_has_min_of_its_size_and_the_training_split(indexed, size, expected):
    root, _ = indexed
    dm = family(root, train_eval_size=size)
    idx = dm.load().train_eval_idx.tolist()
    assert len(idx) == expected and len(set(idx)) == expected
    assert all(0 <= i < 500 for i in idx)
    loaders = dm.val_dataloader()
    assert len(loaders) == (2 if expected else 1), (
        "train_eval is evaluated as a second validation loader when not empty"
    )
    if expected:
        assert sum(len(y) for _, y in loaders[1]) == expected


def test_train_eval_subset_is_fixed_across_seeds_and_epochs_and_comes_from_the_training_split(indexed):
    root, written = indexed

    def subset(shuffle_seed: int, epoch: int):
        dm = family(root, shuffle_seed=shuffle_seed, train_eval_size=50)
        dm.load()
        dm.trainer = SimpleNamespace(current_epoch=epoch)
        val, train_eval = dm.val_dataloader()
        x, y = torch.cat([b[0] for b in train_eval]), torch.cat([b[1] for b in train_eval])
        assert torch.equal(torch.cat([b[1] for b in val]), dm.splits.val_y)
        return origin(x), y.numpy(), dm.splits

    rows, y, s = subset(0, 0)
    assert len(set(rows)) == 50
    for seed, epoch in [(0, 3), (5, 0), (5, 7)]:
        other_rows, other_y, _ = subset(seed, epoch)
        np.testing.assert_array_equal(other_rows, rows)
        np.testing.assert_array_equal(other_y, y)
    assert set(rows) <= set(origin(s.train_x)), "train_eval must be drawn from the training split"
    assert not set(rows) & set(origin(s.val_x)), "train_eval must not contain validation images"
    np.testing.assert_array_equal(y, written["train"][1][rows])
    assert int(s.train_eval_idx.max()) > 250, "train_eval should be spread over the training split"


# --------------------------------------------------------------------------- a seed is a replication (data.redraw)

NOISES = {
    "label_noise": {"rate": 0.3, "kind": "symmetric", "seed": 0},
    "input_noise": {"rate": 0.2, "kind": "uniform", "seed": 0, "std": 0.5},
}


def draws(root: Path, seed: int, redraw: bool = True, **kw) -> dict[str, list[int]]:
    """What one run's data drew, as file indices: its validation rows, training rows (a subset of 120), train_eval
    rows, the rows whose label was flipped and the rows whose image was corrupted."""
    dm = family(root, shuffle_seed=seed, redraw=redraw, train_size=120, **{**NOISES, **kw})
    s = dm.load()
    clean = family(root, shuffle_seed=seed, redraw=redraw, train_size=120).load()
    rows = origin(clean.train_x)
    assert torch.equal(clean.val_x, s.val_x) and torch.equal(clean.train_y, s.train_true_y), "noise moved the split"
    corrupted = (s.train_x != clean.train_x).flatten(1).any(dim=1)
    return {
        "val": origin(s.val_x).tolist(),
        "train": rows.tolist(),
        "train_eval": rows[s.train_eval_idx].tolist(),
        "flipped": rows[(s.train_y != s.train_true_y).numpy()].tolist(),
        "corrupted": rows[corrupted.numpy()].tolist(),
    }


def test_redraw_false_draws_the_data_as_before_whatever_the_seed(indexed):
    """The default: split, subset, train_eval rows and both noises are those of data.split_seed and the noise seeds
    (written out here as the code drew them before data.redraw existed), bit for bit, for every run seed."""
    root, written = indexed
    perm = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(0))
    val_idx, train_idx = perm[:100], perm[100:][:120]
    train_eval = torch.randperm(120, generator=torch.Generator().manual_seed(1))[:50].sort().values
    from lossbench.noise import corrupt_labels

    flipped, _ = corrupt_labels(torch.from_numpy(written["train"][1])[train_idx], 0.3, "symmetric", 0, 10)
    for seed in (0, 7):
        dm = family(root, shuffle_seed=seed, train_size=120, label_noise=NOISES["label_noise"])
        s = dm.load()
        assert origin(s.val_x).tolist() == val_idx.tolist() and origin(s.train_x).tolist() == train_idx.tolist()
        assert torch.equal(s.train_eval_idx, train_eval) and torch.equal(s.train_y, flipped)
        assert dm.seed_drives == ("init", "order")
    assert draws(root, 0, redraw=False) == draws(root, 7, redraw=False)


def test_redraw_true_draws_each_source_from_the_run_seed(indexed):
    root, _ = indexed
    first, again, other = draws(root, 0), draws(root, 0), draws(root, 1)
    assert first == again, "the same seed must draw the same data"
    for source in first:
        assert sorted(first[source]) != sorted(other[source]), f"seed 1 drew the same {source} as seed 0"
    assert len(first["val"]) == 100 and len(first["train"]) == 120 and len(first["train_eval"]) == 50
    assert len(first["flipped"]) <= round(0.3 * 120) and len(first["corrupted"]) == round(0.2 * 120)
    assert not set(first["val"]) & set(first["train"]) and set(first["train_eval"]) <= set(first["train"])


def test_redrawn_sources_are_independent_streams(indexed):
    """Asking for one draw (a subset, label noise) does not shift another (the validation split, the subset)."""
    root, _ = indexed
    with_noise = draws(root, 3)
    plain = family(root, shuffle_seed=3, redraw=True).load()
    assert origin(plain.val_x).tolist() == with_noise["val"], "train_size or noise shifted the validation split"
    no_input_noise = draws(root, 3, input_noise={"rate": 0.0})
    assert no_input_noise["train"] == with_noise["train"] and no_input_noise["flipped"] == with_noise["flipped"]


def test_seed_drives_names_the_sources_in_effect(indexed):
    root, _ = indexed
    assert family(root, redraw=True).seed_drives == ("init", "order", "split")
    noisy = family(root, redraw=True, train_size=50, **NOISES)
    assert noisy.seed_drives == ("init", "order", "split", "subset", "label_noise", "input_noise")


# --------------------------------------------------------------------------- batches


def _tensors(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n)
    return (y.float() * 10).reshape(n, 1).expand(n, 3).contiguous(), y


def test_shuffled_batches_cover_every_sample_once_per_epoch_with_a_ragged_last_batch():
    x, y = _tensors(103)
    b = ShuffledBatches(x, y, batch_size=10, seed=0, epoch=lambda: 0)
    assert len(b) == 11
    batches = flat(b)
    assert [len(yb) for _, yb in batches] == [10] * 10 + [3]
    for xb, yb in batches:
        assert torch.equal(xb, (yb.float() * 10).reshape(-1, 1).expand(-1, 3)), "rows of x and y must stay paired"
    order = labels_in_order(batches)
    assert sorted(order) == list(range(103))
    assert order != list(range(103)), "not shuffled"


@pytest.mark.parametrize(
    "n, batch_size, expected", [(100, 10, 10), (101, 10, 11), (5, 64, 1), (64, 64, 1), (65, 64, 2), (500, 64, 8)]
)
def test_len_counts_the_ragged_last_batch(n, batch_size, expected):
    x, y = _tensors(n)
    shuffled, ordered = ShuffledBatches(x, y, batch_size, 0, lambda: 0), Batches(x, y, batch_size)
    assert len(shuffled) == len(list(shuffled)) == expected
    assert len(ordered) == len(list(ordered)) == expected


@pytest.mark.parametrize("per_step, chunks", [(1, 11), (3, 4), (11, 1), (16, 1)])
def test_chunks_group_consecutive_minibatches_without_changing_them(per_step: int, chunks: int):
    x, y = _tensors(103)
    chunked = ShuffledBatches(x, y, 10, seed=0, epoch=lambda: 0, per_step=per_step)
    assert len(chunked) == len(list(chunked)) == chunks
    assert all(isinstance(c, list) and 1 <= len(c) <= per_step for c in chunked)
    one_by_one = flat(ShuffledBatches(x, y, 10, seed=0, epoch=lambda: 0, per_step=1))
    assert [yb.tolist() for _, yb in flat(chunked)] == [yb.tolist() for _, yb in one_by_one]


def test_shuffled_order_depends_on_seed_and_epoch_only():
    x, y = _tensors(200)
    epoch = {"now": 0}
    b = ShuffledBatches(x, y, 16, seed=3, epoch=lambda: epoch["now"])
    rng_state = torch.get_rng_state()
    first = labels_in_order(b)
    assert torch.equal(torch.get_rng_state(), rng_state), "iterating must not draw from the global RNG"

    torch.manual_seed(12345)  # the global RNG must not matter
    assert labels_in_order(b) == first, "same seed and epoch, different order"
    assert labels_in_order(ShuffledBatches(x.clone(), y.clone(), 16, 3, lambda: 0)) == first, "a fresh object differs"
    assert labels_in_order(ShuffledBatches(x, y, 16, 4, lambda: 0)) != first, "the seed does not change the order"

    orders = [first]
    for e in range(1, 5):
        epoch["now"] = e
        orders.append(labels_in_order(b))
        assert sorted(orders[-1]) == list(range(200))
    assert len({tuple(o) for o in orders}) == 5, "some epochs repeat the order of another"
    epoch["now"] = 0
    assert labels_in_order(b) == first, "going back to epoch 0 must give epoch 0's order"


def test_the_data_module_shuffles_the_training_split_by_run_seed_and_trainer_epoch(indexed):
    root, _ = indexed

    def order(seed: int, epoch: int) -> list[int]:
        dm = family(root, shuffle_seed=seed, batch_size=64)
        dm.load()
        dm.trainer = SimpleNamespace(current_epoch=epoch)
        batches = flat(dm.train_dataloader())
        assert [len(yb) for _, yb in batches] == [64] * 7 + [500 - 7 * 64]
        rows = np.concatenate([origin(xb) for xb, _ in batches]).tolist()
        return rows

    first = order(0, 0)
    assert sorted(first) == sorted(origin(family(root).load().train_x).tolist()), (
        "an epoch must cover the training split once"
    )
    assert order(0, 0) == first
    assert order(0, 1) != first
    assert order(1, 0) != first


def test_batches_are_in_order_with_a_ragged_last_batch():
    x, y = _tensors(103)
    batches = list(Batches(x, y, 10))
    assert [len(yb) for _, yb in batches] == [10] * 10 + [3]
    assert labels_in_order(batches) == list(range(103))
    assert torch.equal(torch.cat([xb for xb, _ in batches]), x)


# --------------------------------------------------------------------------- label noise wiring


def test_label_noise_flips_exactly_round_rate_n_training_labels_and_nothing_else(indexed):
    root, _ = indexed
    clean_dm = family(root)
    clean = clean_dm.load()
    dm = family(root, label_noise={"rate": 0.4, "kind": "symmetric", "seed": 0})
    noisy = dm.load()

    assert int((noisy.train_y != clean.train_y).sum()) == round(0.4 * 500) == 200
    assert 0 <= int(noisy.train_y.min()) and int(noisy.train_y.max()) <= 9
    assert torch.equal(noisy.train_x, clean.train_x), "noise must not move images"
    assert torch.equal(noisy.val_y, clean.val_y) and torch.equal(noisy.test_y, clean.test_y)
    assert torch.equal(noisy.val_x, clean.val_x) and torch.equal(noisy.test_x, clean.test_x)
    report = dm.noise_report
    assert report["flipped"] == 200 and report["num_samples"] == 500
    assert report["rate"] == 0.4 and report["kind"] == "symmetric" and report["seed"] == 0
    assert report["fraction_flipped"] == pytest.approx(0.4)
    assert clean_dm.noise_report == {}


def test_label_noise_from_the_config_with_noisy_val(indexed, tmp_path):
    root, _ = indexed

    def load(seed: int, *extra: str) -> tuple[ImageData, object]:
        cfg = compose(*tiny_overrides(root, tmp_path / "unused.db", f"seed={seed}", "data.download=false", *extra))
        dm = instantiate(cfg.data, shuffle_seed=cfg.seed)
        return dm, dm.load()

    _, clean = load(0)
    noisy_args = ("data.label_noise.rate=0.4", "data.label_noise.noisy_val=true", "data.label_noise.seed=5")
    dm, noisy = load(0, *noisy_args)
    assert int((noisy.train_y != clean.train_y).sum()) == 200
    assert int((noisy.val_y != clean.val_y).sum()) == round(0.4 * 100) == 40
    assert torch.equal(noisy.test_y, clean.test_y), "test labels must stay clean"
    assert dm.noise_report["flipped"] == 200 and dm.noise_report["seed"] == 5
    # the noise depends on its own seed, not on the run's
    _, other_run = load(9, *noisy_args)
    assert torch.equal(other_run.train_y, noisy.train_y) and torch.equal(other_run.val_y, noisy.val_y)
    _, other_noise = load(0, "data.label_noise.rate=0.4", "data.label_noise.noisy_val=true", "data.label_noise.seed=6")
    assert not torch.equal(other_noise.train_y, noisy.train_y)
    # noisy_val=false (the default) keeps validation clean
    _, train_only = load(0, "data.label_noise.rate=0.4", "data.label_noise.seed=5")
    assert torch.equal(train_only.val_y, clean.val_y) and torch.equal(train_only.train_y, noisy.train_y)


# --------------------------------------------------------------------------- bad data
# Each case breaks a valid tiny root and returns (the file to blame, a fragment of the message).


def _truncated_images(root: Path):
    p = raw_path(root, "MNIST", True, "images")
    truncate(p, 100)
    return p, "truncated"


def _truncated_labels(root: Path):
    p = raw_path(root, "MNIST", True, "labels")
    truncate(p, 5)
    return p, "truncated"


def _shorter_than_its_header(root: Path):
    p = raw_path(root, "MNIST", False, "images")
    p.write_bytes(p.read_bytes()[:10])
    return p, "truncated"


def _empty_labels_file(root: Path):
    p = raw_path(root, "MNIST", False, "labels")
    p.write_bytes(b"")
    return p, "truncated"


def _wrong_magic(root: Path):
    p = raw_path(root, "MNIST", True, "images")
    overwrite(p, 0, bytes([0, 0, 0x08, 0x01]))  # says 1 dimension: a labels header on an images file
    return p, "magic"


def _gzip_under_the_plain_name(root: Path):
    p = raw_path(root, "MNIST", True, "labels")
    p.write_bytes(gzip.compress(p.read_bytes()))
    return p, "magic"


def _float_idx_labels(root: Path):
    p = raw_path(root, "MNIST", False, "labels")
    overwrite(p, 2, bytes([0x0D]))  # idx type 0x0D is float32
    return p, "magic"


def _train_labels_out_of_range(root: Path):
    p = raw_path(root, "MNIST", True, "labels")
    labels = read_idx_bytes(p, ndim=1).copy()
    labels[[3, 7]] = [10, 255]
    write_idx(p, labels)
    return p, "2 labels outside 0..9"


def _test_labels_out_of_range(root: Path):
    p = raw_path(root, "MNIST", False, "labels")
    labels = read_idx_bytes(p, ndim=1).copy()
    labels[0] = 11
    write_idx(p, labels)
    return p, "outside 0..9"


def _wrong_shape(root: Path):
    p = raw_path(root, "MNIST", True, "images")
    write_idx(p, np.zeros((N_TRAIN, 32, 32), dtype=np.uint8))
    return p, "32x32"


def _count_mismatch(root: Path):
    p = raw_path(root, "MNIST", True, "labels")
    write_idx(p, read_idx_bytes(p, ndim=1)[:-1])
    return p, f"{N_TRAIN - 1} labels for {N_TRAIN} images"


BAD_DATA = {
    "truncated images": _truncated_images,
    "truncated labels": _truncated_labels,
    "shorter than its header": _shorter_than_its_header,
    "empty labels file": _empty_labels_file,
    "wrong magic": _wrong_magic,
    "gzip under the plain name": _gzip_under_the_plain_name,
    "float idx labels": _float_idx_labels,
    "train labels out of range": _train_labels_out_of_range,
    "test labels out of range": _test_labels_out_of_range,
    "wrong shape": _wrong_shape,
    "count mismatch": _count_mismatch,
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_a_data_error_naming_the_file(tiny_mnist: Path, case: str):
    path, fragment = BAD_DATA[case](tiny_mnist)
    with pytest.raises(DataError) as e:
        family(tiny_mnist).load()
    message = str(e.value)
    assert str(path.resolve()) in message
    assert fragment in message
    if case == "count mismatch":
        assert str(raw_path(tiny_mnist, "MNIST", True, "images").resolve()) in message


def test_missing_files_offline_name_the_files_the_folder_and_the_import_script(tmp_path: Path):
    root = tmp_path / "nothing-here"
    with pytest.raises(DataError) as e:
        family(root, download=False).load()
    message = str(e.value)
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert str((root / "MNIST" / "raw").resolve()) in message
    assert "scripts/prepare_data.py" in message


@pytest.mark.parametrize("download", [False, True], ids=["offline", "download"])
def test_a_missing_test_file_is_a_data_error_naming_it(tiny_mnist: Path, monkeypatch, download: bool):
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # see the test below
    raw_path(tiny_mnist, "MNIST", False, "labels").unlink()
    with pytest.raises(DataError) as e:
        family(tiny_mnist, download=download).load()
    message = str(e.value)
    missing_part = message.split("(download failed")[0]  # torchvision's own error names what it tried first
    assert "t10k-labels-idx1-ubyte" in missing_part
    assert not any(
        name in missing_part
        for name in ("t10k-images-idx3-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    )
    assert str((tiny_mnist / "MNIST" / "raw").resolve()) in message and "scripts/prepare_data.py" in message
    if download:
        assert "download failed" in message


def test_a_missing_training_file_is_named_alone(tiny_mnist: Path):
    raw_path(tiny_mnist, "MNIST", True, "labels").unlink()
    with pytest.raises(DataError) as e:
        family(tiny_mnist, download=False).load()
    message = str(e.value)
    assert "train-labels-idx1-ubyte" in message and "train-images-idx3-ubyte" not in message
    assert str((tiny_mnist / "MNIST" / "raw").resolve()) in message and "scripts/prepare_data.py" in message


def test_a_failed_download_is_a_data_error_that_says_so(tmp_path: Path, monkeypatch):
    # No network, made certain: the only mirror is a closed local port (refused at once), so the
    # test means the same offline and online, and does not wait on DNS.
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    root = tmp_path / "data"
    with pytest.raises(DataError) as e:
        family(root, download=True).load()
    message = str(e.value)
    assert "download failed" in message
    assert "train-images-idx3-ubyte" in message and "scripts/prepare_data.py" in message
    assert str((root / "MNIST" / "raw").resolve()) in message


def test_a_source_class_that_does_not_exist_fails_when_the_data_is_built(tmp_path: Path):
    from lossbench.train import run

    cfg = compose(*tiny_overrides(tmp_path, tmp_path / "mlflow.db", "data.source.dataset=torchvision.datasets.Nope"))
    with pytest.raises(ConfigError, match=r"^data: cannot be built from its config: .*torchvision\.datasets\.Nope"):
        run(cfg)
    assert not (tmp_path / "mlflow.db").exists()


# --------------------------------------------------------------------------- importing a folder of idx files


def _idx_folder(tmp_path: Path, packed: bool, skip: str | None = None) -> tuple[Path, dict[str, bytes]]:
    """A flat folder of the four idx files (gzipped or plain), as Debian ships them; and their bytes."""
    write_indexed_family(tmp_path / "made", "MNIST", 100, 30, seed=1)
    src = tmp_path / ("packed" if packed else "plain")
    src.mkdir()
    contents = {}
    for name in ALL_FILES:
        contents[name] = (tmp_path / "made" / "MNIST" / "raw" / name).read_bytes()
        if name != skip:
            (src / (name + ".gz" if packed else name)).write_bytes(
                gzip.compress(contents[name]) if packed else contents[name]
            )
    return src, contents


@pytest.mark.parametrize("packed", [True, False], ids=["gz", "plain"])
def test_import_idx_folder_unpacks_into_the_layout_torchvision_reads(tmp_path: Path, packed: bool):
    src, contents = _idx_folder(tmp_path, packed)
    root = tmp_path / "root"
    raw = import_files(src, root, family(root, "fashion_mnist").source, (1, 28, 28))
    assert raw == root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(ALL_FILES)
    for name in ALL_FILES:
        assert (raw / name).read_bytes() == contents[name], name
    dm = family(root, "fashion_mnist", val_size=10, train_eval_size=10)
    assert dm.sizes == {"train": 90, "val": 10, "test": 30, "train_eval": 10}
    np.testing.assert_array_equal(
        dm.load().test_y.numpy(), np.frombuffer(contents["t10k-labels-idx1-ubyte"][8:], np.uint8)
    )


def test_import_idx_folder_missing_a_file_names_it(tmp_path: Path):
    src, _ = _idx_folder(tmp_path, packed=True, skip="t10k-labels-idx1-ubyte")
    with pytest.raises(DataError) as e:
        import_files(src, tmp_path / "root", family(tmp_path, "fashion_mnist").source, (1, 28, 28))
    assert "t10k-labels-idx1-ubyte" in str(e.value) and str(src) in str(e.value)


def test_import_idx_folder_checks_what_it_imports(tmp_path: Path):
    src, contents = _idx_folder(tmp_path, packed=False)
    (src / "train-labels-idx1-ubyte").write_bytes(contents["train-labels-idx1-ubyte"][:-3])
    with pytest.raises(DataError, match="truncated") as e:
        import_files(src, tmp_path / "root", family(tmp_path).source, (1, 28, 28))
    assert "train-labels-idx1-ubyte" in str(e.value)


@pytest.mark.parametrize("damage", ["truncated gz", "plain bytes named .gz"])
def test_import_idx_folder_with_a_broken_gz_is_a_data_error_naming_it(tmp_path: Path, damage: str):
    src, contents = _idx_folder(tmp_path, packed=True)
    bad = src / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:200] if damage == "truncated gz" else contents["train-images-idx3-ubyte"])
    with pytest.raises(DataError) as e:
        import_files(src, tmp_path / "root", family(tmp_path).source, (1, 28, 28))
    assert str(bad) in str(e.value)


def _prepare_data_main():
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "scripts" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_prepare_data_script_imports_a_folder(tmp_path: Path, capsys):
    src, contents = _idx_folder(tmp_path, packed=True)
    root = tmp_path / "root"
    assert _prepare_data_main()(["--from", str(src), "--data", "kmnist", "--root", str(root)]) == 0
    for name in ALL_FILES:
        assert (root / "KMNIST" / "raw" / name).read_bytes() == contents[name]
    assert "kmnist ready in" in capsys.readouterr().out


def test_prepare_data_script_exits_2_naming_a_missing_file(tmp_path: Path):
    src, _ = _idx_folder(tmp_path, packed=True, skip="train-labels-idx1-ubyte")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "prepare_data.py"),
            "--data",
            "fashion_mnist",
            "--from",
            str(src),
            "--root",
            str(tmp_path / "root"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "prepare_data: error:" in done.stderr and "train-labels-idx1-ubyte" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- a whole run on bad data


@pytest.mark.parametrize("case", ["truncated images", "wrong magic", "train labels out of range", "wrong shape"])
def test_a_run_on_bad_data_fails_before_anything_is_recorded(tiny_mnist: Path, tmp_path: Path, case: str):
    from lossbench.train import run

    path, fragment = BAD_DATA[case](tiny_mnist)
    store = tmp_path / "mlflow.db"
    cfg = compose(*tiny_overrides(tiny_mnist, store))
    with pytest.raises(DataError) as e:
        run(cfg)
    assert str(path.resolve()) in str(e.value) and fragment in str(e.value)
    if store.exists():
        _, runs = read_runs(store)
        assert runs == [], "a run on bad data must not be recorded"
    assert not (tmp_path / "checkpoints").exists()
