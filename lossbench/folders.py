"""A user's own data in ``data.root``, looked at when the config is composed: ``${lossbench.images:...}``.

``conf/data/folder.yaml`` (class sub-folders of images under ``train/`` and ``test/``, read by torchvision's
``ImageFolder``) and ``conf/data/npz.yaml`` (``train.npz`` and ``test.npz`` holding arrays ``x`` and ``y``)
cannot know their images' shape, classes or name in advance. They ask this resolver, which reads them from
``data.root`` whenever the config is resolved: the folder names (or the largest label), and the first image's
size and mode (or the array's header), never the pixels (a few milliseconds). So a model's ``in_shape: ${data.shape}`` and
``num_classes: ${data.num_classes}`` hold for a user's images as for MNIST's, and they are part of the
config (and its hash) like any other data set's.

Torch-free and light (PIL and numpy only when a folder is looked at): imported wherever configs are
composed or resolved (lossbench.paths). When ``data.root`` holds no such data the resolver answers None and
config validation names the key with what it expects (``data.shape`` ... data=folder expects ...).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

RESOLVER = "lossbench.images"
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
LAYOUTS = {
    "folder": "<root>/train/<class>/<image> and <root>/test/<class>/<image> (torchvision's ImageFolder)",
    "npz": "<root>/train.npz and <root>/test.npz, each with uint8 images x (N,H,W | N,H,W,C | N,C,H,W) and labels y",
}


def class_folders(split: Path) -> list[str]:
    """The class sub-folders of one split, sorted as torchvision's ImageFolder sorts them."""
    return sorted(entry.name for entry in split.iterdir() if entry.is_dir())


def first_image(split: Path, classes: list[str]) -> Path | None:
    """One image file of the split (the first of the first class that has one)."""
    for name in classes:
        for path in sorted((split / name).iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                return path
    return None


def channels_of(mode: str) -> int:
    """1 for grey images (PIL modes L, 1, I, F, I;16), 3 for colour ones (RGB, RGBA, P, CMYK, ...): read as RGB."""
    return 1 if mode in ("1", "L", "I", "F") or mode.startswith("I;") else 3


def folder_facts(root: str) -> dict[str, Any] | None:
    """``name``, ``shape`` [C, H, W], ``classes`` and ``num_classes`` of an image folder; None when it is not one."""
    train = Path(root).expanduser() / SPLITS[0]
    if not train.is_dir():
        return None
    classes = class_folders(train)
    image = first_image(train, classes)
    if image is None:
        return None
    from PIL import Image  # PIL only where a user's folder is looked at

    with Image.open(image) as opened:
        width, height, mode = opened.width, opened.height, opened.mode
    return {
        "name": Path(root).expanduser().resolve().name,
        "shape": [channels_of(mode), height, width],
        "classes": classes,
        "num_classes": len(classes),
    }


def npz_header(path: Path, key: str) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of array ``key`` in an .npz file, from its header alone."""
    import numpy as np  # numpy only where a user's arrays are looked at

    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        major, _ = np.lib.format.read_magic(member)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(member)
    return tuple(shape), dtype.str


def npz_facts(root: str) -> dict[str, Any] | None:
    """``name``, ``shape`` [C, H, W] and ``num_classes`` (largest training label + 1) of an .npz pair; None when absent."""
    path = Path(root).expanduser() / f"{SPLITS[0]}.npz"
    try:
        shape, _ = npz_header(path, "x")
        import numpy as np  # numpy only where a user's arrays are looked at

        with np.load(path) as arrays:
            top = int(arrays["y"].max()) if arrays["y"].size else 0
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return {"name": Path(root).expanduser().resolve().name, "shape": image_shape(shape), "num_classes": top + 1}


def image_shape(shape: tuple[int, ...]) -> list[int] | None:
    """[C, H, W] of an image array (N, H, W), (N, H, W, C) or (N, C, H, W): channels are the 1, 3 or 4 that is not square."""
    if len(shape) == 3:
        return [1, shape[1], shape[2]]
    if len(shape) != 4:
        return None
    if shape[3] in (1, 3, 4) and shape[1] == shape[2]:
        return [shape[3], shape[1], shape[2]]
    return [shape[1], shape[2], shape[3]]


def missing(root: str, layout: str) -> str:
    """Why ``root`` holds no ``layout`` data the resolver can read: the path it looked in, and what it found there."""
    base = Path(root).expanduser().resolve()
    if layout == "folder":
        train = base / SPLITS[0]
        if not train.is_dir():
            return f"no folder {train}"
        if not class_folders(train):
            return f"{train} has no class folders"
        return f"no image ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {train}"
    path = base / f"{SPLITS[0]}.npz"
    if not path.is_file():
        return f"no file {path}"
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(name.removesuffix(".npy") for name in archive.namelist())
        if not {"x", "y"} <= set(names):
            return f"{path} holds the arrays {', '.join(names) or 'none'}, not x and y"
        shape, _ = npz_header(path, "x")
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        return f"{path} cannot be read as .npz ({type(e).__name__}: {e})"
    return f"{path}: x has the shape {shape}, not images (N,H,W), (N,H,W,C) or (N,C,H,W)"


def images(root: str, layout: str, fact: str) -> Any:
    """The resolver ``${lossbench.images:<root>,<folder|npz>,<name|shape|classes|num_classes>}``; None when
    ``root`` holds no such data (config validation then says what it expects there)."""
    facts = {"folder": folder_facts, "npz": npz_facts}[layout](str(root))
    return None if facts is None else facts.get(fact)


def register() -> None:
    """Make ``${lossbench.images:...}`` known to OmegaConf (idempotent); done when this module is imported."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, images)


register()
