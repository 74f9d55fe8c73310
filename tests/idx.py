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


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Learnable 28x28 images: each class lights up its own band of rows, plus noise."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.int64)
    for i, label in enumerate(labels):
        images[i, 2 * label + 4 : 2 * label + 7, 4:24] += 180
    return np.clip(images, 0, 255).astype(np.uint8)


def write_mnist_family(root: Path, name: str = "MNIST", n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Write ``<root>/<name>/raw/`` with train and test idx files; returns ``root``."""
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for train, n in ((True, n_train), (False, n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images_file, labels_file = RAW_FILES[train]
        write_idx(raw / images_file, make_images(labels, rng))
        write_idx(raw / labels_file, labels.astype(np.uint8))
    return Path(root)
