"""One run, in process, through the real config: what reaches MLflow, reproducibility, bad config."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import pytest
from conftest import EPOCH_METRICS, FINAL_METRICS, bare_trainer, compose, read_runs, tiny_overrides

from lossbench.config import config_hash, without_name
from lossbench.errors import ConfigError
from lossbench.paths import conf_dir
from lossbench.train import run


def test_run_records_every_epoch_metric_test_metrics_and_figures(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    cfg = compose(*tiny_overrides(tiny_mnist, store, "loss=mae", "seed=3", "analysis.figures=true"))

    objective = run(cfg)

    client, runs = read_runs(store)
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED"
    assert r.info.run_name.startswith("mae-adam-linear-s3-")
    assert {k: r.data.tags[k] for k in ("loss", "optimizer", "model", "data", "seed")} == {
        "loss": "mae",
        "optimizer": "adam",
        "model": "linear",
        "data": "mnist",
        "seed": "3",
    }
    assert r.data.tags["config_hash"] == config_hash(cfg)
    for key in EPOCH_METRICS:
        history = client.get_metric_history(r.info.run_id, key)
        assert sorted(m.step for m in history) == [1, 2], key  # MLflow's step is the epoch number
    for key in FINAL_METRICS:
        assert key in r.data.metrics, key
    assert r.data.params["optimizer.lr"] == "0.001" and r.data.params["loss.criterion._target_"] == "torch.nn.L1Loss"
    assert objective == pytest.approx(client.get_metric_history(r.info.run_id, "val/acc")[-1].value)
    # The tiny data set is learnable: a linear model beats chance by far in two epochs.
    assert r.data.metrics["test/acc"] > 0.5

    artifacts = Path(r.info.artifact_uri.removeprefix("file://"))
    assert (artifacts / "config.resolved.yaml").read_text().count("name: mae") == 1
    for png in ("learning_curves.png", "confusion_matrix.png"):
        image = matplotlib.image.imread(artifacts / "figures" / png)
        assert image.shape[0] >= 300 and image.shape[1] >= 400, (png, image.shape)


def test_the_claims_measurements_and_what_a_seed_drew_are_recorded_where_asked(tiny_mnist: Path, tmp_path: Path):
    """analysis.margins / analysis.confident_wrong: recorded by the run that asks, absent from one that does not;
    every run tags what its seed drew."""
    from lossbench.names import (
        CONFIDENCE_METRICS,
        SEED_DRIVES_TAG,
        TEST_CALIBRATION,
        TEST_INPUT_MARGIN_Q,
        TEST_MARGINS,
        TRAIN_EVAL_INPUT_MARGIN_Q,
        TRAIN_EVAL_MARGINS,
    )

    store = tmp_path / "mlflow.db"
    asked = ("analysis.margins=true", "analysis.confident_wrong=true", "data.redraw=true", "data.label_noise.rate=0.2")
    run(compose(*tiny_overrides(tiny_mnist, store, "seed=1", *asked)))
    run(compose(*tiny_overrides(tiny_mnist, store, "seed=1")))
    client, runs = read_runs(store)
    by_drives = {r.data.tags[SEED_DRIVES_TAG]: r for r in runs}
    measured, plain = by_drives["init,order,split,label_noise"], by_drives["init,order"]
    last_margins = [m.replace("test/", "test_last/", 1) for m in TEST_MARGINS]
    for key in (*TEST_MARGINS, *TRAIN_EVAL_MARGINS, *last_margins):
        assert key in measured.data.metrics and key not in plain.data.metrics, key
    for key in CONFIDENCE_METRICS:
        assert len(client.get_metric_history(measured.info.run_id, key)) == 2 and key not in plain.data.metrics, key
    q50 = measured.data.metrics[TRAIN_EVAL_INPUT_MARGIN_Q[50]], measured.data.metrics[TEST_INPUT_MARGIN_Q[50]]
    assert all(math.isfinite(v) for v in q50)
    for r in runs:  # every run is scored on its own probabilities, raw and temperature-scaled (ce: the softmax)
        metrics = r.data.metrics
        for key in (
            *TEST_CALIBRATION.values(),
            *(k.replace("test/", "test_last/", 1) for k in TEST_CALIBRATION.values()),
        ):
            assert math.isfinite(metrics[key]), key
        assert metrics[TEST_CALIBRATION["own_nll"]] == pytest.approx(metrics["test/nll"], rel=1e-5)


def test_bce_single_trains_a_one_output_head_on_two_classes_and_is_scored_like_ce(tiny_mnist: Path, tmp_path: Path):
    import torch

    store = tmp_path / "mlflow.db"
    two = ("data.classes=[0,1]", "data.num_classes=2", "analysis.margins=true")
    run(compose(*tiny_overrides(tiny_mnist, store, "loss=bce_single", *two)))
    client, (r,) = read_runs(store)
    assert r.info.status == "FINISHED" and r.data.tags["loss"] == "bce_single"
    metrics = r.data.metrics
    assert metrics["test/acc"] > 0.8 and math.isfinite(metrics["test/input_margin_q50"])
    assert metrics["test/own_nll"] == pytest.approx(metrics["test/nll"], rel=1e-6), "softmax([0, s]) is sigmoid(s)"
    state = torch.load(Path(r.data.tags["lossbench.checkpoint_dir"]) / "last.ckpt", weights_only=True)["state_dict"]
    assert state["net.net.fc.weight"].shape == (1, 784), "the head has one output"


def test_same_config_and_seed_give_the_same_metrics(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    for _ in range(2):
        run(compose(*tiny_overrides(tiny_mnist, store, "model=mlp", "seed=1")))
    run(compose(*tiny_overrides(tiny_mnist, store, "model=mlp", "seed=2")))
    client, runs = read_runs(store)
    by_seed = {}
    for r in runs:
        curve = [m.value for m in sorted(client.get_metric_history(r.info.run_id, "train/loss"), key=lambda m: m.step)]
        by_seed.setdefault(r.data.tags["seed"], []).append(curve)
    assert by_seed["1"][0] == by_seed["1"][1]
    assert by_seed["1"][0] != by_seed["2"][0]
    assert len({r.info.run_name for r in runs}) == 3, "a fixed seed must not give every run the same name"


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.lr=fast", "optimizer.lr"),
        ("data.batch_size=0", "data.batch_size"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("data.label_noise.rate=1.0", "data.label_noise.rate"),
        ("data.label_noise.kind=pairwise", "data.label_noise.kind"),
        ("data.val_size=1.5", "data.val_size"),
        ("model=mlp model.net.dropout=1.2", "model.net.dropout"),
        ("threads=0", "threads"),
        ("data.eval_batch_size=-1", "data.eval_batch_size"),
        ("early_stopping.patience=0", "early_stopping.patience"),
        ("tracking.timeout_s=0", "tracking.timeout_s"),
        ("resume=maybe-a-path-that-does-not-exist", "resume"),
        ("loss=bce_single", "loss=bce_single has one sigmoid output, for two classes only"),
        ("data.redraw=maybe", "data.redraw"),
        ("analysis.margins=1", "analysis.margins"),
    ],
)
def test_bad_values_are_rejected_naming_the_key_before_anything_is_recorded(
    tiny_mnist: Path, tmp_path: Path, override: str, key: str
):
    store = tmp_path / "mlflow.db"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(compose(*tiny_overrides(tiny_mnist, store, *override.split())))
    assert not store.exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["optimizer=adam", "+optimizer.momentum=0.9"],
            "optimizer: cannot be built from its config: TypeError: Adam.__init__() got an unexpected keyword argument 'momentum'",
        ),
        (
            ["loss.criterion._target_=torch.nn.NoSuchLoss"],
            "loss: cannot be built from its config: ImportError: Error loading 'torch.nn.NoSuchLoss'",
        ),
        (
            ["model=mlp", "+model.net.widthh=3"],
            "model: cannot be built from its config: TypeError: MLP.__init__() got an unexpected keyword argument 'widthh'",
        ),
        (
            ["+data.colour=red"],
            "data: cannot be built from its config: TypeError: ImageData.__init__() got an unexpected keyword argument 'colour'",
        ),
        (
            ["scheduler=step", "+scheduler.foo=3"],
            "scheduler: cannot be built from its config: TypeError: StepLR.__init__() got an unexpected keyword argument 'foo'",
        ),
    ],
)
def test_pieces_that_cannot_be_built_fail_before_a_run_exists(tiny_mnist: Path, tmp_path: Path, overrides, message):
    store = tmp_path / "mlflow.db"
    with pytest.raises(ConfigError) as e:
        run(compose(*tiny_overrides(tiny_mnist, store, *overrides)))
    assert str(e.value).startswith(message)
    assert not store.exists()


def test_missing_data_names_files_path_and_fix_and_leaves_no_run(tmp_path: Path):
    from lossbench.data import DataError

    store = tmp_path / "mlflow.db"
    with pytest.raises(DataError) as e:
        run(compose(*tiny_overrides(tmp_path / "nowhere", store, "data.download=false")))
    message = str(e.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "scripts/prepare_data.py --data mnist --from DIR" in message
    assert not store.exists()


def test_unwritable_store_fails_before_training(tiny_mnist: Path, tmp_path: Path):
    from lossbench.errors import ConfigError

    with pytest.raises(ConfigError, match="tracking.uri=.* does not exist"):  # judged with the config, before torch
        run(compose(*tiny_overrides(tiny_mnist, tmp_path / "no" / "such" / "mlflow.db")))


@pytest.mark.parametrize("loss_yaml", sorted(p.stem for p in (conf_dir() / "loss").glob("*.yaml")))
def test_every_loss_config_trains_through_the_real_module(loss_yaml: str):
    """Compose each conf/loss/*.yaml with the real config and take optimizer steps through Lightning."""
    import torch
    from hydra.utils import instantiate

    from lossbench.data import Batches
    from lossbench.losses import build_loss
    from lossbench.module import LossbenchModule
    from lossbench.phases import build_net  # the seam that gives loss.outputs=1 its one-output head

    two_class = ("data.classes=[0,1]", "data.num_classes=2") if loss_yaml == "bce_single" else ()
    cfg = compose(f"loss={loss_yaml}", "optimizer=sgd", "optimizer.lr=0.05", *two_class)
    classes = cfg.data.num_classes
    torch.manual_seed(0)
    x = torch.randn(64, 1, 28, 28)
    y = torch.arange(64) % classes
    x[torch.arange(64), 0, y * 2, :] += 3.0  # a learnable signal
    module = LossbenchModule(build_net(cfg), build_loss(cfg.loss, classes), instantiate(without_name(cfg.optimizer)))
    before = [p.detach().clone() for p in module.parameters()]
    trainer = bare_trainer(max_epochs=3, limit_val_batches=1)
    loader = Batches(x, y, 16)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=[loader])
    assert len(module.history) == 3
    assert all(math.isfinite(r["train/loss"]) for r in module.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters())), "no parameter moved"


def _curves(store: Path, run) -> dict[str, list[float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    keys = ["train/loss", "train/acc", "val/nll", "val/acc", "train_eval/nll", "lr"]
    return {
        k: [m.value for m in sorted(client.get_metric_history(run.info.run_id, k), key=lambda m: m.step)] for k in keys
    }


def test_chunked_steps_train_exactly_like_one_batch_per_step(tiny_mnist: Path, tmp_path: Path):
    """data.batches_per_step only amortises Lightning's overhead: same batches, same order, same numbers."""
    results = {}
    for per_step in (1, 3, 16):
        store = tmp_path / f"s{per_step}" / "mlflow.db"
        store.parent.mkdir()
        run(
            compose(
                *tiny_overrides(
                    tiny_mnist, store, "model=mlp", f"data.batches_per_step={per_step}", "data.batch_size=32"
                )
            )
        )
        results[per_step] = _curves(store, read_runs(store)[1][0])
    # The running train/loss is summed per chunk, then per epoch: float32 rounding differs in the 7th digit.
    running = {k: results[k].pop("train/loss") for k in results}
    assert results[1] == results[3] == results[16], "weights and every evaluation must be bit-identical"
    assert running[3] == pytest.approx(running[1], rel=1e-6) and running[16] == pytest.approx(running[1], rel=1e-6)


@pytest.mark.parametrize(
    "scheduler, expected_lr",
    [
        (["scheduler=none"], [1e-3, 1e-3, 1e-3]),
        (["scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5"], [1e-3, 5e-4, 2.5e-4]),
        (
            ["scheduler=cosine"],
            [1e-3, 1e-3 * (1 + math.cos(math.pi / 3)) / 2, 1e-3 * (1 + math.cos(2 * math.pi / 3)) / 2],
        ),
    ],
)
def test_schedulers_step_once_per_epoch(
    tiny_mnist: Path, tmp_path: Path, scheduler: list[str], expected_lr: list[float]
):
    store = tmp_path / "mlflow.db"
    run(compose(*tiny_overrides(tiny_mnist, store, "trainer.max_epochs=3", *scheduler)))
    (recorded,) = read_runs(store)[1]
    assert _curves(store, recorded)["lr"] == pytest.approx(expected_lr)
    assert recorded.data.tags["scheduler"] == scheduler[0].removeprefix("scheduler=")


def test_plateau_scheduler_cuts_the_rate_when_val_nll_stalls(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    # patience 0 and a tiny threshold: any epoch that does not improve val/nll by 50% cuts the rate.
    run(
        compose(
            *tiny_overrides(
                tiny_mnist,
                store,
                "trainer.max_epochs=4",
                "scheduler=plateau",
                "scheduler.patience=0",
                "+scheduler.threshold=0.5",
                "scheduler.factor=0.1",
            )
        )
    )
    curves = _curves(store, read_runs(store)[1][0])
    nll, lr = curves["val/nll"], curves["lr"]
    for epoch in range(1, 4):  # the rate an epoch trains with follows the previous epochs' val/nll
        improved = nll[epoch - 1] < min(nll[: epoch - 1], default=math.inf) * 0.5
        assert lr[epoch] == pytest.approx(lr[epoch - 1] if improved else lr[epoch - 1] * 0.1)


def test_gradient_clipping_runs_under_manual_optimization(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    run(
        compose(
            *tiny_overrides(
                tiny_mnist,
                store,
                "trainer.gradient_clip_val=0.01",
                "optimizer=sgd",
                "optimizer.momentum=0.0",
                "optimizer.lr=1.0",
            )
        )
    )
    unclipped = tmp_path / "u" / "mlflow.db"
    unclipped.parent.mkdir()
    run(compose(*tiny_overrides(tiny_mnist, unclipped, "optimizer=sgd", "optimizer.momentum=0.0", "optimizer.lr=1.0")))
    clipped_loss = _curves(store, read_runs(store)[1][0])["train/loss"]
    free_loss = _curves(unclipped, read_runs(unclipped)[1][0])["train/loss"]
    assert clipped_loss != free_loss and all(math.isfinite(v) for v in clipped_loss)


def test_early_stopping_ends_the_run_and_tests_the_best_checkpoint(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    # min_delta larger than any possible improvement: no epoch after the first counts as better.
    run(
        compose(
            *tiny_overrides(
                tiny_mnist,
                store,
                "trainer.max_epochs=10",
                "early_stopping.enabled=true",
                "early_stopping.patience=2",
                "early_stopping.min_delta=100",
            )
        )
    )
    client, [r] = read_runs(store)
    assert r.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "val/nll")) == [1, 2, 3]
    best = min(client.get_metric_history(r.info.run_id, "val/nll"), key=lambda m: m.value)
    assert r.data.metrics["summary/best_val_nll"] == float(f"{best.value:.6g}"), "final figures at 6 significant digits"


def test_memorisation_accuracies_add_up_to_train_eval_accuracy_under_label_noise(tiny_mnist: Path, tmp_path: Path):
    """Flipped and clean samples partition train_eval: acc·N = clean_acc·N_clean + memorised·N_flipped, every epoch."""
    from hydra.utils import instantiate

    store = tmp_path / "mlflow.db"
    overrides = tiny_overrides(tiny_mnist, store, "model=mlp", "trainer.max_epochs=3", "data.label_noise.rate=0.4")
    cfg = compose(*overrides)
    data = instantiate(cfg.data, shuffle_seed=cfg.seed)
    splits = data.load()
    noisy, true = splits.train_y[splits.train_eval_idx], data.train_eval_true_labels
    n_flipped = int((noisy != true).sum())
    assert 0 < n_flipped < len(true), "the subset holds flipped and clean samples"
    run(cfg)
    client, runs = read_runs(store)
    rid = runs[0].info.run_id
    history = {
        k: [m.value for m in sorted(client.get_metric_history(rid, k), key=lambda m: m.step)]
        for k in ("train_eval/acc", "train_eval/memorised", "train_eval/flipped_true_acc", "train_eval/clean_acc")
    }
    assert all(len(v) == 3 for v in history.values())
    n = len(true)
    for e in range(3):
        assert history["train_eval/acc"][e] * n == pytest.approx(
            history["train_eval/clean_acc"][e] * (n - n_flipped) + history["train_eval/memorised"][e] * n_flipped,
            abs=1e-3,
        )
        # A flipped sample cannot be predicted as both its noisy and its true label.
        assert history["train_eval/memorised"][e] + history["train_eval/flipped_true_acc"][e] <= 1 + 1e-6


def test_without_label_noise_there_is_no_flipped_subset(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    run(compose(*tiny_overrides(tiny_mnist, store, "data.label_noise.rate=0.0")))
    client, runs = read_runs(store)
    assert runs[0].info.status == "FINISHED"
    assert not {"train_eval/memorised", "train_eval/clean_acc"} & set(runs[0].data.metrics)


def test_last_checkpoint_follows_every_epoch_even_when_the_monitor_does_not_improve(tiny_mnist: Path, tmp_path: Path):
    """Lightning's save_last writes last.ckpt only when the monitored best improves; resume needs every epoch."""
    import torch

    store = tmp_path / "mlflow.db"
    run(
        compose(*tiny_overrides(tiny_mnist, store, "trainer.max_epochs=3", "optimizer.lr=1e-12"))
    )  # val/acc never moves
    client, runs = read_runs(store)
    folder = tmp_path / "checkpoints" / runs[0].info.run_id
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    best = torch.load(folder / "best.ckpt", map_location="cpu", weights_only=True)
    # Lightning's own counters (and the history kept in checkpoints) are 0-based indices; people read epoch numbers.
    assert last["epoch"] == 2 and [r["epoch"] for r in last["lossbench_history"]] == [0, 1, 2]
    assert best["epoch"] == 0, "ties go to the earlier epoch"
    assert runs[0].data.metrics["summary/selected_epoch"] == 1, "the first epoch is epoch 1"


@pytest.mark.slow
def test_runs_outside_hydra_get_one_folder_each_and_leave_no_temporary_folder(tiny_mnist: Path, tmp_path: Path):
    """A process that runs twice outside Hydra (a notebook, a test): each run's figures and resolved config in one
    folder of its own, and no ``lossbench-*`` folder left in the temporary directory once the process has exited."""
    import json
    import subprocess
    import sys

    from conftest import ENV

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    store = tmp_path / "mlflow.db"
    script = f"""
import json, os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import compose, tiny_overrides
from pathlib import Path
from lossbench import job
from lossbench.train import run
folders = []
for seed in (0, 1):
    run(compose(*tiny_overrides(Path({str(tiny_mnist)!r}), Path({str(store)!r}), "analysis.figures=true", f"seed={{seed}}")))
    folder = Path(job.output_dir())
    folders.append([str(folder), sorted(p.name for p in folder.iterdir())])
print(json.dumps(folders))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], env={**ENV, "TMPDIR": str(scratch)}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (first, first_files), (second, second_files) = json.loads(done.stdout.strip().splitlines()[-1])
    assert first != second
    for files in (first_files, second_files):
        assert {"config.resolved.yaml", "learning_curves.png", "confusion_matrix.png"} <= set(files), files
    assert [p.name for p in scratch.iterdir() if p.name.startswith("lossbench-")] == []
