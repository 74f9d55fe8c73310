"""MNIST-family data through torchvision's own dataset classes, held in memory as tensors.

torchvision reads the idx files under ``<root>/<Dataset>/raw/``. We normalise once, carve the
validation split from the training set with a fixed seed, and keep each split as one tensor on the
training device; every epoch slices shuffled batches from it. No per-sample transform runs in the
training loop (about ten times faster per epoch than a DataLoader with ``ToTensor``/``Normalize``).
"""

from __future__ import annotations

import gzip
import shutil
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchvision.datasets
from torch import Tensor

from lossbench.errors import ConfigError, LossbenchError
from lossbench.names import TRAIN_EVAL_PREFIX
from lossbench.noise import corrupt_labels

DATASETS = ("MNIST", "FashionMNIST", "KMNIST")
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_SHAPE = (28, 28)


class DataError(LossbenchError):
    """Data that is missing, corrupt or not what lossbench expects."""


# --------------------------------------------------------------------------- reading and checking


def _check_idx_file(path: Path, ndim: int) -> int:
    """Check an idx file's header against its size; return the item count. Names the file on failure."""
    try:
        with open(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from e
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated: {len(header)} bytes is shorter than an idx header")
    zero, dtype, dims = struct.unpack(">HBB", header[:4])
    if zero != 0 or dtype != 0x08 or dims != ndim:
        raise DataError(
            f"{path}: wrong magic number 0x{header[:4].hex()}: expected 0x000008{ndim:02x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}); is it an idx file of MNIST's format?"
        )
    shape = struct.unpack(f">{ndim}I", header[4:])
    expected = len(header) + int(torch.tensor(shape).prod())
    actual = path.stat().st_size
    if actual != expected:
        raise DataError(f"{path}: truncated or corrupt: {actual} bytes, but its header {shape} says {expected}")
    if ndim == 3 and tuple(shape[1:]) != IMAGE_SHAPE:
        raise DataError(f"{path}: images are {shape[1]}x{shape[2]}, expected 28x28")
    return shape[0]


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist package


def missing_message(dataset: str, root: Path, missing: list[str]) -> str:
    """How to get a missing data set: online once, or from a folder of its own idx files (never another set's)."""
    raw = root / dataset / "raw"
    source = f"DIR, a folder of {dataset}'s four idx files (.gz or not)"
    if dataset == "FashionMNIST":
        source += f", e.g. {DEBIAN_FASHION_MNIST} from Debian's dataset-fashion-mnist package"
    text = (
        f"{dataset} not found: missing {', '.join(missing)} in {raw}. Get it online once with data.download=true, "
        f"or import it offline with `python scripts/prepare_data.py --from DIR --dataset {dataset} --root {root}` "
        f"({source}), or point data.root= (or $LOSSBENCH_DATA) at a folder holding {dataset}/raw/."
    )
    if dataset != "FashionMNIST":
        text += (
            f" Offline, data=fashion_mnist works from Debian's package (apt-get install dataset-fashion-mnist; "
            f"then scripts/prepare_data.py --from {DEBIAN_FASHION_MNIST} --dataset FashionMNIST)."
        )
    return text


def read_split(dataset: str, root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of one official split, via torchvision."""
    if dataset not in DATASETS:
        raise DataError(f"data.dataset={dataset!r} is not supported: use one of {', '.join(DATASETS)}")
    raw = root / dataset / "raw"
    names = RAW_FILES["train" if train else "test"]
    everything = RAW_FILES["train"] + RAW_FILES["test"]  # torchvision loads a split only when all four exist
    missing = [n for n in everything if not (raw / n).is_file()]
    if missing and download:
        try:
            getattr(torchvision.datasets, dataset)(str(root), train=train, download=True)
        except Exception as e:  # offline, or a mirror is down: say what to do instead
            raise DataError(
                missing_message(dataset, root, missing) + f" (download failed: {str(e).splitlines()[0]})"
            ) from e
        missing = [n for n in everything if not (raw / n).is_file()]
    if missing:
        raise DataError(missing_message(dataset, root, missing))
    n_images = _check_idx_file(raw / names[0], ndim=3)
    n_labels = _check_idx_file(raw / names[1], ndim=1)
    if n_images != n_labels:
        raise DataError(f"{raw / names[1]}: {n_labels} labels for {n_images} images in {raw / names[0]}")
    ds = getattr(torchvision.datasets, dataset)(str(root), train=train, download=False)
    images, labels = ds.data, ds.targets.long()
    bad = (labels < 0) | (labels >= 10)
    if bad.any():
        raise DataError(f"{raw / names[1]}: {int(bad.sum())} labels outside 0..9 (first: {int(labels[bad][0])})")
    return images, labels


def import_idx_folder(source: Path, root: Path, dataset: str) -> Path:
    """Copy (and gunzip) the four idx files of an MNIST-format folder into ``<root>/<dataset>/raw/``."""
    source, raw = Path(source), Path(root) / dataset / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in RAW_FILES["train"] + RAW_FILES["test"]:
        plain, packed = source / name, source / f"{name}.gz"
        if plain.is_file():
            shutil.copyfile(plain, raw / name)
        elif packed.is_file():
            try:
                with gzip.open(packed, "rb") as src, open(raw / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as e:
                raise DataError(f"{packed}: cannot be unpacked ({e}); is it a complete gzip file?") from e
        else:
            raise DataError(f"{source}: has neither {name} nor {name}.gz")
        _check_idx_file(raw / name, ndim=3 if "images" in name else 1)
    return raw


# --------------------------------------------------------------------------- batches from tensors


class ShuffledBatches:
    """Shuffled mini-batches sliced from in-memory tensors; the order depends only on (seed, epoch).

    Yields chunks: lists of up to ``per_step`` consecutive ``(x, y)`` mini-batches, one chunk per
    Lightning training step (the module takes an optimizer step per mini-batch).
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int, epoch: Callable[[], int], per_step: int = 1):
        self.x, self.y, self.batch_size, self.seed, self.epoch, self.per_step = x, y, batch_size, seed, epoch, per_step

    def __len__(self) -> int:
        batches = -(-len(self.y) // self.batch_size)
        return -(-batches // self.per_step)

    def __iter__(self) -> Iterator[list[tuple[Tensor, Tensor]]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch())
        order = torch.randperm(len(self.y), generator=generator).to(self.y.device)
        chunk = []
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            chunk.append((self.x[idx], self.y[idx]))
            if len(chunk) == self.per_step:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


class Batches:
    """Batches in order, for evaluation."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.y), self.batch_size):
            yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]


@dataclass
class Splits:
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    train_eval_idx: Tensor  # rows of the training split evaluated in eval mode each epoch
    train_true_y: Tensor | None = None  # the clean training labels when train_y holds noisy ones


# The splits of the last data set a process loaded (a parallel sweep's worker runs many jobs on the same data).
_LAST_LOADED: dict = {}


class MNISTFamily(pl.LightningDataModule):
    """An MNIST-format data set as in-memory tensors: train, validation (carved from train), test.

    Its keywords are the keys of ``conf/data/*.yaml`` (Hydra builds it from the node's ``_target_``), plus the
    run's ``shuffle_seed``. ``load()`` reads and checks everything (call it before starting a run, so bad data
    fails early); Lightning's ``setup()`` then moves the tensors to the training device.
    """

    def __init__(
        self,
        dataset: str = "MNIST",
        root: str | Path = "data",
        download: bool = True,
        mean: float = 0.1307,
        std: float = 0.3081,
        batch_size: int = 64,
        batches_per_step: int = 64,
        eval_batch_size: int = 1000,
        val_size: int | float = 5000,
        train_size: int | None = None,
        train_eval_size: int = 5000,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        label_noise: Mapping | None = None,
        num_classes: int = 10,
        name: str | None = None,
    ):
        super().__init__()
        self.name = name or dataset  # the display name (conf/data's ``name``, the run's ``data`` tag)
        self.dataset, self.root, self.download = dataset, Path(root).expanduser().resolve(), download
        self.mean, self.std = mean, std
        self.batch_size, self.batches_per_step, self.eval_batch_size = batch_size, batches_per_step, eval_batch_size
        self.val_size, self.train_size, self.train_eval_size = val_size, train_size, train_eval_size
        self.split_seed, self.shuffle_seed = split_seed, shuffle_seed
        self.label_noise = dict(label_noise or {})  # a plain dict, also from a DictConfig
        self.num_classes = num_classes
        self.splits: Splits | None = None
        self.noise_report: dict[str, float | str] = {}

    def load(self) -> Splits:
        """Read, check, split and normalise once; a process's next job with the same data and files reuses the result."""
        if self.splits is not None:
            return self.splits
        key = self._cache_key()
        if key is not None and _LAST_LOADED.get("key") == key:
            self.splits, self.noise_report = _LAST_LOADED["splits"], dict(_LAST_LOADED["noise_report"])
            return self.splits
        self._read_and_split()
        _LAST_LOADED.clear()
        if key is not None:
            _LAST_LOADED.update(key=key, splits=self.splits, noise_report=dict(self.noise_report))
        return self.splits

    def _cache_key(self) -> tuple | None:
        """What the splits depend on: every setting but the run's shuffle seed and batch sizes, and the raw files'
        sizes and modification times; None when the files are not there yet (a download)."""
        raw = self.root / self.dataset / "raw"
        try:
            files = tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in raw.iterdir()))
        except OSError:
            return None
        settings = (
            self.dataset,
            str(self.root),
            self.mean,
            self.std,
            self.val_size,
            self.train_size,
            self.train_eval_size,
            self.split_seed,
            repr(sorted(self.label_noise.items())),
            self.num_classes,
        )
        return (settings, files) if files else None

    def _read_and_split(self) -> None:
        train_images, train_labels = read_split(self.dataset, self.root, train=True, download=self.download)
        test_images, test_labels = read_split(self.dataset, self.root, train=False, download=self.download)
        top = int(max(train_labels.max(), test_labels.max()))
        if top >= self.num_classes:  # the model would emit too few outputs, and losses index past them
            raise ConfigError(
                f"data.num_classes={self.num_classes} is too small: {self.dataset}'s labels go up to {top}; "
                f"set data.num_classes={top + 1}"
            )
        n = len(train_labels)
        n_val = self.val_size if isinstance(self.val_size, int) else round(self.val_size * n)
        if not 0 < n_val < n:
            empty = "validation" if n_val <= 0 else "training"
            raise DataError(
                f"data.val_size={self.val_size} leaves the {empty} split empty: the training set has {n} images"
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        if self.train_size is not None:  # a fixed subset, the same for every run seed
            train_idx = train_idx[: self.train_size]
        train_y, val_y = train_labels[train_idx], train_labels[val_idx]
        clean_train_y = None
        rate = float(self.label_noise.get("rate", 0.0))
        if rate > 0:
            kind, noise_seed = self.label_noise.get("kind", "symmetric"), int(self.label_noise.get("seed", 0))
            clean_train_y = train_y
            train_y, report = corrupt_labels(train_y, rate, kind, noise_seed, self.num_classes)
            self.noise_report = report.as_dict()
            if self.label_noise.get("noisy_val", False):
                val_y, _ = corrupt_labels(val_y, rate, kind, noise_seed + 1, self.num_classes)
        n_train_eval = min(self.train_eval_size, len(train_idx))
        train_eval_idx = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(self.split_seed + 1))[
            :n_train_eval
        ]
        self.splits = Splits(
            train_x=self._normalise(train_images[train_idx]),
            train_y=train_y,
            val_x=self._normalise(train_images[val_idx]),
            val_y=val_y,
            test_x=self._normalise(test_images),
            test_y=test_labels,
            train_eval_idx=train_eval_idx.sort().values,
            train_true_y=clean_train_y,
        )

    def _normalise(self, images: Tensor) -> Tensor:
        return images.unsqueeze(1).float().div_(255).sub_(self.mean).div_(self.std)

    def setup(self, stage: str | None = None) -> None:
        splits = self.load()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if splits.train_x.device != device:
            self.splits = Splits(*(None if t is None else t.to(device) for t in vars(splits).values()))

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> ShuffledBatches:
        s = self.splits
        return ShuffledBatches(
            s.train_x, s.train_y, self.batch_size, self.shuffle_seed, self._current_epoch, self.batches_per_step
        )

    def val_dataloader(self) -> list[Batches]:
        s = self.splits
        loaders = [Batches(s.val_x, s.val_y, self.eval_batch_size)]
        if len(s.train_eval_idx):
            loaders.append(Batches(s.train_x[s.train_eval_idx], s.train_y[s.train_eval_idx], self.eval_batch_size))
        return loaders

    def test_dataloader(self) -> Batches:
        return Batches(self.splits.test_x, self.splits.test_y, self.eval_batch_size)

    @property
    def train_eval_true_labels(self) -> Tensor | None:
        """The clean labels of the train_eval rows (whose loader yields the noisy ones); ``None`` without label noise."""
        s = self.load()
        return None if s.train_true_y is None else s.train_true_y[s.train_eval_idx]

    @property
    def class_names(self) -> list[str] | None:
        """The data set's own class names (torchvision's ``classes``), or None when they do not fit ``num_classes``."""
        names = list(getattr(getattr(torchvision.datasets, self.dataset, None), "classes", []) or [])
        return names if len(names) == self.num_classes else None

    @property
    def sizes(self) -> dict[str, int]:
        s = self.load()
        return {
            "train": len(s.train_y),
            "val": len(s.val_y),
            "test": len(s.test_y),
            TRAIN_EVAL_PREFIX: len(s.train_eval_idx),
        }
