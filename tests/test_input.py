"""Bad input answers in one line before a run exists; a failure that is not the input ends FAILED in one line.

Issue 18's table, each as the user meets it: ``python -m lossbench.train`` in a subprocess on tiny idx
data, its exit code, its ``lossbench: error:`` line, whether torch was imported before it answered
(``python -X importtime`` lists every module imported), and the tracking store afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ENV, bare_trainer, compose, read_runs, sweep, tiny_overrides, train_runs

from lossbench.config import validate
from lossbench.errors import ConfigError
from lossbench.names import CONFIDENCE_METRICS, EPOCH_METRICS, MONITORABLE, YARDSTICKS

HEAVY = {"torch", "torchvision", "pytorch_lightning", "lightning_fabric", "mlflow"}


class Answer:
    """What one ``python -X importtime -m lossbench.train ...`` printed, how it exited and how long it took."""

    def __init__(self, done: subprocess.CompletedProcess, seconds: float):
        self.code, self.stdout, self.seconds = done.returncode, done.stdout, seconds
        lines = done.stderr.splitlines()
        self.imported = {line.split("|")[-1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
        self.stderr = "\n".join(line for line in lines if not line.startswith("import time:"))
        self.errors = [line for line in self.stderr.splitlines() if line.startswith("lossbench: error:")]

    def __repr__(self) -> str:
        return f"exit {self.code} after {self.seconds:.1f} s\nstderr:\n{self.stderr[-3000:]}\nstdout:\n{self.stdout[-2000:]}"


def train(*overrides: str, cwd: Path, timeout: int = 240) -> Answer:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lossbench.train", *overrides],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Answer(done, time.monotonic() - started)


def assert_one_line(answer: Answer, expected: str, code: int = 2) -> None:
    assert answer.code == code, answer
    assert answer.errors == [f"lossbench: error: {expected}"], answer
    assert "Traceback" not in answer.stderr + answer.stdout, answer


# ----------------------------------------------------------------------------- judged from the config alone


@pytest.mark.parametrize(
    "override, expected",
    [
        ("seed=-1", "seed=-1 is invalid: expected an integer from 0 to 4294967295"),
        ("optimizer.lr=inf", "optimizer.lr=inf is invalid: expected a number > 0"),
        ("optimizer.lr=nan", "optimizer.lr=nan is invalid: expected a number > 0"),
        (
            "checkpoint.monitor=val/bogus",
            "checkpoint.monitor='val/bogus' is invalid: expected one of val/loss, val/acc, val/nll, "
            "val/ece, train_eval/loss, train_eval/acc, train_eval/nll, train_eval/ece",
        ),
        ("early_stopping.monitor=train/acc", "early_stopping.monitor='train/acc' is invalid: expected one of val/loss"),
    ],
)
def test_config_errors_answer_in_one_line_before_torch_is_imported(
    tiny_mnist: Path, tmp_path: Path, override: str, expected: str
):
    store = tmp_path / "mlflow.db"
    answer = train(*tiny_overrides(tiny_mnist, store), override, cwd=tmp_path)
    assert answer.code == 2, answer
    assert len(answer.errors) == 1 and answer.errors[0].startswith(f"lossbench: error: {expected}"), answer
    assert "Traceback" not in answer.stderr, answer
    assert not HEAVY & answer.imported, f"imported {HEAVY & answer.imported} before answering"
    assert "hydra" in answer.imported and "lossbench" in answer.imported, (
        "the import listing is not what this test reads"
    )
    assert not store.exists() and not (tmp_path / "checkpoints").exists()


# ----------------------------------------------------------------------------- judged on the data and the built model


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "model.net.in_shape=[1,10,10]",
            "model.net.in_shape=[1,10,10] does not fit the data: images are 1x28x28 (channels x height x width); "
            "set model.net.in_shape=[1,28,28] (or leave it at its default, ${data.shape})",
        ),
        ("data.num_classes=3", "data.num_classes=3 is too small: mnist's labels go up to 9; set data.num_classes=10"),
    ],
)
def test_data_and_model_errors_answer_in_one_line_before_a_run_exists(
    tiny_mnist: Path, tmp_path: Path, override: str, expected: str
):
    store = tmp_path / "mlflow.db"
    answer = train(*tiny_overrides(tiny_mnist, store), override, cwd=tmp_path)
    assert_one_line(answer, expected)
    assert not store.exists(), "the store is opened only after every input check"
    assert not (tmp_path / "checkpoints").exists() and "Epoch" not in answer.stdout + answer.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["+loss.criterion.reduction=none"],
            "loss=ce (loss.input=logits, loss.target=index) returns (64,), not one number per batch; "
            "set loss.criterion.reduction=mean",
        ),
        (
            ["loss=bce", "loss.target=index"],
            "loss=bce (loss.input=logits, loss.target=index) cannot score the model's output (64, 10) "
            "against class indices: ValueError: Target size (torch.Size([64])) must be the same as input size",
        ),
        (
            ["model=mlp", "model.net.num_classes=7"],
            "model=mlp: returns (64, 7) for a batch of 64 images, expected (64, 10)",
        ),
        (
            ["model=cnn", "model.net.in_shape=[1,32,32]"],
            "model.net.in_shape=[1,32,32] does not fit the data: images are 1x28x28 (channels x height x width); "
            "set model.net.in_shape=[1,28,28]",
        ),
        (
            ["model=cnn", "model.net.channels=[8]", "model.net.in_shape=[3,28,28]"],
            "model.net.in_shape=[3,28,28] does not fit the data: images are 1x28x28",
        ),
        (
            ["model=cnn", "model.net.channels=[4,4,4,4,4]"],
            "model=cnn: cannot take a batch of 1x28x28 images: RuntimeError: "
            "Given input size: (4x1x1). Calculated output size: (4x0x0). Output size is too small",
        ),
        (
            ["+trainer.foo=1"],
            "trainer: cannot start with trainer.accelerator=cpu trainer.devices=1 trainer.precision=32-true: "
            "TypeError: Trainer.__init__() got an unexpected keyword argument 'foo'",
        ),
    ],
)
def test_pieces_that_do_not_fit_each_other_fail_naming_the_key(
    tiny_mnist: Path, tmp_path: Path, overrides: list[str], message: str
):
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    with pytest.raises(ConfigError) as raised:
        run(compose(*tiny_overrides(tiny_mnist, store, *overrides)))
    assert str(raised.value).startswith(message), str(raised.value)
    assert not store.exists()


def test_the_first_batch_check_leaves_training_exactly_as_it_was(tiny_mnist: Path, tmp_path: Path):
    """Batch norm, dropout and a stateful loss would change in a training-mode pass: the check runs in eval mode, drops its gradients."""
    import torch
    from hydra.utils import instantiate

    from lossbench.losses import build_loss
    from lossbench.preflight import check_one_batch

    cfg = compose(
        "model=cnn4", "model.net.dropout=0.5", "loss.criterion._target_=faults.NaNAfter", "+loss.criterion.after=1"
    )
    torch.manual_seed(0)
    net, loss = instantiate(cfg.model.net), build_loss(cfg.loss, 10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    state = torch.get_rng_state()
    check_one_batch(
        net, loss, x, y, cfg, torch.device("cpu")
    )  # NaN from its first training call: the check must not make one
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "running statistics or weights moved"
    assert all(p.grad is None for p in net.parameters()) and net.training and loss.training
    assert loss.criterion.calls == 0, "the check counted as a training call of the loss"
    assert torch.equal(state, torch.get_rng_state()), "the check drew random numbers"


# ----------------------------------------------------------------------------- failures that are not the input


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs: smaller than one checkpoint of the linear model (its weights and Adam's state are ~95 KB)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the disk-full test mounts a small tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip()}): the disk-full test needs root and mount permission"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_while_checkpointing_fails_the_run_in_one_line_and_logs_the_traceback(
    tiny_mnist: Path, tmp_path: Path, full_disk: Path
):
    store = tmp_path / "mlflow.db"
    overrides = [o for o in tiny_overrides(tiny_mnist, store) if not o.startswith("tracking.checkpoint_dir=")]
    answer = train(*overrides, f"tracking.checkpoint_dir={full_disk}", cwd=tmp_path)
    assert answer.code == 1, answer
    assert len(answer.errors) == 1 and "Traceback" not in answer.stderr + answer.stdout, answer
    line = answer.errors[0]
    assert (
        line.startswith("lossbench: error: OSError: [Errno 28] No space left on device") and str(full_disk) in line
    ), line
    log = Path(line.split("(full traceback in ")[1].rstrip(")"))
    assert log.is_file() and log.is_relative_to(tmp_path / "outputs"), log
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "No space left on device" in text and "ckpt" in text

    _, runs = read_runs(store)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["lossbench.failure"].startswith("OSError: [Errno 28] No space left on device")


# ----------------------------------------------------------------------------- inside a sweep


@pytest.mark.slow
def test_data_errors_fail_their_sweep_job_alone_without_a_run(tiny_mnist: Path, tmp_path: Path):
    done = sweep(
        tmp_path,
        tiny_mnist,
        "model.net.in_shape=[1,28,28],[1,10,10]",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    _, trained = train_runs(tmp_path / "mlflow.db")
    assert [(r.data.params["model.net.in_shape"], r.data.tags["seed"], r.info.status) for r in trained] == [
        ("[1, 28, 28]", "0", "FINISHED")
    ]
    assert "1 finished, 1 failed" in done.stdout, done.stdout[-3000:]
    # The closing screen: one line per failed job, its overrides (the swept ones last), then the reason.
    screen = [
        line[line.index("model.net.in_shape=") :] for line in done.stdout.splitlines() if line.startswith("FAILED ")
    ]
    assert screen == [
        "model.net.in_shape=[1,10,10]: model.net.in_shape=[1,10,10] does not fit the data: images are 1x28x28 "
        "(channels x height x width); set model.net.in_shape=[1,28,28] (or leave it at its default, ${data.shape})"
    ], done.stdout[-3000:]


# ----------------------------------------------------------------------------- one list of metric names


def test_the_module_records_exactly_the_listed_metric_names_and_the_listed_ones_can_be_monitored():
    """names.py is what config.py checks monitors against: a real fit must record those names and no others."""
    import torch

    from lossbench.data import Batches
    from lossbench.metrics import yardsticks
    from lossbench.models import Linear
    from lossbench.module import LossbenchModule

    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28), torch.arange(64) % 10
    module = LossbenchModule(
        Linear((1, 28, 28)), torch.nn.CrossEntropyLoss(), lambda params: torch.optim.SGD(params, lr=0.1)
    )
    trainer = bare_trainer(max_epochs=1)
    trainer.fit(
        module, train_dataloaders=Batches(x, y, 16), val_dataloaders=[Batches(x, y, 32), Batches(x[:32], y[:32], 32)]
    )
    assert set(module.history[0]) - {"epoch"} == set(EPOCH_METRICS)
    assert set(MONITORABLE) <= set(trainer.callback_metrics), "a monitorable name Lightning's callbacks never see"
    asked = LossbenchModule(
        Linear((1, 28, 28)), torch.nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.1), confident_wrong=True
    )
    bare_trainer(max_epochs=1).fit(
        asked, train_dataloaders=Batches(x, y, 16), val_dataloaders=[Batches(x, y, 32), Batches(x[:32], y[:32], 32)]
    )
    assert set(asked.history[0]) - {"epoch"} == {*EPOCH_METRICS, *CONFIDENCE_METRICS}, "analysis.confident_wrong"
    assert set(yardsticks(torch.randn(4, 10), torch.arange(4))) == set(YARDSTICKS)
    # The direction: accuracy improves upwards, the losses and calibration error downwards.
    assert {k for k, better in MONITORABLE.items() if better == "max"} == {"val/acc", "train_eval/acc"}


@pytest.mark.parametrize(
    "overrides, problem",
    [
        (["checkpoint.monitor=val/acc", "checkpoint.mode=min"], "checkpoint.mode=min would keep the worst val/acc"),
        (
            ["early_stopping.monitor=val/nll", "early_stopping.mode=max"],
            "early_stopping.mode=max would keep the worst val/nll",
        ),
        (["optimizer=sgd", "optimizer.momentum=inf"], "optimizer.momentum=inf is invalid"),
        (["optimizer.betas=[0.9,nan]"], "optimizer.betas=[0.9, nan] is invalid"),
        (["scheduler=step", "scheduler.gamma=inf"], "scheduler.gamma=inf is invalid"),
        (["+model.net.scale=inf"], "model.net.scale=inf is invalid: expected a finite number"),
        (["early_stopping.min_delta=nan"], "early_stopping.min_delta=nan is invalid"),
        (["seed=4294967296"], "seed=4294967296 is invalid"),
        (["optimizer.lr=${nope}"], "optimizer.lr: Interpolation key 'nope' not found"),
    ],
)
def test_config_checks_name_the_key(overrides: list[str], problem: str):
    with pytest.raises(ConfigError) as raised:
        validate(compose(*overrides))
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["seed=0"],
        ["seed=4294967295"],
        ["checkpoint.monitor=val/acc", "checkpoint.mode=max"],
        ["checkpoint.monitor=train_eval/ece", "checkpoint.mode=min"],
        ["+loss.criterion.value=nan"],
    ],
)
def test_config_checks_accept_good_values(overrides: list[str]):
    validate(compose(*overrides))  # raises on a refusal; loss.criterion may take NaN on purpose (tests/faults.py)
