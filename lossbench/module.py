"""The LightningModule: forward, loss, metrics; nothing else.

One Lightning training step carries a *chunk* of mini-batches (``data.batches_per_step``), each
with its own optimizer step (manual optimization). The model sees exactly the mini-batches, order
and optimizer steps it would see one per Lightning step; Lightning's own per-step cost (~1-2 ms of
hooks here, more than a small model's arithmetic) is paid once per chunk instead.

The hot loop stays free of host syncs: the running train loss and accuracy are summed on the
device and read once per epoch. Evaluation passes keep their logits and compute every yardstick at
epoch end. Two measurements only the claims need are paid only where asked: with ``confident_wrong`` (the config's
``analysis.confident_wrong``) each evaluation also measures how the run's own loss treats the predictions it gets
wrong (one backward pass through the loss on the kept logits); with ``margins`` (``analysis.margins``) the test
pass also takes each image's distance to the nearest decision boundary (input gradients, one backward pass per
class per batch), on the test set and on the train_eval rows. ``history`` holds one record per epoch and travels
inside checkpoints, so a resumed run knows its past curves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from lossbench.analysis import overfit_now
from lossbench.errors import LossbenchError
from lossbench.metrics import (
    calibration,
    confidence,
    confusion_matrix,
    input_margins,
    margins,
    memorisation,
    yardsticks,
)
from lossbench.names import (
    EPOCH_TIME,
    EVAL_PREFIXES,
    LR,
    PLATEAU_MONITOR,
    TEST_PREFIX,
    TRAIN_ACC,
    TRAIN_EVAL_PREFIX,
    TRAIN_LOSS,
    VAL_NLL,
    epoch_number,
)


class DivergenceError(LossbenchError):
    """The training loss became NaN or infinite."""

    exit_code = 1

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(f"diverged: non-finite loss ({value}) at epoch {epoch} step {step}")


class LossbenchModule(pl.LightningModule):
    SCORE, SCORE_DTYPE = TRAIN_ACC, torch.long
    """The running training score this module records each epoch, and the dtype it is summed in on the device
    (:meth:`_score`): accuracy, from hits counted as integers; lossbench.regression's module scores errors."""

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        num_classes: int = 10,
        gradient_clip_val: float | None = None,
        train_eval_true: Tensor | None = None,
        confident_wrong: bool = False,
        margins: bool = False,
        probabilities: str = "softmax",
    ):
        super().__init__()
        self.automatic_optimization = False  # several optimizer steps per Lightning step: see the module docstring
        self.gradient_clip_val = gradient_clip_val
        self.net, self.loss = net, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.num_classes = num_classes
        self.train_eval_true = train_eval_true  # clean labels of the train_eval rows when training labels are noisy
        self.confident_wrong, self.margins = confident_wrong, margins  # the claims' measurements: analysis.*
        self.probabilities = probabilities  # the distribution the loss trains (loss.probabilities): test/own_*
        self.history: list[dict[str, float]] = []
        self.test_confusion: Tensor | None = None
        self._eval_outputs: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self._input_margins: list[Tensor] = []  # the test pass's first-order distances to the decision boundary
        self._epoch_eval: dict[str, float] = {}
        self._direct_steps = False  # decided when training starts: see direct_steps()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}

    # ------------------------------------------------------------------ training

    def on_train_start(self) -> None:
        self._direct_steps = direct_steps(self.trainer)

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._epoch_lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self._loss_sum = torch.zeros((), device=self.device)
        self._correct = torch.zeros((), device=self.device, dtype=self.SCORE_DTYPE)
        self._seen = 0

    def training_step(self, batch: list[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor], batch_idx: int) -> None:
        optimizer = self.optimizers()
        chunk = [batch] if torch.is_tensor(batch[0]) else batch  # one (x, y) pair, or a chunk of them
        first_step = self.global_step
        losses = torch.empty(len(chunk), device=self.device)  # per mini-batch: written on the device, no sync
        hits = torch.empty(len(chunk), device=self.device, dtype=self.SCORE_DTYPE)
        for i, (x, y) in enumerate(chunk):
            logits = self.net(x)
            loss = self.loss(logits, y)
            losses[i] = loss.detach()
            hits[i] = self._score(logits, y)
            if self._direct_steps:  # the same arithmetic as Lightning's path below, without its per-step hook dispatch
                optimizer.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            else:
                optimizer.zero_grad(set_to_none=True)
                self.manual_backward(loss)
            if self.gradient_clip_val:
                self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
            if self._direct_steps:
                optimizer._on_before_step()  # the manual loop's step counter (trainer.global_step), as optimizer.step() counts
                optimizer.optimizer.step()
                optimizer._on_after_step()
            else:
                optimizer.step()
        sizes = [len(y) for _, y in chunk]
        self._loss_sum += (losses * torch.tensor(sizes, dtype=losses.dtype).to(self.device, non_blocking=True)).sum()
        self._correct += hits.sum()
        self._seen += sum(sizes)
        self._raise_if_diverged(losses, first_step)

    def _score(self, logits: Tensor, y: Tensor) -> Tensor:
        """One mini-batch's contribution to the epoch's running :data:`SCORE`, summed over its images: the hits."""
        return (logits.argmax(dim=1) == y).sum()

    def _raise_if_diverged(self, losses: Tensor, first_step: int) -> None:
        """One host read per chunk (``data.batches_per_step`` mini-batches): stop at the first non-finite loss."""
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            raise DivergenceError(epoch_number(self.current_epoch), first_step + bad, float(losses[bad]))

    def on_train_epoch_end(self) -> None:
        self._step_scheduler()
        train = torch.stack([self._loss_sum / self._seen, self._correct.float() / self._seen]).tolist()
        record = {"epoch": self.current_epoch, TRAIN_LOSS: train[0], self.SCORE: train[1]}  # epoch: Lightning's index
        record.update(self._epoch_eval)
        record[LR] = self._epoch_lr
        record[EPOCH_TIME] = time.perf_counter() - self._epoch_start
        self.history.append(record)
        history = curves(self.history)
        if history.get(VAL_NLL):  # none without validation NLL (a regression run)
            record.update(overfit_now(history))  # on one scale for every loss
        self.log_dict({TRAIN_LOSS: train[0], self.SCORE: train[1]})

    def _step_scheduler(self) -> None:
        """Manual optimization steps schedulers itself: once per epoch, plateau ones on the validation yardstick."""
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(self._epoch_eval[PLATEAU_MONITOR])
        else:
            scheduler.step()

    # ------------------------------------------------------------------ evaluation

    def _collect(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> None:
        x, y = batch
        self._eval_outputs.setdefault(dataloader_idx, []).append((self.net(x).float(), y))

    def _results(self, dataloader_idx: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        logits = torch.cat([o[0] for o in self._eval_outputs[dataloader_idx]])
        target = torch.cat([o[1] for o in self._eval_outputs[dataloader_idx]])
        results = {"loss": self.loss(logits, target), **yardsticks(logits, target)}
        if self.confident_wrong:
            results.update(confidence(logits, target, self.loss))
        return logits, target, results

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs = {}

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        names, values = [], []
        for idx in sorted(self._eval_outputs):
            logits, target, results = self._results(idx)
            if EVAL_PREFIXES[idx] == TRAIN_EVAL_PREFIX and self.train_eval_true is not None:
                results.update(memorisation(logits, target, self.train_eval_true.to(target.device)))
            for key, value in results.items():
                names.append(f"{EVAL_PREFIXES[idx]}/{key}")
                values.append(value)
        self._epoch_eval = dict(zip(names, torch.stack(values).tolist()))
        self._eval_outputs = {}
        if not self.trainer.sanity_checking:
            self.log_dict(self._epoch_eval, add_dataloader_idx=False)

    def on_test_epoch_start(self) -> None:
        self._eval_outputs, self._input_margins = {}, []

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        if not self.margins:
            return self._collect(batch, 0)
        x, y = batch
        logits, distances = input_margins(self.net, x, y)  # the logits, and each image's distance to the boundary
        self._eval_outputs.setdefault(0, []).append((logits, y))
        self._input_margins.append(distances)

    def on_test_epoch_end(self) -> None:
        logits, target, results = self._results(0)
        results.update(calibration(logits, target, self.probabilities, self._logits_of(self._eval_loader(0))))
        logged = {}
        if self.margins:  # the tested weights' margins on the data they were trained on too (the SVM's margin)
            results.update(margins(logits, target, torch.cat(self._input_margins)))
            logged = {f"{TRAIN_EVAL_PREFIX}/{k}": v for k, v in self._margins_of(self._eval_loader(1)).items()}
        self.test_confusion = confusion_matrix(logits, target, self.num_classes).cpu()  # of the weights just tested
        self._eval_outputs, self._input_margins = {}, []
        logged.update({f"{TEST_PREFIX}{k}": v for k, v in results.items()})
        self.log_dict(logged)  # what trainer.test() returns

    def _eval_loader(self, idx: int) -> Iterable[tuple[Tensor, Tensor]] | None:
        """The data module's evaluation batches ``idx`` (0: validation, 1: train_eval, with their training labels);
        None when the module is tested without a data module or the data has no such split."""
        data = self.trainer.datamodule
        loaders = data.val_dataloader() if data is not None else []
        return loaders[idx] if len(loaders) > idx else None

    def _logits_of(self, batches: Iterable[tuple[Tensor, Tensor]] | None) -> tuple[Tensor, Tensor] | None:
        """The current weights' logits on ``batches`` and their targets (None for None): the validation logits that
        temperature scaling is fitted on, of the very weights under test."""
        if batches is None:
            return None
        outputs = [(self.net(x).float(), y) for x, y in batches]
        return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])

    def _margins_of(self, batches: Iterable[tuple[Tensor, Tensor]] | None) -> dict[str, Tensor]:
        """:func:`lossbench.metrics.margins` of the current weights on ``batches`` ({} for None)."""
        if batches is None:
            return {}
        outputs = [input_margins(self.net, x, y) + (y,) for x, y in batches]
        logits, distances, target = (torch.cat(parts) for parts in zip(*outputs))
        return margins(logits, target, distances)

    # ------------------------------------------------------------------ checkpoints carry the curves

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lossbench_history"] = [dict(r) for r in self.history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.trainer.state.fn == "fit":  # resuming; testing a checkpoint must not rewind the curves
            self.history = [dict(r) for r in checkpoint.get("lossbench_history", [])]


# The hooks Lightning calls around every manual backward and optimizer step (precision plugin and LightningOptimizer).
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def direct_steps(trainer: pl.Trainer) -> bool:
    """True when Lightning's manual_backward/optimizer.step wrappers would only dispatch hooks nobody overrides.

    With 32-bit precision on one device, ``manual_backward`` is ``loss.backward()`` and
    ``LightningOptimizer.step`` is ``optimizer.step()``, each wrapped in three rounds of callback and
    module hooks (:data:`STEP_HOOKS`): ~0.1 ms per step, a tenth of a linear model's epoch on a CPU. When
    no callback and not the module override one of them, lossbench calls torch directly (still counting
    the step in ``trainer.global_step``); mixed precision, other strategies or a hook that is overridden
    keep Lightning's path.
    """
    if type(trainer.precision_plugin) is not Precision or type(trainer.strategy) is not SingleDeviceStrategy:
        return False
    hooked = [(cb, pl.Callback) for cb in trainer.callbacks] + [(trainer.lightning_module, pl.LightningModule)]
    return not any(is_overridden(hook, obj, parent) for obj, parent in hooked for hook in STEP_HOOKS)


def curves(history: list[dict[str, float]]) -> dict[str, list[float]]:
    """Per-epoch records -> metric name -> per-epoch values (NaN where an epoch lacks a metric)."""
    keys = sorted({k for record in history for k in record if k != "epoch"})
    return {k: [record.get(k, math.nan) for record in history] for k in keys}
