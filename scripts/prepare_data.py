#!/usr/bin/env python
"""Import a folder of MNIST-format idx files (.gz or not) into the layout torchvision reads.

    python scripts/prepare_data.py --from /usr/share/datasets/fashion-mnist --dataset FashionMNIST

writes <root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, checking each file.
Offline machines use this instead of torchvision's download (Debian's copies differ in md5 from
torchvision's list, so torchvision would try to re-download them).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lossbench.data import DATASETS, DataError, import_idx_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True, type=Path, help="folder holding the four idx files")
    parser.add_argument(
        "--dataset", default="FashionMNIST", choices=DATASETS, help="torchvision class name (default: FashionMNIST)"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("LOSSBENCH_DATA", "data")),
        help="data.root (default: $LOSSBENCH_DATA or ./data)",
    )
    args = parser.parse_args(argv)
    try:
        raw = import_idx_folder(args.source, args.root, args.dataset)
    except DataError as e:
        print(f"prepare_data: error: {e}", file=sys.stderr)
        return 2
    print(
        f"{args.dataset} ready in {raw}; train with: python -m lossbench.train data={'fashion_mnist' if args.dataset == 'FashionMNIST' else args.dataset.lower()} data.root={args.root}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
