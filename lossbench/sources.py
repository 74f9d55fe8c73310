"""Where a data set's images come from: one reader per on-disk format, named by ``data.source._target_``.

- :class:`Torchvision`: torchvision's own dataset class (``data.source.dataset``, e.g.
  ``torchvision.datasets.CIFAR10``) with the keywords that pick each split (``train: {train: true}``,
  SVHN's ``{split: train}``, EMNIST's ``{split: balanced, train: true}``). It downloads when ``data.download``
  is true and a file is missing; offline, a missing file is one line naming what to put where. torchvision
  checks what it checks (CIFAR's and SVHN's md5s): nothing here bypasses it.
- :class:`IdxFiles`: the same for the MNIST family, whose idx headers are checked first, so that a truncated
  or foreign file is named (torchvision fails on it with a bare assertion or a wrong shape).
- :class:`ImageFolder`: a user's images in class sub-folders of ``train/`` and ``test/`` (torchvision's
  ``ImageFolder``).
- :class:`Arrays`: a user's arrays, ``train.npz`` and ``test.npz`` with uint8 images ``x`` and labels ``y``.

Each reads one official split as a :class:`Split` (uint8 images in the files' own layout, int64 labels, the
class names when the files know them, the paths to blame); :class:`lossbench.data.ImageData` does the rest,
whatever the source. A source's keywords are the keys of ``data.source`` in ``conf/data/<name>.yaml``.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.datasets
from hydra.utils import get_class
from omegaconf import OmegaConf
from torch import Tensor

from lossbench.errors import LossbenchError, describe, first_line
from lossbench.folders import LAYOUTS, SPLITS


class DataError(LossbenchError):
    """Data that is missing, corrupt or not what lossbench expects."""


@dataclass
class Split:
    """One official split as its files hold it."""

    images: Tensor  # uint8, (N, H, W), (N, H, W, C) or (N, C, H, W)
    labels: Tensor  # int64, (N,)
    classes: list[str] | None  # the class names the files (or torchvision's class) know, else None
    images_at: Path  # the file or folder to name when the images are wrong
    labels_at: Path  # ... and the labels


def _plain(value: Any) -> Any:
    """A DictConfig/ListConfig as plain containers (Hydra passes nested nodes as configs)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def as_uint8(images: Any, where: Path) -> Tensor:
    """Images as a uint8 tensor; anything else (floats, 16-bit) is a DataError naming ``where``."""
    tensor = images if isinstance(images, Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if tensor.dtype != torch.uint8:
        raise DataError(f"{where}: images are {tensor.dtype}, not 8-bit (uint8, 0..255): lossbench reads 8-bit images")
    return tensor


# --------------------------------------------------------------------------- torchvision's classes


class Torchvision:
    """A data set read by torchvision's own class, e.g. ``torchvision.datasets.CIFAR10``.

    Args:
        dataset: the class, by its dotted name (a subclass works the same: tests/unchecked.py).
        train, test: the keywords that pick each split, e.g. ``{train: true}`` or ``{split: test}``.
        folder: where under ``data.root`` the class reads its files (``MNIST/raw``, ``cifar-10-batches-py``).
        files: each split's files in that folder (what must be there, what scripts/prepare_data.py imports).
        debian: ``{package, path}`` of a Debian package that ships the files (offline machines), or None.
    """

    def __init__(
        self,
        dataset: str,
        train: Mapping[str, Any],
        test: Mapping[str, Any],
        folder: str,
        files: Mapping[str, Sequence[str]],
        debian: Mapping[str, str] | None = None,
    ):
        self.dataset, self.folder = dataset, folder
        self.cls = get_class(dataset)  # a name that is no class fails as the data is built, before anything is read
        self.split_args = {"train": dict(_plain(train)), "test": dict(_plain(test))}
        self.files = {split: list(names) for split, names in _plain(files).items()}
        self.debian = _plain(debian)

    def all_files(self) -> list[str]:
        """Every file of both splits, once each (torchvision loads a split only when all of them are there)."""
        return list(dict.fromkeys(name for names in self.files.values() for name in names))

    def paths(self, root: Path) -> list[Path]:
        """The files the splits are read from (their sizes and times tell whether loaded splits are stale)."""
        return [root / self.folder / name for name in self.all_files()]

    def missing(self, root: Path) -> list[str]:
        return [name for name in self.all_files() if not (root / self.folder / name).is_file()]

    def missing_message(self, name: str, root: Path, missing: list[str]) -> str:
        """What is missing where, and the three ways to get it: download, import offline, point data.root elsewhere."""
        folder = root / self.folder
        source = f"DIR, a folder or archive holding {name}'s {len(self.all_files())} files (each plain or .gz)"
        if self.debian:
            source += f", e.g. {self.debian['path']} from Debian's {self.debian['package']} package"
        text = (
            f"{name} not found: missing {', '.join(missing)} in {folder}. Get it online once with data.download=true, "
            f"or import it offline with `python scripts/prepare_data.py --data {name} --from DIR --root {root}` "
            f"({source}), or point data.root= (or $LOSSBENCH_DATA) at a folder holding {self.folder}/."
        )
        from lossbench.shipped import offline_data  # the shipped YAMLs, read only for this message

        for other, debian in offline_data().items():
            if other != name:
                text += (
                    f" Offline, data={other} works from Debian's package (apt-get install {debian['package']}; "
                    f"then scripts/prepare_data.py --data {other} --from {debian['path']})."
                )
        return text

    def build(self, root: Path, split: str, download: bool) -> Any:
        return self.cls(str(root), download=download, **self.split_args[split])

    def check(self, root: Path, split: str, shape: Sequence[int]) -> None:
        """Format checks before torchvision reads the files (none here; :class:`IdxFiles` checks headers)."""

    def read(self, root: Path, split: str, download: bool, name: str, shape: Sequence[int]) -> Split:
        """One split: downloaded if asked and missing, checked, then read by torchvision's class."""
        missing = self.missing(root)
        if missing and download:
            try:
                self.build(root, split, download=True)
            except Exception as e:  # offline, or a mirror is down: say what to do instead
                raise DataError(
                    self.missing_message(name, root, missing) + f" (download failed: {first_line(e)})"
                ) from e
            missing = self.missing(root)
        if missing:
            raise DataError(self.missing_message(name, root, missing))
        self.check(root, split, shape)
        try:
            found = self.build(root, split, download=False)
        except Exception as e:  # torchvision's own checks: an md5 that does not match, a file it cannot parse
            raise DataError(
                f"{root / self.folder}: {self.dataset} cannot read {name}'s {split} split: {describe(e)}; "
                f"download it again (delete the folder, data.download=true) or import it with scripts/prepare_data.py"
            ) from e
        labels = found.targets if hasattr(found, "targets") else found.labels
        where = root / self.folder
        classes = list(getattr(found, "classes", None) or []) or None
        return Split(as_uint8(found.data, where), torch.as_tensor(np.asarray(labels)).long(), classes, where, where)


# --------------------------------------------------------------------------- the MNIST family's idx files


def check_idx_file(path: Path, ndim: int, size: Sequence[int] | None = None) -> int:
    """Check an idx file's header against its size (and its images' ``size``); the item count. Names the file."""
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
    expected = len(header) + int(np.prod(shape, dtype=np.int64))
    actual = path.stat().st_size
    if actual != expected:
        raise DataError(f"{path}: truncated or corrupt: {actual} bytes, but its header {shape} says {expected}")
    if size is not None and tuple(shape[1:]) != tuple(size):
        raise DataError(f"{path}: images are {shape[1]}x{shape[2]}, expected {size[0]}x{size[1]}")
    return shape[0]


class IdxFiles(Torchvision):
    """An MNIST-format data set (idx files: MNIST, Fashion-MNIST, KMNIST, EMNIST): each split's files are
    ``[images, labels]``, whose headers are checked before torchvision reads them."""

    def check(self, root: Path, split: str, shape: Sequence[int]) -> None:
        images, labels = (root / self.folder / name for name in self.files[split])
        n_images = check_idx_file(images, ndim=3, size=shape[1:])
        n_labels = check_idx_file(labels, ndim=1)
        if n_images != n_labels:
            raise DataError(f"{labels}: {n_labels} labels for {n_images} images in {images}")

    def read(self, root: Path, split: str, download: bool, name: str, shape: Sequence[int]) -> Split:
        read = super().read(root, split, download, name, shape)
        read.images_at, read.labels_at = (root / self.folder / file for file in self.files[split])
        return read


# --------------------------------------------------------------------------- a user's images or arrays


class ImageFolder:
    """A user's images: ``<root>/train/<class>/<image>`` and ``<root>/test/<class>/<image>``, read by
    torchvision's ``ImageFolder`` (classes are the sub-folders, sorted), each image as grey or RGB by ``data.shape``."""

    def __init__(self, train: str = SPLITS[0], test: str = SPLITS[1]):
        self.folders = {"train": train, "test": test}

    def paths(self, root: Path) -> list[Path]:
        return sorted(p for split in self.folders.values() for p in (root / split).rglob("*") if p.is_file())

    def read(self, root: Path, split: str, download: bool, name: str, shape: Sequence[int]) -> Split:
        folder = root / self.folders[split]
        if not folder.is_dir():
            raise DataError(
                f"{folder}: no such folder: data={name} expects {LAYOUTS['folder']}; point data.root= at it"
            )
        try:
            found = torchvision.datasets.ImageFolder(str(folder))
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"{folder}: {first_line(e)} (data={name} expects {LAYOUTS['folder']})") from e
        mode, size = ("L" if shape[0] == 1 else "RGB"), (shape[2], shape[1])
        pixels = np.empty((len(found.samples), shape[1], shape[2], *([] if shape[0] == 1 else [3])), dtype=np.uint8)
        for i, (path, _) in enumerate(found.samples):
            try:
                image = found.loader(path).convert(mode)
            except OSError as e:
                raise DataError(f"{path}: cannot be read as an image ({first_line(e)})") from e
            if image.size != size:
                raise DataError(
                    f"{path}: is {image.width}x{image.height}, the data set's images are {size[0]}x{size[1]} "
                    f"(data.shape={list(shape)}): bring them to one size, or set data.shape="
                )
            pixels[i] = np.asarray(image)
        return Split(torch.from_numpy(pixels), torch.tensor(found.targets).long(), list(found.classes), folder, folder)


class Arrays:
    """A user's arrays: ``<root>/train.npz`` and ``<root>/test.npz``, each with uint8 images ``x`` and integer labels ``y``."""

    def __init__(self, train: str = f"{SPLITS[0]}.npz", test: str = f"{SPLITS[1]}.npz"):
        self.files = {"train": train, "test": test}

    def paths(self, root: Path) -> list[Path]:
        return [root / name for name in self.files.values()]

    def read(self, root: Path, split: str, download: bool, name: str, shape: Sequence[int]) -> Split:
        path = root / self.files[split]
        try:
            with np.load(path) as arrays:
                x, y = arrays["x"], arrays["y"]
        except FileNotFoundError as e:
            raise DataError(f"{path}: no such file: data={name} expects {LAYOUTS['npz']}") from e
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: cannot be read as .npz with arrays x and y ({describe(e)})") from e
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
            raise DataError(f"{path}: y must be {len(x)} integer labels, one per image of x; it is {y.dtype} {y.shape}")
        if split == "train" and len(y):
            empty = sorted(set(range(int(y.max()) + 1)) - set(np.unique(y).tolist()))
            if empty:  # data.num_classes is the largest label + 1: a class without images would be trained silently
                listed = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
                raise DataError(
                    f"{path}: y has no image of class {listed} (its labels run {int(y.min())}..{int(y.max())}): "
                    "labels count from 0 and every class up to the largest needs images; relabel y "
                    "(e.g. y - 1 when they count from 1)"
                )
        return Split(as_uint8(x, path), torch.from_numpy(y.astype(np.int64)), None, path, path)


# --------------------------------------------------------------------------- importing files offline


def _find(where: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` anywhere under ``where`` (the shallowest)."""
    found = sorted(where.rglob(name), key=lambda p: len(p.parts)) or sorted(
        where.rglob(f"{name}.gz"), key=lambda p: len(p.parts)
    )
    return found[0] if found else None


def _unpacked(source: Path, scratch: Path) -> Path:
    """A folder to look in: ``source`` itself, or where its archive (.tar.gz, .zip, ...) was unpacked."""
    if source.is_dir():
        return source
    try:
        if tarfile.is_tarfile(source):
            with tarfile.open(source) as archive:
                archive.extractall(scratch, filter="data")
            return scratch
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                archive.extractall(scratch)
            return scratch
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{source}: cannot be unpacked ({e})") from e
    raise DataError(f"{source}: neither a folder nor an archive (.tar.gz, .zip)")


def import_files(source: Path, root: Path, reader: Torchvision, shape: Sequence[int]) -> Path:
    """Copy (and gunzip) a data set's files from a folder or an archive into ``<root>/<reader.folder>``, checked."""
    source, target = Path(source), Path(root) / reader.folder
    with tempfile.TemporaryDirectory() as scratch:
        where = _unpacked(source, Path(scratch))
        target.mkdir(parents=True, exist_ok=True)
        for name in reader.all_files():
            found = _find(where, name)
            if found is None:
                raise DataError(f"{source}: has neither {name} nor {name}.gz")
            if found.suffix != ".gz":
                shutil.copyfile(found, target / name)
                continue
            try:
                with gzip.open(found, "rb") as src, open(target / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as e:
                raise DataError(f"{found}: cannot be unpacked ({e}); is it a complete gzip file?") from e
    for split in reader.files:
        reader.check(Path(root), split, shape)
    return target
