"""Small data sets written in each shipped data set's real on-disk format, for torchvision's own readers.

- idx files (MNIST, Fashion-MNIST, KMNIST, EMNIST): tests/idx.py's writer, EMNIST's file names;
- CIFAR-10 and CIFAR-100: pickled dicts (``data`` N x 3072 uint8 rows, R then G then B planes; ``labels`` or
  ``fine_labels``), five training batches and a test batch, and the meta file with the class names;
- SVHN: MATLAB files ``{train,test}_32x32.mat`` with ``X`` (32, 32, 3, N) and ``y`` (N, 1) in 1..10 (10 is digit 0);
- a user's image folder (PNG files in class sub-folders) and a user's ``.npz`` arrays.

Every image is learnable: its class lights up its own band of rows (``band``), plus noise; ``index`` images
spell their own index in the first two pixels of channel 0 instead, so a test can follow each one.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from idx import write_idx

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EMNIST_BALANCED = 47


def labels_for(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels covering every class as evenly as possible, shuffled."""
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    return labels


def band_images(labels: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """uint8 images (N, H, W, C): noise, plus a bright band of rows whose place is the label's (modulo the height).
    Channel c is shifted by c rows, so colour images differ per channel."""
    c, h, w = shape
    images = rng.integers(0, 60, size=(len(labels), h, w, c), dtype=np.int64)
    rows = (np.asarray(labels) * 2) % (h - 4)
    for channel in range(c):
        for i, row in enumerate(rows):
            start = (row + channel) % (h - 3)
            images[i, start : start + 3, 2 : w - 2, channel] += 180
    return np.clip(images, 0, 255).astype(np.uint8)


def index_images(n: int, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Random uint8 images (N, H, W, C) whose pixels (0, 0) and (0, 1) of channel 0 spell their index."""
    c, h, w = shape
    images = rng.integers(0, 256, size=(n, h, w, c), dtype=np.int64)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(n) // 256, np.arange(n) % 256
    return images.astype(np.uint8)


def decode(images_nchw: np.ndarray) -> np.ndarray:
    """The indices spelled by :func:`index_images` in uint8 images (N, C, H, W)."""
    pixels = np.asarray(images_nchw).astype(np.int64)
    return pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 0, 1]


def _pickle(path: Path, content: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=2)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) as CIFAR's rows: N x 3072, the red plane, then green, then blue, each row-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def write_cifar10(root: Path, n_train: int = 500, n_test: int = 100, seed: int = 0, index: bool = False) -> dict:
    """``<root>/cifar-10-batches-py/``: data_batch_1..5 (the training images in 5 parts), test_batch, batches.meta.
    Returns the arrays written: ``{"train": (images NHWC, labels), "test": ...}``."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = labels_for(n, 10, rng)
        images = index_images(n, (3, 32, 32), rng) if index else band_images(labels, (3, 32, 32), rng)
        written[split] = (images, labels)
    for part, rows in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        images, labels = written["train"][0][rows], written["train"][1][rows]
        _pickle(
            folder / f"data_batch_{part}",
            {"batch_label": f"training batch {part} of 5", "labels": labels.tolist(), "data": _cifar_rows(images)},
        )
    images, labels = written["test"]
    _pickle(
        folder / "test_batch",
        {"batch_label": "testing batch 1 of 1", "labels": labels.tolist(), "data": _cifar_rows(images)},
    )
    _pickle(
        folder / "batches.meta", {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": n_train // 5, "num_vis": 3072}
    )
    return written


def write_cifar100(root: Path, n_train: int = 1000, n_test: int = 200, seed: int = 0) -> dict:
    """``<root>/cifar-100-python/``: train, test (``fine_labels`` and ``coarse_labels``) and meta."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = labels_for(n, 100, rng)
        images = band_images(labels, (3, 32, 32), rng)
        written[split] = (images, labels)
        _pickle(
            folder / split,
            {"fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(), "data": _cifar_rows(images)},
        )
    names = [f"class_{i:02d}" for i in range(100)]
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": [f"super_{i}" for i in range(20)]})
    return written


def write_svhn(root: Path, n_train: int = 500, n_test: int = 100, seed: int = 0) -> dict:
    """``<root>/train_32x32.mat`` and ``test_32x32.mat`` as SVHN ships them: X (32, 32, 3, N), y (N, 1) in 1..10."""
    from scipy.io import savemat

    Path(root).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        digits = labels_for(n, 10, rng)
        images = band_images(digits, (3, 32, 32), rng)
        files_labels = np.where(digits == 0, 10, digits).reshape(-1, 1).astype(np.uint8)  # SVHN writes 0 as 10
        savemat(Path(root) / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": files_labels})
        written[split] = (images, digits)
    return written


def write_emnist(root: Path, n_train: int = 940, n_test: int = 188, seed: int = 0) -> dict:
    """``<root>/EMNIST/raw/emnist-balanced-{train,test}-{images-idx3,labels-idx1}-ubyte``: 47 classes."""
    raw = Path(root) / "EMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = labels_for(n, EMNIST_BALANCED, rng)
        images = band_images(labels, (1, 28, 28), rng)[..., 0]
        write_idx(raw / f"emnist-balanced-{split}-images-idx3-ubyte", images)
        write_idx(raw / f"emnist-balanced-{split}-labels-idx1-ubyte", labels.astype(np.uint8))
        written[split] = (images, labels)
    return written


def write_image_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "fox"),
    per_class: tuple[int, int] = (60, 15),
    shape: tuple[int, int, int] = (3, 32, 32),
    seed: int = 0,
) -> dict:
    """``<root>/{train,test}/<class>/<n>.png``: a user's own images (grey when ``shape[0] == 1``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = {}
    for split, n in zip(("train", "test"), per_class):
        labels = np.repeat(np.arange(len(classes)), n)
        images = band_images(labels, shape, rng)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = Path(root) / split / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0] if shape[0] == 1 else image).save(folder / f"{i:05d}.png")
        written[split] = (images, labels)
    return written


def write_npz(
    root: Path, n_train: int = 300, n_test: int = 60, classes: int = 4, shape=(1, 28, 28), seed: int = 0
) -> dict:
    """``<root>/train.npz`` and ``test.npz`` with ``x`` uint8 (N, H, W) (grey) or (N, H, W, C) and ``y`` int64."""
    Path(root).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = labels_for(n, classes, rng)
        images = band_images(labels, shape, rng)
        x = images[..., 0] if shape[0] == 1 else images
        np.savez(Path(root) / f"{split}.npz", x=x, y=labels.astype(np.int64))
        written[split] = (images, labels)
    return written
