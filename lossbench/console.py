"""What a person watching a run sees: one line per epoch, and a progress bar in mini-batches.

Both are Lightning callbacks. :class:`EpochLine` writes to the ``lossbench`` logger, so the lines
reach the terminal and the job's log file alike; :class:`MiniBatchProgressBar` counts the
mini-batches of an epoch, though one Lightning step carries ``data.batches_per_step`` of them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from tqdm import tqdm

from lossbench.names import EPOCH_TIME, TRAIN_LOSS, VAL_ACC, VAL_LOSS, VAL_MAE_DEG, VAL_NLL, VAL_RMSE_DEG, epoch_number

log = logging.getLogger("lossbench")
COLUMNS = (TRAIN_LOSS, VAL_LOSS, VAL_ACC, VAL_NLL)
REGRESSION_COLUMNS = (TRAIN_LOSS, VAL_LOSS, VAL_RMSE_DEG, VAL_MAE_DEG)  # a regression run's (lossbench.regression)


def epoch_line(record: dict[str, float], max_epochs: int | None = None) -> str:
    """``epoch 3/10  train/loss 0.2841  val/loss 0.3012  val/acc 0.9120  val/nll 0.3012  1.9 s``."""
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    cells = [f"epoch {epoch_number(record['epoch'])}{total}"]
    for key in REGRESSION_COLUMNS if VAL_RMSE_DEG in record else COLUMNS:
        value = record.get(key, math.nan)
        cells.append(f"{key} {value:.4f}")
    cells.append(f"{record.get(EPOCH_TIME, math.nan):.1f} s")
    return "  ".join(cells)


class EpochLine(pl.Callback):
    """Logs one line per finished epoch, read from the module's ``history``.

    The module appends an epoch's record in its own ``on_train_epoch_end``, which Lightning calls
    after the callbacks' one; so each line is written as the next epoch starts, and the last one
    when training ends (a few milliseconds later). A resumed run does not repeat its past epochs.
    """

    def __init__(self) -> None:
        self.shown = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.shown = len(pl_module.history)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._show(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._show(trainer, pl_module)

    def _show(self, trainer: pl.Trainer, pl_module: Any) -> None:
        for record in pl_module.history[self.shown :]:
            with tqdm.external_write_mode():  # a live progress bar is cleared, then redrawn below the line
                log.info(epoch_line(record, trainer.max_epochs))
        self.shown = len(pl_module.history)


class MiniBatchProgressBar(TQDMProgressBar):
    """Lightning's bar, counting mini-batches: ``batches_per_epoch`` in all, ``per_step`` per Lightning step."""

    def __init__(self, batches_per_epoch: int, per_step: int) -> None:
        super().__init__()
        self.batches_per_epoch, self.per_step = batches_per_epoch, per_step

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        """Lightning's own bar, but in mini-batches and with the epoch as lossbench numbers it (Lightning writes its
        0-based index: "Epoch 3" during epoch 4)."""
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        bar.unit = "batch"
        bar.set_description(f"epoch {epoch_number(trainer.current_epoch)}/{trainer.max_epochs}", refresh=False)
        bar.reset(total=self.batches_per_epoch)
        bar.initial = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.n = min((batch_idx + 1) * self.per_step, self.batches_per_epoch)
            bar.refresh()
