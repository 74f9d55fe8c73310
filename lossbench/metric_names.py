"""The names of the per-epoch metrics a run records: one list, importable without torch.

``lossbench.module`` records exactly :data:`EPOCH_METRICS` each epoch (tests/test_input.py checks
it on a real fit); ``lossbench.config`` accepts only :data:`MONITORABLE` as ``checkpoint.monitor``
and ``early_stopping.monitor``, so a typo answers before anything heavy is imported.
"""

from __future__ import annotations

YARDSTICKS = ("acc", "nll", "ece")  # what lossbench.metrics.yardsticks computes on every evaluation pass
EVAL_PREFIXES = ("val", "train_eval")  # validation dataloader 0 and 1 (a fixed training subset in eval mode)
EVAL_METRICS = ("loss", *YARDSTICKS)  # per evaluation pass: the run's own loss, then the yardsticks
TRAIN_METRICS = ("train/loss", "train/acc")  # running means over the epoch's training steps
OTHER_METRICS = ("lr", "time/epoch_s")

# The direction each evaluation metric improves in. Lightning's checkpoint and early-stopping callbacks
# read the metrics when validation ends, before the epoch's train/* exist (they would judge each epoch
# by the previous epoch's training numbers), so only these can be monitored.
MONITORABLE: dict[str, str] = {
    f"{prefix}/{name}": "max" if name == "acc" else "min" for prefix in EVAL_PREFIXES for name in EVAL_METRICS
}

EPOCH_METRICS: tuple[str, ...] = (*TRAIN_METRICS, *MONITORABLE, *OTHER_METRICS)

MEMORISATION = ("memorised", "flipped_true_acc", "clean_acc")  # lossbench.metrics.memorisation, on train_eval
NOISE_METRICS: tuple[str, ...] = tuple(f"train_eval/{name}" for name in MEMORISATION)
"""Recorded as well, each epoch, when the training labels are noisy (``data.label_noise.rate > 0``)."""
