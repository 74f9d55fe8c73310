"""The classifiers lossbench trains: ``linear``, ``mlp``, ``cnn``, ``cnn4`` on any data set, and for GPU runs at CIFAR
scale ``cnn8`` (the 8-layer CNN of the Active-Passive Losses paper) and ``resnet18`` (a ResNet-18 for 32x32 images).

Each takes normalised images ``(N, C, H, W)`` and returns logits ``(N, num_classes)``. Its input shape
``in_shape = [C, H, W]`` and class count come from the data (``in_shape: ${data.shape}``,
``num_classes: ${data.num_classes}`` in ``conf/model/*.yaml``): no model knows a data set's size, so ``in_shape``
has no default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchvision.models
from torch import Tensor, nn


class SingleLogit(nn.Module):
    """A one-output network (``loss.outputs: 1``, ``loss=bce_single``) read as two classes' logits ``[0, s]``: the
    softmax of those is ``[1 - sigmoid(s), sigmoid(s)]``, the single sigmoid's own distribution, so every yardstick,
    margin and figure treats it like any two-class model."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        s = self.net(x)
        return torch.cat([torch.zeros_like(s), s], dim=1)


class Linear(nn.Module):
    """Multinomial logistic regression: one ``nn.Linear`` on the flattened pixels (784 inputs for MNIST)."""

    def __init__(self, in_shape: Sequence[int], num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(math.prod(in_shape), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


class MLP(nn.Module):
    """Fully connected ReLU network, e.g. 784-256-128-10 on MNIST, with optional dropout after each hidden layer."""

    def __init__(
        self,
        in_shape: Sequence[int],
        hidden: Sequence[int] = (256, 128),
        num_classes: int = 10,
        dropout: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Conv blocks (3x3 conv, optional batch norm, ReLU, 2x2 max-pool), then a dense layer.

    ``channels=[32, 64]`` is the usual small MNIST CNN; ``channels=[32, 32, 64, 64]`` with
    ``batch_norm=True`` and ``pool_every=2`` is the 4-layer CNN of the noisy-label literature.
    Each pooling halves the image (rounding down): a 28x28 image is 7x7 after two, a 32x32 one 8x8.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        num_classes: int = 10,
        dropout: float = 0.0,
        batch_norm: bool = False,
        pool_every: int = 1,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width, height, breadth = in_shape
        for i, c in enumerate(channels):
            layers.append(nn.Conv2d(width, c, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.ReLU())
            if (i + 1) % pool_every == 0:
                layers.append(nn.MaxPool2d(2))
                height, breadth = height // 2, breadth // 2
            width = c
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(width * height * breadth, hidden), nn.ReLU()]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class CNN8(nn.Module):
    """The 8-layer CNN of Ma et al. (ICML 2020) for CIFAR-10: six 3x3 convolutions, two dense layers.

    Three blocks of two (3x3 conv with bias, batch norm, ReLU), each block ending in 2x2 max-pooling, with
    64, 128 and 196 channels; then a 256-unit dense layer with batch norm and ReLU, and the output layer.
    Convolutions are initialised He-uniform (``fan_in``, ReLU gain), dense layers Xavier-uniform, biases and
    batch norm as PyTorch does. This is the authors' released ``ToyModel(type='CIFAR10')``
    (github.com/HanxunH/Active-Passive-Losses, models.py: ``ConvBrunch`` lines 15-26, ``ToyModel`` lines 29-87 with
    its CIFAR-10 branch at lines 33-52 and ``_reset_prams`` at lines 69-75). The paper's text says "8-layer CNN" and no more; the
    widths (196, not 256), the batch norm before the last ReLU and the initialisation are the code's. Here the
    input's channels and size come from the data (the code fixes 3x32x32 and 10 classes).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int = 10,
        channels: Sequence[int] = (64, 128, 196),
        hidden: int = 256,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width, height, breadth = in_shape
        for c in channels:
            for _ in range(2):
                layers += [nn.Conv2d(width, c, kernel_size=3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
                width = c
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            height, breadth = height // 2, breadth // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * height * breadth, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al., CVPR 2016) for 32x32 images: torchvision's ``resnet18`` with its ImageNet stem (7x7
    stride-2 convolution, then max-pooling: a 32x32 image would be 8x8 before the first block) replaced by one 3x3
    stride-1 convolution and no pooling, as in the CIFAR ResNets of the noisy-label literature. Four stages of
    two basic blocks (64, 128, 256, 512 channels), global average pooling, one dense layer; ~11.2 M weights for
    10 classes. The APL authors' ``ResNet18`` (github.com/HanxunH/Active-Passive-Losses, models.py lines 150-195)
    is the same network initialised He-uniform (``_reset_prams``); here it keeps torchvision's initialisation."""

    def __init__(self, in_shape: Sequence[int], num_classes: int = 10):
        super().__init__()
        self.net = torchvision.models.resnet18(num_classes=num_classes)
        self.net.conv1 = nn.Conv2d(in_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.net.maxpool = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
