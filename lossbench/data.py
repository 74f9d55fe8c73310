"""A data set as in-memory tensors on the training device: train, validation (carved from train), test.

What a data set *is* lives in its YAML, ``conf/data/<name>.yaml``: the source that reads its files
(:mod:`lossbench.sources`: torchvision's own class, a folder of images, arrays), its shape ``[C, H, W]``,
class count and names, per-channel mean and std, and its asymmetric-noise class map. :class:`ImageData`
is the same for every one of them: it reads both official splits once, checks them, carves the validation
split from the training set with a fixed seed, and keeps each split as one tensor on the training device;
every epoch slices shuffled batches from it. No per-sample transform runs in the training loop (about ten
times faster per epoch than a DataLoader with ``ToTensor``/``Normalize``).

Each split is held as float32, normalised once (``data.hold: float32``, the MNIST family's default: a batch
is a slice), or as uint8, a quarter of the memory (``data.hold: uint8``, CIFAR's 50,000 x 3 x 32 x 32 is
150 MB instead of 600 MB): each batch is then normalised on the device as it is sliced. Augmentation
(``data.augment``: random crop with zero padding, horizontal flip) runs there too, on training batches only,
per sample and vectorised, drawn from the run's seed and the epoch.

What the run's seed draws: the initial weights and the batch order always; with ``data.redraw: true`` also the
validation split, the train_eval rows, the training subset (``data.train_size``) and the label- and input-noise
draws, each from its own stream derived from the seed (:func:`stream_seed`), so that one draw does not shift
another. With ``data.redraw: false`` (the default) ``data.split_seed`` and the noises' own ``seed`` fix those,
the same for every run seed: an interval over seeds is then conditional on one data and noise draw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lossbench.config import HOLDS
from lossbench.errors import ConfigError
from lossbench.names import TRAIN_EVAL_PREFIX
from lossbench.noise import corrupt_images, corrupt_labels
from lossbench.sources import DataError, Split  # DataError: the data layer's error (tests import it from here)

SEED_SOURCES = ("init", "order", "split", "subset", "label_noise", "input_noise")
"""What a run's seed can draw, in the order its :data:`~lossbench.names.SEED_DRIVES_TAG` lists them."""
DATA_DRAWS = ("split", TRAIN_EVAL_PREFIX, "subset", "label_noise", "input_noise")
"""The data's own draws, each with its seed (:meth:`ImageData.draw_seeds`): the train_eval rows are part of ``split``."""


def stream_seed(seed: int, source: str) -> int:
    """The seed of one source of variance (``split``, ``train_eval``, ``subset``, ``label_noise``, ``input_noise``)
    drawn from a run's seed: the first 63 bits of sha256 of both, so that the streams are independent of each other
    (redrawing one never shifts another) and of the run's own init and batch-order streams."""
    digest = hashlib.sha256(f"lossbench.data/{source}/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def normalise(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 images ``(N, C, H, W)`` as float32 ``(pixel / 255 - mean) / std`` per channel: the one formula,
    applied once to a held split or to each batch of a uint8 one (bit for bit the same numbers)."""
    return images.float().div_(255).sub_(mean).div_(std)


class BatchTransform:
    """What a batch goes through on the device as it is sliced: augmentation (training batches only), then
    normalisation (a split held as uint8). Vectorised over the batch; its random draws come from the caller.

    Augmentation is torchvision's ``RandomCrop(size, padding=crop)`` then ``RandomHorizontalFlip()``, per
    sample: the image is padded by ``crop`` pixels of black (0, i.e. ``-mean/std`` once normalised), a window
    of the image's size is taken at an offset drawn uniformly in ``[0, 2 crop]`` on each axis, and it is
    mirrored with probability 1/2.
    """

    def __init__(self, mean: Tensor, std: Tensor, normalised: bool, crop: int = 0, flip: bool = False):
        self.mean, self.std, self.normalised, self.crop, self.flip = mean, std, normalised, int(crop), bool(flip)

    @property
    def augments(self) -> bool:
        return self.crop > 0 or self.flip

    def to(self, device: torch.device) -> BatchTransform:
        return BatchTransform(self.mean.to(device), self.std.to(device), self.normalised, self.crop, self.flip)

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """``(n, 3)`` int64 on the CPU: each sample's row offset, column offset and flip (0 or 1)."""
        offsets = torch.randint(0, 2 * self.crop + 1, (n, 2), generator=generator)
        flips = torch.randint(0, 2 if self.flip else 1, (n, 1), generator=generator)
        return torch.cat([offsets, flips], dim=1)

    def __call__(self, x: Tensor, draws: Tensor | None = None) -> Tensor:
        if draws is not None:
            x = self.crop_flip(x, draws)
        if self.normalised:
            return x
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return normalise(x, self.mean, self.std)

    def crop_flip(self, x: Tensor, draws: Tensor) -> Tensor:
        """Each image padded, cropped at its own offset and maybe mirrored: two gathers, rows then columns
        (2x faster on a CPU than one gather over all four indices)."""
        n, c, h, w = x.shape
        p = self.crop
        if p and x.dtype == torch.uint8:
            padded = torch.nn.functional.pad(x, (p, p, p, p))
        elif p:  # already normalised: black is -mean/std
            black = (-self.mean / self.std).to(device=x.device, dtype=x.dtype).reshape(1, -1, 1, 1)
            padded = black.expand(n, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p : p + h, p : p + w] = x
        else:
            padded = x
        draws = draws.to(x.device)
        rows = (draws[:, :1] + torch.arange(h, device=x.device)).reshape(n, 1, h, 1).expand(n, c, h, w + 2 * p)
        cols = draws[:, 1:2] + torch.arange(w, device=x.device)
        cols = torch.where(draws[:, 2:].bool(), cols.flip(1), cols).reshape(n, 1, 1, w).expand(n, c, h, w)
        return padded.gather(2, rows).gather(3, cols)


# --------------------------------------------------------------------------- batches from tensors


class ShuffledBatches:
    """Shuffled mini-batches sliced from in-memory tensors; the order (and any augmentation) depends only on
    (seed, epoch).

    Yields chunks: lists of up to ``per_step`` consecutive ``(x, y)`` mini-batches, one chunk per
    Lightning training step (the module takes an optimizer step per mini-batch). ``transform``: what each
    batch goes through (:class:`BatchTransform`), None when the held tensors are what the model takes.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        seed: int,
        epoch: Callable[[], int],
        per_step: int = 1,
        transform: BatchTransform | None = None,
    ):
        self.x, self.y, self.batch_size, self.seed, self.epoch, self.per_step = x, y, batch_size, seed, epoch, per_step
        self.transform = transform

    def __len__(self) -> int:
        batches = -(-len(self.y) // self.batch_size)
        return -(-batches // self.per_step)

    def __iter__(self) -> Iterator[list[tuple[Tensor, Tensor]]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch())
        order = torch.randperm(len(self.y), generator=generator).to(self.y.device)
        transform = self.transform
        draws = transform.draw(len(self.y), generator).to(self.y.device) if transform and transform.augments else None
        chunk = []
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.x[idx]
            if transform is not None:
                x = transform(x, None if draws is None else draws[start : start + self.batch_size])
            chunk.append((x, self.y[idx]))
            if len(chunk) == self.per_step:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


class Batches:
    """Batches in order, for evaluation (normalised by ``transform`` when the split is held as uint8; never augmented)."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, transform: BatchTransform | None = None):
        self.x, self.y, self.batch_size, self.transform = x, y, batch_size, transform

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.y), self.batch_size):
            x = self.x[start : start + self.batch_size]
            yield (x if self.transform is None else self.transform(x)), self.y[start : start + self.batch_size]


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


def per_channel(value: float | Sequence[float], channels: int, key: str) -> Tensor:
    """A mean or std as ``(1, C, 1, 1)``: one number for every channel, or one per channel."""
    values = [float(value)] if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) not in (1, channels):
        raise ConfigError(f"{key}={values} has {len(values)} values for {channels} channel(s) (data.shape)")
    return torch.tensor(values * (channels if len(values) == 1 else 1)).reshape(1, channels, 1, 1)


def to_nchw(images: Tensor, shape: Sequence[int], where: Path) -> Tensor:
    """Images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` as ``(N, C, H, W)`` of ``shape`` [C, H, W]."""
    c, h, w = shape
    if images.ndim == 3 and c == 1 and tuple(images.shape[1:]) == (h, w):
        return images.unsqueeze(1)
    if images.ndim == 4 and tuple(images.shape[1:]) == (c, h, w):
        return images
    if images.ndim == 4 and tuple(images.shape[1:]) == (h, w, c):
        return images.permute(0, 3, 1, 2).contiguous()
    one = "x".join(map(str, images.shape[1:]))
    raise DataError(f"{where}: images are {one}, data.shape says {c}x{h}x{w} (channels, height, width)")


class ImageData(pl.LightningDataModule):
    """An image classification data set as in-memory tensors: train, validation (carved from train), test.

    Its keywords are the keys of ``conf/data/*.yaml`` (Hydra builds it from the node's ``_target_``, and its
    ``source`` from that node's own ``_target_``), plus the run's ``shuffle_seed``. ``label_noise`` flips training
    labels and ``input_noise`` corrupts training images (lossbench.noise; validation and test stay clean);
    ``classes`` keeps a subset of the classes, relabelled in its order (both splits). ``load()`` reads and checks
    everything (call it before starting a run, so bad data fails early); Lightning's ``setup()`` then moves
    the tensors to the training device.
    """

    def __init__(
        self,
        name: str,
        source: Any,
        shape: Sequence[int],
        mean: float | Sequence[float],
        std: float | Sequence[float],
        num_classes: int = 10,
        class_names: Sequence[str] | None = None,
        noise_map: Sequence[Sequence[int]] | None = None,
        root: str | Path = "data",
        download: bool = True,
        hold: str = "float32",
        augment: Mapping[str, Any] | None = None,
        batch_size: int = 64,
        batches_per_step: int = 64,
        eval_batch_size: int = 1000,
        val_size: int | float = 5000,
        train_size: int | None = None,
        train_eval_size: int = 5000,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        label_noise: Mapping | None = None,
        input_noise: Mapping | None = None,
        classes: Sequence[int] | None = None,
        redraw: bool = False,
    ):
        super().__init__()
        self.name, self.source = name, source  # name: the display name (the run's ``data`` tag)
        self.root, self.download = Path(root).expanduser().resolve(), download
        self.shape, self.num_classes = tuple(int(s) for s in shape), num_classes
        self.mean, self.std = mean, std
        self.class_names_given = None if class_names is None else list(class_names)
        self.noise_map = None if noise_map is None else [tuple(pair) for pair in noise_map]
        if hold not in HOLDS:
            raise ConfigError(f"data.hold={hold!r} is invalid: expected one of {', '.join(HOLDS)}")
        self.hold, self.augment = hold, dict(augment or {"crop": 0, "flip": False})
        self.batch_size, self.batches_per_step, self.eval_batch_size = batch_size, batches_per_step, eval_batch_size
        self.val_size, self.train_size, self.train_eval_size = val_size, train_size, train_eval_size
        self.split_seed, self.shuffle_seed, self.redraw = split_seed, shuffle_seed, bool(redraw)
        self.label_noise = dict(label_noise or {})  # a plain dict, also from a DictConfig
        self.input_noise = dict(input_noise or {})
        self.classes = None if classes is None else [int(c) for c in classes]
        if self.classes is not None and self.class_names_given is not None:
            self.class_names_given = [
                self.class_names_given[c] for c in self.classes if c < len(self.class_names_given)
            ]
        channels = self.shape[0]
        self.transform = BatchTransform(
            per_channel(mean, channels, "data.mean"),
            per_channel(std, channels, "data.std"),
            normalised=hold == "float32",
            crop=self.augment.get("crop", 0),
            flip=self.augment.get("flip", False),
        )
        self.splits: Splits | None = None
        self.classes_read: list[str] | None = None
        self.noise_report: dict[str, float | str] = {}

    @property
    def batch_transform(self) -> BatchTransform | None:
        """What evaluation batches go through (None: the held tensors are what the model takes)."""
        return None if self.transform.normalised else self.transform

    @property
    def train_transform(self) -> BatchTransform | None:
        """What training batches go through (None: a slice is the batch, the fast path)."""
        return self.transform if (self.transform.augments or not self.transform.normalised) else None

    def load(self) -> Splits:
        """Read, check, split and normalise once; a process's next job with the same data and files reuses the result."""
        if self.splits is not None:
            return self.splits
        key = self._cache_key()
        if key is not None and _LAST_LOADED.get("key") == key:
            self.splits, self.noise_report = _LAST_LOADED["splits"], dict(_LAST_LOADED["noise_report"])
            self.classes_read = _LAST_LOADED["classes"]
            return self.splits
        self._read_and_split()
        _LAST_LOADED.clear()
        if key is not None:
            _LAST_LOADED.update(
                key=key, splits=self.splits, noise_report=dict(self.noise_report), classes=self.classes_read
            )
        return self.splits

    def _cache_key(self) -> tuple | None:
        """What the splits depend on: every setting but the run's shuffle seed, batch sizes and augmentation, and
        the files' sizes and modification times; None when the files are not there yet (a download)."""
        try:
            files = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.source.paths(self.root))
        except OSError:
            return None
        settings = (
            self.name,
            repr(self.source.__dict__),
            str(self.root),
            self.shape,
            repr(self.mean),
            repr(self.std),
            self.hold,
            self.val_size,
            self.train_size,
            self.train_eval_size,
            self.split_seed,
            repr(sorted(self.label_noise.items())),
            repr(sorted(self.input_noise.items())),
            repr(self.classes),
            repr(self.noise_map),
            self.num_classes,
            self.redraw,
            self.shuffle_seed if self.redraw else None,  # with data.redraw the run's seed draws the splits too
        )
        return (settings, files) if files else None

    def read_split(self, split: str) -> Split:
        """One official split (``train`` or ``test``) as its source reads it, images ``(N, C, H, W)`` uint8, checked."""
        read = self.source.read(self.root, split, self.download, self.name, self.shape)
        read.images = to_nchw(read.images, self.shape, read.images_at)
        if len(read.images) != len(read.labels):
            raise DataError(f"{read.labels_at}: {len(read.labels)} labels for {len(read.images)} images")
        known = len(read.classes) if read.classes else None
        bad = (read.labels < 0) | (read.labels >= (known or 2**62))
        if bad.any():
            top = f"0..{known - 1}" if known else "0 and up"
            first = int(read.labels[bad][0])
            raise DataError(f"{read.labels_at}: {int(bad.sum())} labels outside {top} (first: {first})")
        return read

    def _read_and_split(self) -> None:
        train, test = self.read_split("train"), self.read_split("test")
        if self.classes is not None:
            train, test = self._subset(train), self._subset(test)
        if train.classes and test.classes and train.classes != test.classes:
            raise DataError(
                f"{test.labels_at}: the test split's classes {test.classes} differ from the training split's {train.classes}"
            )
        self.classes_read = train.classes
        top = int(max(train.labels.max(), test.labels.max()))
        if top >= self.num_classes:  # the model would emit too few outputs, and losses index past them
            raise ConfigError(
                f"data.num_classes={self.num_classes} is too small: {self.name}'s labels go up to {top}; "
                f"set data.num_classes={top + 1}"
            )
        n = len(train.labels)
        n_val = self.val_size if isinstance(self.val_size, int) else round(self.val_size * n)
        if not 0 < n_val < n:
            empty = "validation" if n_val <= 0 else "training"
            raise DataError(
                f"data.val_size={self.val_size} leaves the {empty} split empty: the training set has {n} images"
            )
        seeds = self.draw_seeds()
        perm = torch.randperm(n, generator=_generator(seeds["split"]))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        if self.train_size is not None and self.redraw:  # a subset of its own stream, whatever the split drew
            train_idx = train_idx[torch.randperm(len(train_idx), generator=_generator(seeds["subset"]))]
        if self.train_size is not None:
            train_idx = train_idx[: self.train_size]
        train_y, val_y, clean_train_y = self._labels(train.labels[train_idx], train.labels[val_idx], seeds)
        n_train_eval = min(self.train_eval_size, len(train_idx))
        train_eval_idx = torch.randperm(len(train_idx), generator=_generator(seeds[TRAIN_EVAL_PREFIX]))[:n_train_eval]
        self.splits = Splits(
            train_x=self._held(self._corrupted(train.images[train_idx], seeds["input_noise"])),
            train_y=train_y,
            val_x=self._held(train.images[val_idx]),
            val_y=val_y,
            test_x=self._held(test.images),
            test_y=test.labels,
            train_eval_idx=train_eval_idx.sort().values,
            train_true_y=clean_train_y,
        )

    def draw_seeds(self) -> dict[str, int]:
        """The seed of each data draw: the fixed ``data.split_seed`` (the train_eval rows: ``split_seed + 1``) and
        noise seeds, or with ``data.redraw`` a stream of the run's seed for each (:func:`stream_seed`)."""
        if self.redraw:
            return {source: stream_seed(self.shuffle_seed, source) for source in DATA_DRAWS}
        fixed = (
            int(self.split_seed),
            int(self.split_seed) + 1,
            int(self.split_seed),  # unused: the fixed subset is the first train_size rows of the split
            int(self.label_noise.get("seed", 0)),
            int(self.input_noise.get("seed", 0)),
        )
        return dict(zip(DATA_DRAWS, fixed))

    @property
    def seed_drives(self) -> tuple[str, ...]:
        """The sources of variance the run's seed draws (:data:`lossbench.names.SEED_DRIVES_TAG`)."""
        init, order, split, subset, label_noise, input_noise = SEED_SOURCES
        if not self.redraw:
            return init, order
        in_effect = {
            subset: self.train_size is not None,
            label_noise: float(self.label_noise.get("rate", 0.0)) > 0,
            input_noise: float(self.input_noise.get("rate", 0.0)) > 0,
        }
        return (init, order, split, *(source for source, used in in_effect.items() if used))

    def _labels(self, train_y: Tensor, val_y: Tensor, seeds: Mapping[str, int]) -> tuple[Tensor, Tensor, Tensor | None]:
        """Training and validation labels with the asked label noise; and the clean training labels (None without)."""
        rate = float(self.label_noise.get("rate", 0.0))
        if rate <= 0:
            return train_y, val_y, None
        kind, noise_seed = self.label_noise.get("kind", "symmetric"), seeds["label_noise"]
        noisy_train_y, report = corrupt_labels(train_y, rate, kind, noise_seed, self.num_classes, self.noise_map)
        self.noise_report = report.as_dict()
        if self.label_noise.get("noisy_val", False):
            val_y, _ = corrupt_labels(val_y, rate, kind, noise_seed + 1, self.num_classes, self.noise_map)
        return noisy_train_y, val_y, train_y

    def _subset(self, read: Split) -> Split:
        """The images of ``data.classes`` only, relabelled by their place in that list (``[0, 6]``: 0 -> 0, 6 -> 1)."""
        keep = torch.zeros(int(read.labels.max()) + 1 if len(read.labels) else 1, dtype=torch.bool)
        missing = [c for c in self.classes if c >= len(keep) or not bool((read.labels == c).any())]
        if missing:
            raise DataError(
                f"{read.labels_at}: data.classes={self.classes} names class(es) {missing}, which it has not"
            )
        relabel = torch.full((len(keep),), -1, dtype=torch.long)
        for new, old in enumerate(self.classes):
            keep[old], relabel[old] = True, new
        rows = keep[read.labels]
        names = (
            [read.classes[c] for c in self.classes] if read.classes and len(read.classes) > max(self.classes) else None
        )
        return Split(read.images[rows], relabel[read.labels[rows]], names, read.images_at, read.labels_at)

    def _corrupted(self, images: Tensor, seed: int) -> Tensor:
        """The training images with ``data.input_noise`` applied (uint8, before normalisation) from the noise's
        ``seed`` (:meth:`draw_seeds`); unchanged at rate 0."""
        rate = float(self.input_noise.get("rate", 0.0))
        if rate <= 0:
            return images
        noise = self.input_noise
        kind, std = noise.get("kind", "uniform"), float(noise.get("std", 0.5))
        corrupted, report = corrupt_images(images, rate, kind, seed, std)
        self.noise_report.update({f"input_{k}": v for k, v in report.as_dict().items()})
        return corrupted

    def _held(self, images: Tensor) -> Tensor:
        """A split as it is held: normalised float32, or the uint8 pixels themselves."""
        if self.hold == "uint8":
            return images.contiguous()
        return normalise(images, self.transform.mean, self.transform.std)

    def head(self, n: int) -> tuple[Tensor, Tensor]:
        """The first ``n`` training images as the model takes them (normalised, not augmented), and their labels."""
        s = self.load()
        x = s.train_x[:n]
        return (x if self.batch_transform is None else self.batch_transform(x)), s.train_y[:n]

    def setup(self, stage: str | None = None) -> None:
        splits = self.load()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if splits.train_x.device != device:
            self.splits = Splits(*(None if t is None else t.to(device) for t in vars(splits).values()))
        self.transform = self.transform.to(device)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> ShuffledBatches:
        s = self.splits
        return ShuffledBatches(
            s.train_x,
            s.train_y,
            self.batch_size,
            self.shuffle_seed,
            self._current_epoch,
            self.batches_per_step,
            self.train_transform,
        )

    def val_dataloader(self) -> list[Batches]:
        s = self.splits
        loaders = [Batches(s.val_x, s.val_y, self.eval_batch_size, self.batch_transform)]
        if len(s.train_eval_idx):
            x, y = s.train_x[s.train_eval_idx], s.train_y[s.train_eval_idx]
            loaders.append(Batches(x, y, self.eval_batch_size, self.batch_transform))
        return loaders

    def test_dataloader(self) -> Batches:
        return Batches(self.splits.test_x, self.splits.test_y, self.eval_batch_size, self.batch_transform)

    @property
    def train_eval_true_labels(self) -> Tensor | None:
        """The clean labels of the train_eval rows (whose loader yields the noisy ones); ``None`` without label noise."""
        s = self.load()
        return None if s.train_true_y is None else s.train_true_y[s.train_eval_idx]

    @property
    def class_names(self) -> list[str] | None:
        """``data.class_names``, else the names the files know (torchvision's ``classes``, the folder names);
        None when they do not fit ``num_classes``."""
        if self.class_names_given is None:
            self.load()
        names = self.class_names_given or self.classes_read or []
        return list(names) if len(names) == self.num_classes else None

    @property
    def sizes(self) -> dict[str, int]:
        s = self.load()
        return {
            "train": len(s.train_y),
            "val": len(s.val_y),
            "test": len(s.test_y),
            TRAIN_EVAL_PREFIX: len(s.train_eval_idx),
        }
