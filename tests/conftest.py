from __future__ import annotations

import os
import subprocess
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

# The environment of a lossbench command a test starts: output unbuffered, no tracking URI from the caller's shell.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ENV.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    """A data.root holding FashionMNIST/raw/, imported from Debian's .gz files by lossbench itself."""
    if not FASHION_MNIST_DEBIAN.is_dir():
        pytest.skip(
            f"Debian's Fashion-MNIST is not installed: no {FASHION_MNIST_DEBIAN} (apt-get install dataset-fashion-mnist)"
        )
    from hydra.utils import instantiate

    from lossbench.shipped import data_yaml
    from lossbench.sources import import_files

    root = tmp_path_factory.mktemp("fashion")
    import_files(FASHION_MNIST_DEBIAN, root, instantiate(data_yaml("fashion_mnist").source), (1, 28, 28))
    return root


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


def train_runs(store: Path):
    """``(client, runs)`` of the default experiment, without the sweep's parent run: the training runs."""
    client, runs = read_runs(store)
    return client, [r for r in runs if r.data.tags.get("lossbench.kind") == "train"]


def sweep(tmp_path: Path, root: Path, *overrides: str, timeout: int = 400) -> subprocess.CompletedProcess:
    """``python -m lossbench.train -m`` of one-epoch jobs on tiny data into ``tmp_path/mlflow.db``, run from ``tmp_path``."""
    store = tmp_path / "mlflow.db"
    args = [
        sys.executable,
        "-m",
        "lossbench.train",
        "-m",
        *tiny_overrides(root, store, "trainer.max_epochs=1"),
        *overrides,
    ]
    return subprocess.run(args, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=timeout)


def bare_trainer(**settings):
    """A CPU Lightning Trainer that only fits and validates: no logger, checkpoints, progress bar, summary or sanity check."""
    import pytorch_lightning as pl

    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **settings,
    )
