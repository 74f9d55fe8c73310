"""Every shipped data set, from small files in its real on-disk format, through the code path a real download takes.

tests/formats.py writes each format (idx files, CIFAR's pickled batches, SVHN's MATLAB files, an image folder, .npz);
torchvision's own classes read them. CIFAR and SVHN are checked against the md5s of the real downloads, so those
are read through tests/unchecked.py's subclasses, which change nothing but the expected checksums; the production
classes are shown to refuse the same files.
"""

from __future__ import annotations

import functools
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose, read_runs
from formats import (
    CIFAR10_CLASSES,
    decode,
    write_cifar10,
    write_cifar100,
    write_emnist,
    write_image_folder,
    write_npz,
    write_svhn,
)
from hydra.utils import instantiate
from idx import write_mnist_family
from omegaconf import OmegaConf

from lossbench.config import validate
from lossbench.data import Batches, BatchTransform, DataError, ShuffledBatches, normalise
from lossbench.errors import ConfigError
from lossbench.shipped import data_names, data_yaml

UNCHECKED = {
    "cifar10": "unchecked.UncheckedCIFAR10",
    "cifar100": "unchecked.UncheckedCIFAR100",
    "svhn": "unchecked.UncheckedSVHN",
}
WRITERS = {
    "mnist": lambda root: write_mnist_family(root, "MNIST", 300, 100),
    "fashion_mnist": lambda root: write_mnist_family(root, "FashionMNIST", 300, 100),
    "kmnist": lambda root: write_mnist_family(root, "KMNIST", 300, 100),
    "emnist": lambda root: write_emnist(root, 470, 94),
    "cifar10": lambda root: write_cifar10(root, 300, 100),
    "cifar100": lambda root: write_cifar100(root, 400, 100),
    "svhn": lambda root: write_svhn(root, 300, 100),
    "folder": lambda root: write_image_folder(root, per_class=(100, 30)),
    "npz": lambda root: write_npz(root, 300, 100),
}
TEST_SIZES = {"mnist": 100, "fashion_mnist": 100, "kmnist": 100, "emnist": 94, "cifar10": 100, "cifar100": 100}
TEST_SIZES.update({"svhn": 100, "folder": 90, "npz": 100})


def test_every_shipped_data_set_has_a_writer_here():
    assert data_names() == sorted(WRITERS)
    assert {"mnist", "fashion_mnist", "kmnist", "emnist", "cifar10", "cifar100", "svhn", "folder", "npz"} == set(
        WRITERS
    )


@functools.cache
def written(name: str, base: Path) -> Path:
    root = base / name
    WRITERS[name](root)
    return root


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets")


def overrides(name: str, root: Path, *extra: str) -> list[str]:
    """A small, offline run of ``data=<name>`` on ``root`` (checksums skipped by the test-only classes)."""
    small = [] if name in ("folder", "npz") else ["data.val_size=50"]
    unchecked = [f"data.source.dataset={UNCHECKED[name]}"] if name in UNCHECKED else []
    return [
        f"data={name}",
        f"data.root={root}",
        "data.download=false",
        "data.train_eval_size=50",
        *small,
        *unchecked,
        *extra,
    ]


def built(name: str, root: Path, *extra: str):
    return instantiate(compose(*overrides(name, root, *extra)).data, shuffle_seed=0)


# --------------------------------------------------------------------------- each format, through its real reader


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_data_set_loads_from_its_own_format_with_its_shape_and_sizes(name: str, roots: Path):
    dm = built(name, written(name, roots))
    s = dm.load()
    node = OmegaConf.to_container(compose(*overrides(name, written(name, roots))).data, resolve=True)
    assert tuple(s.train_x.shape[1:]) == tuple(s.test_x.shape[1:]) == tuple(node["shape"]) == dm.shape
    assert s.train_x.dtype == (torch.uint8 if node["hold"] == "uint8" else torch.float32)
    assert dm.sizes["test"] == TEST_SIZES[name]
    assert int(max(s.train_y.max(), s.test_y.max())) < node["num_classes"]
    names = dm.class_names
    assert names is None or len(names) == node["num_classes"]


def test_cifar10_pixels_labels_and_class_names_land_where_the_files_put_them(tmp_path: Path):
    files = write_cifar10(tmp_path, 200, 60, index=True)
    dm = built("cifar10", tmp_path, "data.val_size=40")
    s = dm.load()
    images, labels = files["test"]
    np.testing.assert_array_equal(s.test_x.numpy(), images.transpose(0, 3, 1, 2))  # R, G, B planes, in file order
    np.testing.assert_array_equal(s.test_y.numpy(), labels)
    rows = decode(s.train_x.numpy())  # each training image is the file's image of that index, with its label
    np.testing.assert_array_equal(s.train_x.numpy(), files["train"][0][rows].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(s.train_y.numpy(), files["train"][1][rows])
    assert len(set(rows) | set(decode(s.val_x.numpy()))) == 200
    assert dm.class_names == CIFAR10_CLASSES


def test_svhn_labels_10_are_the_digit_0(tmp_path: Path):
    files = write_svhn(tmp_path, 100, 50)
    s = built("svhn", tmp_path, "data.val_size=20").load()
    np.testing.assert_array_equal(s.test_y.numpy(), files["test"][1])
    assert 0 in s.test_y.tolist() and int(s.test_y.max()) == 9
    np.testing.assert_array_equal(s.test_x.numpy(), files["test"][0].transpose(0, 3, 1, 2))


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW"])
def test_npz_images_in_any_of_the_three_layouts(tmp_path: Path, layout: str):
    shape = (1, 12, 12) if layout == "NHW" else (3, 12, 12)
    files = write_npz(tmp_path, 60, 20, classes=3, shape=shape)
    if layout == "NCHW":
        for split in ("train", "test"):
            images, labels = files[split]
            np.savez(tmp_path / f"{split}.npz", x=images.transpose(0, 3, 1, 2), y=labels)
    cfg = compose(*overrides("npz", tmp_path))
    assert list(cfg.data.shape) == list(shape) and cfg.data.num_classes == 3 and cfg.data.name == tmp_path.name
    s = instantiate(cfg.data, shuffle_seed=0).load()
    np.testing.assert_array_equal(s.test_x.numpy(), files["test"][0].transpose(0, 3, 1, 2))


def test_the_production_classes_check_md5s_and_refuse_files_that_are_not_the_real_download(roots: Path):
    for name in UNCHECKED:
        root = written(name, roots)
        cfg = compose(*[o for o in overrides(name, root) if not o.startswith("data.source.dataset=")])
        assert cfg.data.source.dataset.startswith("torchvision.datasets.")
        with pytest.raises(DataError, match=r"cannot read .*RuntimeError: Dataset not found or corrupted") as e:
            instantiate(cfg.data, shuffle_seed=0).load()
        assert str(root.resolve()) in str(e.value)


def test_a_missing_data_set_offline_says_what_to_put_where(tmp_path: Path):
    with pytest.raises(DataError) as e:
        instantiate(compose("data=cifar10", f"data.root={tmp_path}", "data.download=false").data).load()
    message = str(e.value)
    assert message.startswith("cifar10 not found: missing data_batch_1, data_batch_2, data_batch_3, data_batch_4, ")
    assert str(tmp_path / "cifar-10-batches-py") in message and "data.download=true" in message
    assert f"scripts/prepare_data.py --data cifar10 --from DIR --root {tmp_path}" in message


# --------------------------------------------------------------------------- one epoch of linear and cnn on each


@pytest.mark.parametrize("model", ["linear", "cnn"])
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_one_epoch_of_linear_and_cnn_on_every_data_set(name: str, model: str, roots: Path, tmp_path: Path):
    from lossbench.report.runs import RunRecord
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    cfg = compose(
        *overrides(name, written(name, roots)),
        f"model={model}",
        f"tracking.uri=sqlite:///{store}",
        f"tracking.checkpoint_dir={tmp_path / 'checkpoints'}",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "analysis.figures=false",
        "threads=1",
    )
    run(cfg)
    (recorded,) = read_runs(store)[1]
    assert recorded.info.status == "FINISHED" and recorded.data.tags["data"] == cfg.data.name
    assert math.isfinite(recorded.data.metrics["test/acc"]) and math.isfinite(recorded.data.metrics["train/loss"])
    record = RunRecord(recorded.info.run_id, "", "FINISHED", 0, tags=recorded.data.tags)
    assert record.test_size == TEST_SIZES[name]


def test_older_runs_have_no_test_size():
    from lossbench.report.runs import RunRecord

    assert RunRecord("r", "n", "FINISHED", 0, tags={}).test_size is None
    assert RunRecord("r", "n", "FINISHED", 0, tags={"test_size": "26032"}).test_size == 26_032


# --------------------------------------------------------------------------- every data set with every model


def _models() -> list[str]:
    from lossbench.paths import conf_dir

    return sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", _models())
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_data_and_model_pair_composes_and_passes_preflight(name: str, model: str, roots: Path):
    from lossbench.losses import build_loss
    from lossbench.preflight import check_one_batch, training_device

    root = written(name, roots) if name in ("folder", "npz") else roots / "absent"  # only these read root to compose
    cfg = compose(f"data={name}", f"model={model}", f"data.root={root}", "data.batch_size=4", "trainer.accelerator=cpu")
    validate(cfg)
    shape, classes = list(cfg.data.shape), cfg.data.num_classes
    assert list(cfg.model.net.in_shape) == shape and cfg.model.net.num_classes == classes
    torch.manual_seed(0)
    x = normalise(torch.randint(0, 256, (4, *shape), dtype=torch.uint8), *_stats(cfg))
    y = torch.arange(4) % classes
    check_one_batch(instantiate(cfg.model.net), build_loss(cfg.loss, classes), x, y, cfg, training_device(cfg.trainer))


def _stats(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    from lossbench.data import per_channel

    channels = cfg.data.shape[0]
    return per_channel(cfg.data.mean, channels, "mean"), per_channel(cfg.data.std, channels, "std")


# --------------------------------------------------------------------------- asymmetric noise maps


NOISY = [name for name in sorted(WRITERS) if data_yaml(name).get("noise_map")]


def test_the_published_maps_by_class_name():
    from torchvision.datasets import FashionMNIST

    def by_name(name: str, classes: list[str]) -> dict[str, str]:
        return {classes[s]: classes[t] for s, t in data_yaml(name).noise_map}

    assert by_name("cifar10", CIFAR10_CLASSES) == {
        "truck": "automobile",
        "bird": "airplane",
        "deer": "horse",
        "cat": "dog",
        "dog": "cat",
    }
    assert by_name("fashion_mnist", FashionMNIST.classes) == {
        "Shirt": "Pullover",
        "Coat": "Pullover",
        "Pullover": "Coat",
        "T-shirt/top": "Dress",
        "Dress": "T-shirt/top",
    }
    assert "Trouser" not in by_name("fashion_mnist", FashionMNIST.classes).values()
    assert set(NOISY) >= {"mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"}


def test_cifar100s_map_rotates_within_20_groups_of_5():
    pairs = dict(tuple(p) for p in data_yaml("cifar100").noise_map)
    assert sorted(pairs) == list(range(100)) and sorted(pairs.values()) == list(range(100)), "a permutation"
    cycles, seen = [], set()
    for start in range(100):
        if start not in seen:
            cycle, c = [], start
            while c not in cycle:
                cycle.append(c)
                c = pairs[c]
            seen |= set(cycle)
            cycles.append(cycle)
    assert sorted(len(c) for c in cycles) == [5] * 20
    assert pairs[3] == 42 and pairs[97] == 3, "bear -> leopard, wolf -> bear (large carnivores)"


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.3, 0.4])
@pytest.mark.parametrize("name", NOISY)
def test_each_data_sets_map_flips_exactly_the_named_classes_at_the_rate(name: str, rate: float):
    from lossbench.noise import corrupt_labels

    node = data_yaml(name)
    classes, pairs = node.num_classes, [tuple(p) for p in node.noise_map]
    sizes = [50 + 7 * c for c in range(classes)]
    clean = torch.from_numpy(np.random.default_rng(0).permutation(np.repeat(np.arange(classes), sizes)))
    noisy, _ = corrupt_labels(clean, rate, "asymmetric", seed=3, num_classes=classes, class_map=pairs)
    a, b = clean.numpy(), noisy.numpy()
    targets = dict(pairs)
    for c in range(classes):
        moved = (a == c) & (a != b)
        if c in targets:
            assert moved.sum() == round(rate * sizes[c]) and np.all(b[moved] == targets[c]), (name, c)
        else:
            assert moved.sum() == 0, (name, c)


@pytest.mark.parametrize("name", [n for n in sorted(WRITERS) if n not in NOISY])
def test_asymmetric_noise_without_a_map_is_refused_before_anything_runs(name: str, roots: Path):
    root = written(name, roots)
    cfg = compose(f"data={name}", f"data.root={root}", "data.label_noise.rate=0.2", "data.label_noise.kind=asymmetric")
    with pytest.raises(ConfigError, match=r"data=\S+ has none \(data.noise_map=null\): set data.noise_map="):
        validate(cfg)
    validate(compose(f"data={name}", f"data.root={root}", "data.label_noise.rate=0.2"))  # symmetric noise: any


def test_symmetric_noise_on_100_classes(roots: Path):
    dm = built("cifar100", written("cifar100", roots), "data.label_noise.rate=0.4")
    s = dm.load()
    assert int((s.train_y != s.train_true_y).sum()) == round(0.4 * len(s.train_y))


# --------------------------------------------------------------------------- held as uint8, augmented on the device


def _uint8(n: int = 37, shape=(3, 8, 8), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


MEAN, STD = torch.tensor([0.4, 0.5, 0.6]).reshape(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).reshape(1, 3, 1, 1)


def test_a_uint8_split_gives_the_same_batches_bit_for_bit_as_a_normalised_one():
    x, y = _uint8(), torch.arange(37)
    held = ShuffledBatches(normalise(x, MEAN, STD), y, 8, seed=2, epoch=lambda: 3)
    sliced = ShuffledBatches(x, y, 8, seed=2, epoch=lambda: 3, transform=BatchTransform(MEAN, STD, normalised=False))
    for (a, ya), (b, yb) in zip([p for c in held for p in c], [p for c in sliced for p in c], strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    evaluated = Batches(x, y, 10, BatchTransform(MEAN, STD, normalised=False))
    assert torch.equal(torch.cat([b for b, _ in evaluated]), normalise(x, MEAN, STD))


def _torchvision_crop_flip(image: torch.Tensor, crop: int, dy: int, dx: int, flip: int, fill) -> torch.Tensor:
    """What torchvision's RandomCrop(size, padding=crop, fill) then RandomHorizontalFlip() give for these draws."""
    from torchvision.transforms import functional as F

    h, w = image.shape[-2:]
    out = F.crop(F.pad(image, [crop], fill=fill), dy, dx, h, w)
    return F.hflip(out) if flip else out


@pytest.mark.parametrize("normalised", [False, True], ids=["uint8", "float32"])
def test_crop_and_flip_are_torchvisions_per_image(normalised: bool):
    x = _uint8()
    transform = BatchTransform(MEAN, STD, normalised=normalised, crop=4, flip=True)
    draws = transform.draw(len(x), torch.Generator().manual_seed(1))
    assert draws[:, :2].min() == 0 and draws[:, :2].max() == 8 and set(draws[:, 2].tolist()) == {0, 1}
    source = normalise(x, MEAN, STD) if normalised else x
    out = transform(source, draws)
    for i in range(len(x)):
        expected = _torchvision_crop_flip(x[i], 4, *draws[i].tolist(), fill=0)
        assert torch.equal(out[i], normalise(expected[None], MEAN, STD)[0]), i  # black padding, normalised after


def test_augmentation_is_drawn_from_seed_and_epoch_only_and_spares_evaluation():
    x, y = _uint8(n=64), torch.arange(64)
    epoch = {"now": 0}
    transform = BatchTransform(MEAN, STD, normalised=False, crop=4, flip=True)

    def batches(seed: int) -> torch.Tensor:
        return torch.cat([b for c in ShuffledBatches(x, y, 16, seed, lambda: epoch["now"], 2, transform) for b, _ in c])

    state = torch.get_rng_state()
    first = batches(0)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG is neither read nor advanced"
    torch.manual_seed(99)
    assert torch.equal(batches(0), first)
    assert not torch.equal(batches(1), first)
    epoch["now"] = 1
    assert not torch.equal(batches(0), first)
    plain = torch.cat(
        [b for c in ShuffledBatches(x, y, 16, 0, lambda: 0, 2, BatchTransform(MEAN, STD, False)) for b, _ in c]
    )
    assert not torch.equal(first, plain) and first.shape == plain.shape, "augmented"
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain, normalise(x[order], MEAN, STD)), "the same order as without augmentation"


def test_cifar_training_batches_are_augmented_and_evaluation_batches_are_not(roots: Path):
    dm = built("cifar10", written("cifar10", roots))
    dm.setup()
    s = dm.splits
    assert dm.train_transform.crop == 4 and dm.train_transform.flip
    (x, _), *_ = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
    val = torch.cat([b for b, _ in dm.val_dataloader()[0]])
    assert torch.equal(val, normalise(s.val_x, dm.transform.mean, dm.transform.std))
    test = torch.cat([b for b, _ in dm.test_dataloader()])
    assert torch.equal(test, normalise(s.test_x, dm.transform.mean, dm.transform.std))
    assert dm.head(5)[0].dtype == torch.float32


# --------------------------------------------------------------------------- a user's folder


def test_a_folder_composes_its_shape_classes_and_name(tmp_path: Path):
    write_image_folder(tmp_path / "pets", classes=("cat", "dog"), per_class=(20, 5), shape=(1, 16, 20))
    cfg = compose("data=folder", f"data.root={tmp_path / 'pets'}")
    assert cfg.data.name == "pets" and list(cfg.data.shape) == [1, 16, 20] and cfg.data.num_classes == 2
    assert list(cfg.data.class_names) == ["cat", "dog"]
    s = instantiate(cfg.data, shuffle_seed=0).load()
    assert s.test_x.shape == (10, 1, 16, 20) and s.test_y.tolist() == [0] * 5 + [1] * 5


def test_a_folder_image_of_another_size_is_named(tmp_path: Path):
    from PIL import Image

    write_image_folder(tmp_path, classes=("a", "b"), per_class=(10, 4), shape=(3, 16, 16))
    odd = tmp_path / "train" / "b" / "99999.png"
    Image.new("RGB", (20, 16)).save(odd)
    with pytest.raises(DataError, match=rf"{odd}: is 20x16, the data set's images are 16x16"):
        built("folder", tmp_path).load()


def test_a_folder_whose_test_classes_differ_is_a_data_error(tmp_path: Path):
    write_image_folder(tmp_path, classes=("a", "b"), per_class=(10, 4), shape=(3, 16, 16))
    (tmp_path / "test" / "b").rename(tmp_path / "test" / "c")
    with pytest.raises(DataError, match=r"the test split's classes \['a', 'c'\] differ from the training split's"):
        built("folder", tmp_path).load()


def test_a_folder_that_is_not_there_is_a_config_error_before_torch(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"data\.shape=None is invalid: expected \[channels, height, width\]"):
        validate(compose("data=folder", f"data.root={tmp_path / 'nothing'}"))


# --------------------------------------------------------------------------- scripts/prepare_data.py


def _prepare(*args: str) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "prepare_data", Path(__file__).parents[1] / "scripts" / "prepare_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(args))


def test_prepare_data_imports_an_archive_and_reads_it_back(tmp_path: Path, capsys):
    write_emnist(tmp_path / "made", 94, 47)
    archive = tmp_path / "emnist.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "made" / "EMNIST" / "raw", arcname="gzip")
    assert _prepare("--data", "emnist", "--from", str(archive), "--root", str(tmp_path / "root"), "--stats") == 0
    out = capsys.readouterr().out
    assert f"emnist ready in {tmp_path / 'root' / 'EMNIST' / 'raw'}" in out
    raw = (tmp_path / "root" / "EMNIST" / "raw" / "emnist-balanced-train-images-idx3-ubyte").read_bytes()
    pixels = np.frombuffer(raw, np.uint8, offset=16) / 255
    assert f"mean [{round(pixels.mean(), 4)}], std [{round(pixels.std(), 4)}]" in out
    assert "data.mean=[0.1751], data.std=[0.3332]" in out


def test_prepare_data_reads_the_import_back_through_torchvisions_checks(tmp_path: Path, capsys):
    write_cifar10(tmp_path / "made", 50, 10)
    assert _prepare("--data", "cifar10", "--from", str(tmp_path / "made"), "--root", str(tmp_path / "root")) == 2
    assert "Dataset not found or corrupted" in capsys.readouterr().err, (
        "not the real download: torchvision's md5s refuse it"
    )


# --------------------------------------------------------------------------- the two commands of the issue


@pytest.mark.slow
def test_the_issues_two_commands_run_end_to_end(tmp_path: Path):
    """``python -m lossbench.train data=cifar10 model=cnn loss=nce_rce`` (CIFAR's files read by the test-only class
    that skips their md5s) and ``python -m lossbench.train data=folder data.root=<my images>``, as a user types them."""
    import os
    import subprocess
    import sys

    from conftest import ENV

    write_cifar10(tmp_path / "data", 600, 200)
    write_image_folder(tmp_path / "my_images", per_class=(60, 20))
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), ENV.get("PYTHONPATH", "")])}
    commands = [
        ["data=cifar10", "model=cnn", "loss=nce_rce", f"data.root={tmp_path / 'data'}", "data.download=false"]
        + ["data.source.dataset=unchecked.UncheckedCIFAR10", "data.val_size=100", "trainer.max_epochs=1"],
        ["data=folder", f"data.root={tmp_path / 'my_images'}", "trainer.max_epochs=2"],
    ]
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "lossbench.train", *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    runs = {r.data.tags["data"]: r for r in read_runs(tmp_path / "mlflow.db")[1]}
    assert set(runs) == {"cifar10", "my_images"} and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert runs["cifar10"].data.tags["loss"] == "nce_rce" and runs["cifar10"].data.tags["model"] == "cnn"
    assert runs["cifar10"].data.tags["test_size"] == "200" and runs["my_images"].data.tags["test_size"] == "60"
    assert runs["my_images"].data.params["model.net.in_shape"] == "[3, 32, 32]"
