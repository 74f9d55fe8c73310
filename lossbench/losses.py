"""Every loss lossbench knows, built-in or custom, with its math.

A 10-class classifier emits logits. Each loss wants its input in a given form and its target in a
given encoding; a loss's YAML in ``conf/loss/`` says which, and :class:`ClassificationLoss` applies
both before calling the criterion. A user's own loss is any ``nn.Module`` named by ``_target_``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

InputTransform = Literal["logits", "softmax", "sigmoid", "log_softmax"]
TargetEncoding = Literal["index", "onehot", "signed"]
INPUT_TRANSFORMS: tuple[str, ...] = ("logits", "softmax", "sigmoid", "log_softmax")
TARGET_ENCODINGS: tuple[str, ...] = ("index", "onehot", "signed")


def transform_input(logits: Tensor, how: str) -> Tensor:
    """Turn raw logits into what a criterion expects: ``logits | softmax | sigmoid | log_softmax``."""
    if how == "logits":
        return logits
    if how == "softmax":
        return logits.softmax(dim=1)
    if how == "sigmoid":
        return logits.sigmoid()
    if how == "log_softmax":
        return logits.log_softmax(dim=1)
    raise ValueError(f"unknown input transform {how!r}: use one of {', '.join(INPUT_TRANSFORMS)}")


def encode_target(target: Tensor, how: str, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Encode class indices ``(N,)`` as ``index`` (unchanged), ``onehot`` ``(N, C)`` in {0, 1}, or
    ``signed`` ``(N, C)`` in {-1, +1} (+1 for the true class)."""
    if how == "index":
        return target
    onehot = F.one_hot(target, num_classes).to(dtype)
    if how == "onehot":
        return onehot
    if how == "signed":
        return onehot * 2 - 1
    raise ValueError(f"unknown target encoding {how!r}: use one of {', '.join(TARGET_ENCODINGS)}")


class ClassificationLoss(nn.Module):
    r"""Applies a loss's input transform and target encoding, then its criterion.

    .. math::
        \ell(z, y) = \text{criterion}(g(z), e(y))

    with :math:`g` one of identity, softmax, sigmoid, log-softmax and :math:`e` one of class index,
    one-hot, ±1. Computed in float32 whatever the logits' dtype, so bf16 training stays stable.

    Shape:
        - logits: :math:`(N, C)`
        - target: :math:`(N)` class indices in :math:`[0, C)`
        - output: whatever the criterion's ``reduction`` gives (a scalar for ``mean``/``sum``)
    """

    def __init__(self, criterion: nn.Module, input: str = "logits", target: str = "index", num_classes: int = 10):
        super().__init__()
        if input not in INPUT_TRANSFORMS:
            raise ValueError(f"loss.input={input!r} is not known: use one of {', '.join(INPUT_TRANSFORMS)}")
        if target not in TARGET_ENCODINGS:
            raise ValueError(f"loss.target={target!r} is not known: use one of {', '.join(TARGET_ENCODINGS)}")
        self.criterion = criterion
        self.input = input
        self.target = target
        self.num_classes = num_classes

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        return self.criterion(transform_input(logits, self.input), encode_target(target, self.target, self.num_classes, logits.dtype))

    def extra_repr(self) -> str:
        return f"input={self.input}, target={self.target}, num_classes={self.num_classes}"


def build_loss(loss_cfg, num_classes: int) -> ClassificationLoss:
    """Build the loss a ``conf/loss/*.yaml`` entry describes (``criterion`` is instantiated by Hydra)."""
    from hydra.utils import instantiate

    criterion = instantiate(loss_cfg.criterion)
    if not isinstance(criterion, nn.Module):
        raise TypeError(f"loss.criterion._target_ must build a torch.nn.Module, got {type(criterion).__name__}")
    return ClassificationLoss(criterion, input=loss_cfg.input, target=loss_cfg.target, num_classes=num_classes)
