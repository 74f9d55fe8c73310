"""Write small data sets in MNIST's own idx format, so torchvision's real reader loads them in tests."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

RAW_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file: magic (0, 0, 0x08, ndim), big-endian dims, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def make_images(labels: np.ndarray, rng: np.random.Generator, signal: int = 180) -> np.ndarray:
    """Learnable 28x28 images: each class lights up its own band of rows by ``signal``, plus noise in 0..59
    (180: every model learns them perfectly; ~10: a few epochs leave losses apart by some points)."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.int64)
    for i, label in enumerate(labels):
        images[i, 2 * label + 4 : 2 * label + 7, 4:24] += signal
    return np.clip(images, 0, 255).astype(np.uint8)


def write_mnist_family(
    root: Path, name: str = "MNIST", n_train: int = 600, n_test: int = 200, seed: int = 0, signal: int = 180
) -> Path:
    """Write ``<root>/<name>/raw/`` with train and test idx files (``signal``: see :func:`make_images`);
    returns ``root``."""
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for train, n in ((True, n_train), (False, n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images_file, labels_file = RAW_FILES[train]
        write_idx(raw / images_file, make_images(labels, rng, signal))
        write_idx(raw / labels_file, labels.astype(np.uint8))
    return Path(root)


# --------------------------------------------------------------------------- traceable and broken data


def raw_path(root: Path, name: str, train: bool, kind: str) -> Path:
    """Path of one idx file under ``<root>/<name>/raw/``; ``kind`` is ``images`` or ``labels``."""
    return Path(root) / name / "raw" / RAW_FILES[train][0 if kind == "images" else 1]


def index_images(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random 28x28 uint8 images whose first two pixels spell their own index ``i < 65536``:
    pixel (0, 0) is ``i // 256`` and pixel (0, 1) is ``i % 256``; see :func:`decode_index`."""
    if n > 65536:
        raise ValueError("index_images encodes at most 65536 indices")
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.int64)
    i = np.arange(n)
    images[:, 0, 0], images[:, 0, 1] = i // 256, i % 256
    return images.astype(np.uint8)


def decode_index(images: np.ndarray) -> np.ndarray:
    """The indices spelled by :func:`index_images` in raw uint8 images of shape ``(N, ..., 28, 28)``."""
    images = np.asarray(images).reshape(-1, 28, 28).astype(np.int64)
    return images[:, 0, 0] * 256 + images[:, 0, 1]


def write_indexed_family(root: Path, name: str = "MNIST", n_train: int = 600, n_test: int = 200, seed: int = 0) -> dict:
    """Write ``<root>/<name>/raw/`` with :func:`index_images` and random labels (0..9, every class
    present); return the arrays written, ``{"train": (images, labels), "test": (images, labels)}``."""
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for train, n in ((True, n_train), (False, n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = index_images(n, rng)
        write_idx(raw_path(root, name, train, "images"), images)
        write_idx(raw_path(root, name, train, "labels"), labels)
        written["train" if train else "test"] = (images, labels)
    return written


def read_idx_bytes(path: Path, ndim: int) -> np.ndarray:
    """An idx file's payload read with numpy alone (no torchvision), shaped by its header."""
    data = Path(path).read_bytes()
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def truncate(path: Path, drop: int) -> None:
    """Cut the last ``drop`` bytes off a file (a partial download, a full disk)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) - drop])


def overwrite(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes of a file in place, keeping its size."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
