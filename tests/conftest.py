from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from idx import write_mnist_family  # noqa: E402

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A torchvision root holding a 600/200-image MNIST in idx format."""
    return write_mnist_family(tmp_path / "data", "MNIST", n_train=600, n_test=200)
