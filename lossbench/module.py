"""The LightningModule: forward, loss, metrics; nothing else.

The hot loop stays free of host syncs: the running train loss and accuracy are summed on the
device and read once per epoch. Evaluation passes keep their logits and compute every yardstick at
epoch end. ``history`` holds one record per epoch and travels inside checkpoints, so a resumed run
knows its past curves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lossbench.config import LossbenchError
from lossbench.metrics import confusion_matrix, yardsticks

EVAL_PREFIXES = ("val", "train_eval")  # validation dataloader 0 and 1


class DivergenceError(LossbenchError):
    """The training loss became NaN or infinite."""

    exit_code = 1

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(f"diverged: non-finite loss ({value}) at epoch {epoch} step {step}")


class LossbenchModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        scheduler_monitor: str = "val/nll",
        num_classes: int = 10,
        finite_check_every: int | None = None,
    ):
        super().__init__()
        self.net, self.loss = net, loss
        self.optimizer_factory, self.scheduler_factory, self.scheduler_monitor = optimizer, scheduler, scheduler_monitor
        self.num_classes = num_classes
        self.finite_check_every = finite_check_every
        self.history: list[dict[str, float]] = []
        self.test_prefix = "test"
        self.test_results: dict[str, dict[str, float]] = {}
        self.test_confusion: Tensor | None = None
        self._eval_outputs: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self._epoch_eval: dict[str, float] = {}

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch", "monitor": self.scheduler_monitor}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ------------------------------------------------------------------ training

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._epoch_lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        device = self.device
        self._loss_sum = torch.zeros((), device=device)
        self._correct = torch.zeros((), device=device, dtype=torch.long)
        self._seen = 0
        self._first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
        if self.finite_check_every is None:  # a CPU read is free; on a GPU each read is a sync
            self.finite_check_every = 1 if device.type == "cpu" else 50

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.net(x)
        loss = self.loss(logits, y)
        with torch.no_grad():
            self._loss_sum += loss.detach().float() * len(y)
            self._correct += (logits.argmax(dim=1) == y).sum()
            self._seen += len(y)
            self._first_bad_step.masked_fill_(~torch.isfinite(loss.detach()) & (self._first_bad_step < 0), self.global_step)
        if (batch_idx + 1) % self.finite_check_every == 0:
            self._raise_if_diverged()
        return loss

    def _raise_if_diverged(self) -> None:
        step = int(self._first_bad_step)
        if step >= 0:
            raise DivergenceError(self.current_epoch, step, float(self._loss_sum))

    def on_train_epoch_end(self) -> None:
        self._raise_if_diverged()
        train = torch.stack([self._loss_sum / self._seen, self._correct.float() / self._seen]).tolist()
        record = {"epoch": self.current_epoch, "train/loss": train[0], "train/acc": train[1]}
        record.update(self._epoch_eval)
        record["lr"] = self._epoch_lr
        record["time/epoch_s"] = time.perf_counter() - self._epoch_start
        self.history.append(record)
        self.log_dict({"train/loss": train[0], "train/acc": train[1]})

    # ------------------------------------------------------------------ evaluation

    def _collect(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> None:
        x, y = batch
        self._eval_outputs.setdefault(dataloader_idx, []).append((self.net(x).float(), y))

    def _results(self, dataloader_idx: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        logits = torch.cat([o[0] for o in self._eval_outputs[dataloader_idx]])
        target = torch.cat([o[1] for o in self._eval_outputs[dataloader_idx]])
        return logits, target, {"loss": self.loss(logits, target), **yardsticks(logits, target)}

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs = {}

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        names, values = [], []
        for idx in sorted(self._eval_outputs):
            for key, value in self._results(idx)[2].items():
                names.append(f"{EVAL_PREFIXES[idx]}/{key}")
                values.append(value)
        self._epoch_eval = dict(zip(names, torch.stack(values).tolist()))
        self._eval_outputs = {}
        if not self.trainer.sanity_checking:
            self.log_dict(self._epoch_eval, add_dataloader_idx=False)

    def on_test_epoch_start(self) -> None:
        self._eval_outputs = {}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._collect(batch, 0)

    def on_test_epoch_end(self) -> None:
        logits, target, results = self._results(0)
        values = torch.stack(list(results.values())).tolist()
        self.test_results[self.test_prefix] = {f"{self.test_prefix}/{k}": v for k, v in zip(results, values)}
        if self.test_prefix == "test":
            self.test_confusion = confusion_matrix(logits, target, self.num_classes).cpu()
        self._eval_outputs = {}
        self.log_dict(self.test_results[self.test_prefix])

    # ------------------------------------------------------------------ checkpoints carry the curves

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lossbench_history"] = [dict(r) for r in self.history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.trainer.state.fn == "fit":  # resuming; testing a checkpoint must not rewind the curves
            self.history = [dict(r) for r in checkpoint.get("lossbench_history", [])]


def curves(history: list[dict[str, float]]) -> dict[str, list[float]]:
    """Per-epoch records -> metric name -> per-epoch values (NaN where an epoch lacks a metric)."""
    keys = sorted({k for record in history for k in record if k != "epoch"})
    return {k: [record.get(k, math.nan) for record in history] for k in keys}
