"""Direct optimizer steps (lossbench.module.direct_steps): the same training as Lightning's wrapped steps.

lossbench skips Lightning's per-step hook dispatch when nobody overrides those hooks. These tests train
the same config both ways and compare every recorded number bit for bit, and the step counter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from conftest import compose, read_runs, tiny_overrides

from lossbench.train import run


class PathSeen(pl.Callback):
    """Records which step path the module took and how many optimizer steps Lightning counted."""

    def on_train_end(self, trainer, pl_module) -> None:
        self.direct, self.global_step = pl_module._direct_steps, trainer.global_step


class BackwardCounter(PathSeen):
    """Overrides a per-step hook, so Lightning's wrapped path must run (and call it once per step)."""

    calls = 0

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.calls += 1


def _curves(store: Path) -> dict[str, list[float]]:
    client, (r,) = read_runs(store)
    keys = sorted(k for k in r.data.metrics if not k.startswith("time/"))
    return {
        k: [m.value for m in sorted(client.get_metric_history(r.info.run_id, k), key=lambda m: m.step)] for k in keys
    }


def test_direct_and_wrapped_steps_train_identically(tiny_mnist: Path, tmp_path: Path):
    extra = ("model=mlp", "data.batch_size=32", "data.batches_per_step=4", "trainer.max_epochs=2")
    seen, counted = PathSeen(), BackwardCounter()
    for name, callback in (("direct", seen), ("wrapped", counted)):
        (tmp_path / name).mkdir()
        run(compose(*tiny_overrides(tiny_mnist, tmp_path / name / "mlflow.db", *extra)), extra_callbacks=[callback])

    assert seen.direct is True and counted.direct is False
    steps_per_epoch = -(-500 // 32)  # tiny_mnist: 600 training images, 100 of them carved out for validation
    assert seen.global_step == counted.global_step == 2 * steps_per_epoch
    assert counted.calls == 2 * steps_per_epoch  # the wrapped path ran every step through Lightning's hooks
    direct, wrapped = _curves(tmp_path / "direct" / "mlflow.db"), _curves(tmp_path / "wrapped" / "mlflow.db")
    assert direct.keys() == wrapped.keys() and "val/nll" in direct
    for key in direct:  # exactly: the same arithmetic in the same order (NaN where a metric is undefined, in both)
        assert np.array_equal(direct[key], wrapped[key], equal_nan=True), key


def test_direct_steps_only_where_lightning_adds_nothing(tiny_mnist: Path, tmp_path: Path):
    from lossbench.module import direct_steps

    def trainer(**kwargs) -> pl.Trainer:
        t = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False, **kwargs)
        t.strategy.connect(torch.nn.Linear(1, 1))  # direct_steps reads trainer.lightning_module
        return t

    class Module(pl.LightningModule):
        pass

    class HookedModule(pl.LightningModule):
        def on_after_backward(self) -> None:
            pass

    plain = trainer()
    plain.strategy.connect(Module())
    assert direct_steps(plain) is True
    hooked = trainer()
    hooked.strategy.connect(HookedModule())
    assert direct_steps(hooked) is False
    with_callback = trainer(callbacks=[BackwardCounter()])
    with_callback.strategy.connect(Module())
    assert direct_steps(with_callback) is False
    mixed = trainer(precision="bf16-mixed")
    mixed.strategy.connect(Module())
    assert direct_steps(mixed) is False
