"""`python -m lossbench.train` as a user runs it: a subprocess, read back from the MLflow store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ENV, read_runs, tiny_overrides


def train(*overrides: str, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lossbench.train", *overrides],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_run_records_every_epoch_and_finishes(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    done = train(
        *tiny_overrides(tiny_mnist, store, "loss=hinge", "optimizer=sgd", "trainer.max_epochs=3"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = read_runs(store)
    assert [r.info.status for r in runs] == ["FINISHED"]
    for key in ("train/loss", "val/loss", "train/acc", "val/acc"):
        assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, key)) == [1, 2, 3], key
    assert runs[0].data.tags["loss"] == "hinge" and runs[0].data.tags["optimizer"] == "sgd"
    # Hydra wrote its output under the launch directory; the store is where tracking.uri said.
    assert list((tmp_path / "outputs").glob("*/*/.hydra/overrides.yaml"))


def test_default_store_is_sqlite_in_the_launch_directory(tiny_mnist: Path, tmp_path: Path):
    overrides = [
        o
        for o in tiny_overrides(tiny_mnist, tmp_path / "unused.db", "trainer.max_epochs=1")
        if not o.startswith("tracking.uri")
    ]
    done = train(*overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "mlflow.db").is_file() and not (tmp_path / "mlruns").exists()
    assert len(read_runs(tmp_path / "mlflow.db")[1]) == 1


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (
            ["loss=nosuchloss"],
            "loss=nosuchloss: no such option in conf/loss/; choose one of bce, bce_prob, bce_single, ce,",
        ),
        (["+experiment=nosuch"], "experiment=nosuch: no such option in conf/experiment/; choose one of all_losses,"),
        (["optimizer.lr=-1"], "optimizer.lr=-1 is invalid"),
        (["data.batch_size=0"], "data.batch_size=0 is invalid"),
        (["data.root=/nonexistent/data", "data.download=false"], "mnist not found: missing"),
        (["no_such_key=1"], "no_such_key: no such key in the config"),
        (["loss.no_such_key=1"], "loss.no_such_key: no such key in the config"),
        (["model=mlp", "model.net.hidden=[0]"], "model.net.hidden=[0] is invalid"),
    ],
)
def test_bad_overrides_exit_2_with_one_line_before_training(tiny_mnist: Path, tmp_path: Path, overrides, reason):
    store = tmp_path / "mlflow.db"
    base = [
        o for o in tiny_overrides(tiny_mnist, store) if not any(o.startswith(x.split("=")[0] + "=") for x in overrides)
    ]
    done = train(*base, *overrides, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("lossbench: error: " + reason) and done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert "Epoch" not in done.stdout + done.stderr, "training must not have started"
    assert not store.exists() or read_runs(store)[1] == []


def test_help_lists_groups_and_options(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "lossbench.train", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for text in (
        "lossbench-train",
        "loss:",
        "optimizer:",
        "model:",
        "data:",
        "trainer:",
        "mae",
        "fashion_mnist",
        "tracking:",
        "optimizer.lr=0.01",
    ):
        assert text in done.stdout, text
    script = shutil.which("lossbench-train", path=str(Path(sys.executable).parent))
    assert script, "console script lossbench-train is not installed"
    assert subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60).stdout == done.stdout
