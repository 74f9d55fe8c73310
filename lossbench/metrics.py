"""Yardsticks every loss shares: accuracy, NLL of the softmax, expected calibration error.

A run's own loss says little across losses (an MSE of 0.01 and a cross-entropy of 0.3 are not
comparable); these are, so overfitting is judged on them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import multiclass_calibration_error

from lossbench.names import MEMORISATION

ECE_BINS = 15


def yardsticks(logits: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Accuracy, NLL (cross-entropy of the softmax) and ECE (15 equal-width confidence bins, L1)."""
    logits = logits.float()
    return {
        "acc": (logits.argmax(dim=1) == target).float().mean(),
        "nll": F.cross_entropy(logits, target),
        "ece": multiclass_calibration_error(
            logits.softmax(dim=1), target, num_classes=logits.shape[1], n_bins=ECE_BINS, norm="l1"
        ),
    }


def confusion_matrix(logits: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Counts ``(C, C)``: rows are true classes, columns predicted classes."""
    pred = logits.argmax(dim=1)
    return torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def memorisation(logits: Tensor, noisy: Tensor, true: Tensor) -> dict[str, Tensor]:
    """What a network trained on noisy labels does with them, on samples whose label was flipped or not.

    - ``memorised``: accuracy against the *noisy* label on flipped samples (the fraction memorised)
    - ``flipped_true_acc``: accuracy against the *true* label on the same flipped samples
    - ``clean_acc``: accuracy on samples whose label was not flipped

    A subset with no sample gives ``NaN``.
    """
    pred = logits.argmax(dim=1)
    flipped = noisy != true
    nan = torch.tensor(float("nan"), device=logits.device)

    def share(hits: Tensor, mask: Tensor) -> Tensor:
        return hits[mask].float().mean() if bool(mask.any()) else nan

    memorised, flipped_true_acc, clean_acc = MEMORISATION
    return {
        memorised: share(pred == noisy, flipped),
        flipped_true_acc: share(pred == true, flipped),
        clean_acc: share(pred == noisy, ~flipped),
    }
