"""python -m benchmarks.first_step OVERRIDES — ``python -m lossbench.train`` plus a first-step probe.

The same ``@hydra.main`` over lossbench's conf/ and the same ``lossbench.train.run``; the only
addition is a Lightning callback, passed through ``run(cfg, extra_callbacks=...)``, that writes
``time.time()`` to ``$BENCH_FIRST_STEP_FILE`` at the first training batch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl

from benchmarks.settings import FIRST_STEP_ENV
from lossbench.paths import conf_dir
from lossbench.train import run


class FirstStepMark(pl.Callback):
    """Writes ``time.time()`` to a file at the first training batch."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0 and batch_idx == 0:
            Path(self.path).write_text(repr(time.time()))


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg) -> float:
    return run(cfg, extra_callbacks=[FirstStepMark(os.environ[FIRST_STEP_ENV])])


if __name__ == "__main__":
    main()
