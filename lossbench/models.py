"""The classifiers lossbench trains: ``linear`` (the classic Linear(784, 10)), ``mlp`` and ``cnn``.

Each takes normalised images ``(N, 1, 28, 28)`` and returns logits ``(N, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class Linear(nn.Module):
    """Multinomial logistic regression: one ``nn.Linear`` on the flattened pixels."""

    def __init__(self, in_features: int = 784, num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


class MLP(nn.Module):
    """Fully connected ReLU network, e.g. 784-256-128-10, with optional dropout after each hidden layer."""

    def __init__(
        self, in_features: int = 784, hidden: Sequence[int] = (256, 128), num_classes: int = 10, dropout: float = 0.0
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
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
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        num_classes: int = 10,
        dropout: float = 0.0,
        batch_norm: bool = False,
        pool_every: int = 1,
        in_channels: int = 1,
        image_size: int = 28,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width, size = in_channels, image_size
        for i, c in enumerate(channels):
            layers.append(nn.Conv2d(width, c, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.ReLU())
            if (i + 1) % pool_every == 0:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            width = c
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(width * size * size, hidden), nn.ReLU()]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
