"""The Lightning callback that writes a run's epochs to the MLflow store (:mod:`lossbench.store`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from mlflow.entities import Metric

from lossbench.names import FIRST_EPOCH, FIRST_EPOCH_TAG
from lossbench.store import Tracker, deferred_interrupts


class EpochLogger(pl.Callback):
    """Writes each epoch's record to MLflow in one batch, once the checkpoint that holds it is on disk.

    Lightning writes ``last.ckpt`` at the end of each epoch, after the module appends the epoch to
    its history; this callback flushes the history at the start of the next epoch and at the end of
    training. After an exception it flushes only the epochs ``last.ckpt`` holds. So a resumed run
    re-sends exactly the epochs the store lacks: no epoch is missing or logged twice.

    The MLflow step of an epoch is its number (lossbench.names.FIRST_EPOCH: 1 for the first); a run recorded
    before epochs were numbered from 1 (no ``lossbench.first_epoch`` tag) keeps its step 0 when resumed.
    """

    def __init__(self, tracker: Tracker, run_id: str, checkpoint_dir: Path):
        self.tracker, self.run_id, self.last_checkpoint = tracker, run_id, Path(checkpoint_dir) / "last.ckpt"
        self.logged: set[int] = set()
        self.first_step = FIRST_EPOCH

    def on_fit_start(self, trainer, pl_module) -> None:
        tags = self.tracker.client.get_run(self.run_id).data.tags
        self.first_step = int(tags.get(FIRST_EPOCH_TAG, 0))
        self.logged = self.tracker.logged_epochs(self.run_id)
        self.flush(pl_module.history)  # a resumed checkpoint's epochs the store may lack

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.flush(pl_module.history)

    def on_train_end(self, trainer, pl_module) -> None:
        self.flush(pl_module.history)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.flush(pl_module.history[: self._epochs_on_disk()])

    def _epochs_on_disk(self) -> int:
        try:
            return len(
                torch.load(self.last_checkpoint, map_location="cpu", weights_only=True).get("lossbench_history", [])
            )
        except Exception:  # no checkpoint yet, or one cut off mid-write
            return 0

    def flush(self, records: list[dict[str, float]]) -> None:
        """Log the records whose epoch is not in the store yet, in batches of up to 1000 points."""
        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, r["epoch"] + self.first_step)
            for r in records
            if r["epoch"] + self.first_step not in self.logged
            for key, value in r.items()
            if key != "epoch"
        ]
        with deferred_interrupts():  # a held interrupt is raised only after `logged` says what landed
            for i in range(0, len(batch), 1000):
                self.tracker.client.log_batch(self.run_id, metrics=batch[i : i + 1000])
            self.logged.update(r["epoch"] + self.first_step for r in records)
