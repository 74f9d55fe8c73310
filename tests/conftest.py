from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from idx import write_mnist_family  # noqa: E402

from lossbench.paths import compose  # noqa: E402,F401  (the tests compose the real config with it)

# What every run records, written out here independently of lossbench.metric_names.
EPOCH_METRICS = [
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "val/nll",
    "val/ece",
    "train_eval/loss",
    "train_eval/acc",
    "train_eval/nll",
    "train_eval/ece",
    "lr",
    "time/epoch_s",
]
FINAL_METRICS = ["test/loss", "test/acc", "test/nll", "test/ece", "test_last/loss", "test_last/acc"]

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A torchvision root holding a 600/200-image MNIST in idx format."""
    return write_mnist_family(tmp_path / "data", "MNIST", n_train=600, n_test=200)


def tiny_overrides(root: Path, store: Path, *extra: str) -> list[str]:
    """Overrides for a fast run on tiny idx data with its own SQLite store."""
    return [
        f"data.root={root}",
        "data.val_size=100",
        "data.train_eval_size=100",
        "data.eval_batch_size=100",
        f"tracking.uri=sqlite:///{store}",
        f"tracking.checkpoint_dir={store.parent / 'checkpoints'}",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "analysis.figures=false",
        *extra,
    ]


def read_runs(store: Path, experiment: str = "lossbench"):
    """All runs of an experiment in an SQLite store, as MlflowClient sees them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    found = client.get_experiment_by_name(experiment)
    return client, ([] if found is None else client.search_runs([found.experiment_id], max_results=1000))
