#!/usr/bin/env python
"""Import a shipped data set's files offline into the layout its reader expects, or print its pixel statistics.

    python scripts/prepare_data.py --data fashion_mnist --from /usr/share/datasets/fashion-mnist
    python scripts/prepare_data.py --data cifar10 --from ~/Downloads/cifar-10-python.tar.gz
    python scripts/prepare_data.py --data cifar10 --stats

--from takes a folder or an archive (.tar.gz, .zip) holding the data set's files (each plain or .gz, at any
depth) and copies them into <root>/<folder> as conf/data/<name>.yaml names them (data.source.folder and
data.source.files); then reads both splits back through the data set's own reader (torchvision's class, which
checks what it checks, e.g. CIFAR's md5s). Offline machines use this instead of torchvision's download (Debian's
Fashion-MNIST files differ in md5 from torchvision's list, so torchvision would try to download them again).
--stats prints the per-channel mean and std of the training split's pixels beside the YAML's data.mean and
data.std (for your own images: data=folder or data=npz with --root).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from lossbench.config import validate
from lossbench.data import DataError, ImageData
from lossbench.errors import LossbenchError
from lossbench.paths import compose
from lossbench.shipped import data_names, downloadable
from lossbench.sources import import_files


def pixel_stats(data: ImageData) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training split's pixels, scaled to [0, 1]."""
    images = data.read_split("train").images.double().div_(255)
    return images.mean(dim=(0, 2, 3)).tolist(), images.std(dim=(0, 2, 3), correction=0).tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, choices=data_names(), help="the data=... option (conf/data/)")
    parser.add_argument("--from", dest="source", type=Path, help="folder or archive holding the data set's files")
    parser.add_argument("--stats", action="store_true", help="print the training split's per-channel mean and std")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("LOSSBENCH_DATA", "data")),
        help="data.root (default: $LOSSBENCH_DATA or ./data)",
    )
    args = parser.parse_args(argv)
    if args.source is None and not args.stats:
        parser.error("give --from (import) or --stats, or both")
    try:
        if args.source is not None and args.data not in downloadable():
            raise DataError(
                f"data={args.data} reads data.root as it is: there is nothing to import, point data.root= at it"
            )
        cfg = compose(f"data={args.data}", f"data.root={args.root}", "data.download=false")
        validate(cfg)
        data = instantiate(cfg.data, shuffle_seed=0)
        if args.source is not None:
            target = import_files(args.source, args.root, data.source, data.shape)
            for split in ("train", "test"):
                data.read_split(split)  # through the data set's own reader, as a run reads it
            print(
                f"{args.data} ready in {target}; train with: python -m lossbench.train data={args.data} data.root={args.root}"
            )
        if args.stats:
            mean, std = pixel_stats(data)
            print(
                f"{args.data} training split, per channel: mean {[round(m, 4) for m in mean]}, std {[round(s, 4) for s in std]}"
            )
            node = OmegaConf.to_container(cfg.data, resolve=True)
            print(f"conf/data/{args.data}.yaml: data.mean={node['mean']}, data.std={node['std']}")
    except LossbenchError as e:
        print(f"prepare_data: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
