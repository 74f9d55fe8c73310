"""Fused optimizer kernels: on by default, switchable off, close to the default kernel, refused where absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose, read_runs, tiny_overrides

from lossbench.config import config_hash
from lossbench.errors import ConfigError
from lossbench.train import run

# Fused and foreach kernels round differently, so the runs drift apart a little: after 3 epochs on
# the 200 test images, the test accuracies may differ by at most 3 points (6 images).
ACCURACY_TOLERANCE = 0.03


class KernelSeen(pl.Callback):
    """Records the ``fused`` flag of the optimizer Lightning trains with."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.fused = trainer.optimizers[0].defaults.get("fused")


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_torch_has_a_fused_kernel_for_each_optimizer_that_asks_for_one(name: str):
    cfg = compose(f"optimizer={name}").optimizer
    assert cfg.fused is True
    optimizer = getattr(torch.optim, cfg._target_.rsplit(".", 1)[1])(
        [torch.nn.Parameter(torch.ones(3))], lr=0.1, fused=True
    )
    optimizer.param_groups[0]["params"][0].grad = torch.ones(3)
    optimizer.step()  # a CPU step through the fused kernel


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_fused_and_default_kernels_agree_on_accuracy(tiny_mnist: Path, tmp_path: Path, name: str):
    store = tmp_path / "mlflow.db"
    seen = {}
    for fused in (True, False):
        seen[fused] = KernelSeen()
        cfg = compose(
            *tiny_overrides(
                tiny_mnist,
                store,
                f"optimizer={name}",
                f"optimizer.fused={str(fused).lower()}",
                "model=mlp",
                "trainer.max_epochs=3",
                "tracking.skip_finished=false",
            )
        )
        run(cfg, extra_callbacks=[seen[fused]])
    assert seen[True].fused is True and not seen[False].fused
    _, runs = read_runs(store)
    acc = {r.data.params["optimizer.fused"]: r.data.metrics["test/acc"] for r in runs}
    assert set(acc) == {"True", "False"}
    assert acc["True"] > 0.5, "the fused run learned"
    assert abs(acc["True"] - acc["False"]) <= ACCURACY_TOLERANCE, acc
    assert len({r.data.tags["config_hash"] for r in runs}) == 1, "the kernel is how a run executes, not what it trains"


def test_fused_on_an_optimizer_without_a_fused_kernel_is_a_one_line_config_error(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    cfg = compose(*tiny_overrides(tiny_mnist, store, "optimizer=rmsprop", "+optimizer.fused=true"))
    with pytest.raises(ConfigError) as e:
        run(cfg)
    message = str(e.value)
    assert (
        "\n" not in message
        and "optimizer.fused" in message
        and "RMSprop" in message
        and "optimizer.fused=false" in message
    )
    assert read_runs(store)[1] == [], "nothing is recorded for a config that cannot train"


def test_rmsprop_trains_without_the_fused_key(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    cfg = compose(*tiny_overrides(tiny_mnist, store, "optimizer=rmsprop", "trainer.max_epochs=1"))
    assert "fused" not in cfg.optimizer
    run(cfg)
    (recorded,) = read_runs(store)[1]
    assert recorded.info.status == "FINISHED" and recorded.data.tags["config_hash"] == config_hash(cfg)
