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


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_weight_decay_is_the_l2_penalty_of_a_hinge_linear_model(name: str):
    """optimizer.weight_decay=λ on loss=hinge model=linear is the SVM's regulariser: the optimizer built from the
    config takes the same steps as one without weight decay on hinge + λ/2 ||θ||² (every parameter: weights and
    bias), so it minimises that objective (λ = 1 / (C N) for the SVM's C with a mean-reduced hinge)."""
    from hydra.utils import instantiate

    from lossbench.config import without_name
    from lossbench.losses import build_loss
    from lossbench.models import Linear

    lam = 0.05
    cfg = compose("loss=hinge", "model=linear", f"optimizer={name}", f"optimizer.weight_decay={lam}")
    loss = build_loss(cfg.loss, 10)
    torch.manual_seed(0)
    decayed, penalised = Linear((1, 28, 28)), Linear((1, 28, 28))
    penalised.load_state_dict(decayed.state_dict())
    with_decay = instantiate(without_name(cfg.optimizer))(decayed.parameters())
    plain = instantiate(without_name(cfg.optimizer), weight_decay=0.0)(penalised.parameters())
    for _ in range(5):
        x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
        with_decay.zero_grad()
        loss(decayed(x), y).backward()
        with_decay.step()
        plain.zero_grad()
        l2 = sum((p**2).sum() for p in penalised.parameters())
        (loss(penalised(x), y) + lam / 2 * l2).backward()
        plain.step()
    for a, b in zip(decayed.parameters(), penalised.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
