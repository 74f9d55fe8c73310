"""torchvision's CIFAR-10, CIFAR-100 and SVHN classes with their md5 checks switched off, for tests only.

torchvision checks each file of these data sets against the md5 of the real download, so small files written in
the real format (tests/formats.py) are refused by the production classes (tests/test_datasets.py shows it). Each
subclass below changes nothing but the expected checksums: ``None``, which torchvision's ``check_integrity``
reads as "the file exists". Reading, parsing and labels are torchvision's own code, as in production, where
conf/data/*.yaml names torchvision's classes themselves. Used as ``data.source.dataset=unchecked.UncheckedCIFAR10``.
"""

from __future__ import annotations

from torchvision.datasets import CIFAR10, CIFAR100, SVHN


class UncheckedCIFAR10(CIFAR10):
    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class UncheckedCIFAR100(CIFAR100):
    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


class UncheckedSVHN(SVHN):
    split_list = {split: [url, name, None] for split, (url, name, _) in SVHN.split_list.items()}
