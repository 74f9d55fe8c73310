"""Every loss lossbench knows, built-in or custom, with its math.

A 10-class classifier emits logits ``z`` of shape ``(N, C)``. Each loss wants its input in a given
form and its target in a given encoding; a loss's YAML in ``conf/loss/`` says which, and
:class:`ClassificationLoss` applies both before calling the criterion. A user's own loss is any
``nn.Module`` named by ``_target_``: nothing here needs to change for it.

Where PyTorch has the loss (cross-entropy, NLL, BCE, MSE, L1, Huber, smooth L1, multi-margin, KL
divergence, hinge embedding), its own module is used and the YAML only configures it. The losses
PyTorch lacks are defined below, each taking raw logits and class indices and doing its own softmax
in float32: :class:`FocalLoss`, :class:`Poly1Loss`, :class:`GCELoss`, :class:`RCELoss`,
:class:`SCELoss`, :class:`NCELoss`, :class:`NCERCELoss`, :class:`NFLRCELoss`, plus :class:`ClassHingeEmbeddingLoss`, which
turns logits into the per-class distances PyTorch's ``HingeEmbeddingLoss`` expects.

Notation in the docstrings: :math:`p = \\mathrm{softmax}(z)`, :math:`y` the true class,
:math:`p_y` its probability, :math:`C` the number of classes, :math:`e_y` the one-hot vector.

``python -m lossbench.losses`` prints the table of the losses in ``conf/loss/``.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from lossbench.config import LOSS_INPUTS as INPUT_TRANSFORMS
from lossbench.config import LOSS_TARGETS as TARGET_ENCODINGS
from lossbench.config import check
from lossbench.paths import conf_dir

REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")
LOSS_KEYS: tuple[str, ...] = ("name", "criterion", "input", "target", "smoothing", "probabilities", "outputs")


# --------------------------------------------------------------------------------------------------
# The wrapper every YAML goes through: output transform, target encoding, criterion.
# --------------------------------------------------------------------------------------------------


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


def encode_target(target: Tensor, how: str, num_classes: int, dtype: torch.dtype, smoothing: float = 0.0) -> Tensor:
    """Encode class indices ``(N,)`` as ``index`` (unchanged), ``onehot`` ``(N, C)`` in {0, 1}, or
    ``signed`` ``(N, C)`` in {-1, +1} (+1 for the true class).

    With ``smoothing`` ε > 0 the one-hot target is label-smoothed (Szegedy et al., 2016, Sec. 7):
    :math:`t = (1 - ε)\\,e_y + ε / C`, the convention of ``CrossEntropyLoss(label_smoothing=ε)``.
    """
    if how == "index":
        return target
    onehot = F.one_hot(target, num_classes).to(dtype)
    if how == "onehot":
        return onehot if smoothing == 0 else onehot * (1 - smoothing) + smoothing / num_classes
    if how == "signed":
        return onehot * 2 - 1
    raise ValueError(f"unknown target encoding {how!r}: use one of {', '.join(TARGET_ENCODINGS)}")


class ClassificationLoss(nn.Module):
    r"""Applies a loss's input transform and target encoding, then its criterion.

    .. math::
        \ell(z, y) = \text{criterion}(g(z), e(y))

    with :math:`g` one of identity, softmax, sigmoid, log-softmax and :math:`e` one of class index,
    one-hot (optionally label-smoothed), ±1. Computed in float32 whatever the logits' dtype, so bf16
    training stays stable; the result is float32.

    Shape:
        - logits: :math:`(N, C)`
        - target: :math:`(N)` class indices in :math:`[0, C)`
        - output: whatever the criterion's ``reduction`` gives (a scalar for ``mean``/``sum``)
    """

    def __init__(
        self,
        criterion: nn.Module,
        input: str = "logits",
        target: str = "index",
        num_classes: int = 10,
        smoothing: float = 0.0,
    ):
        super().__init__()
        check("loss.input", input)  # the rules of config.RULES, as config validation applies them
        check("loss.target", target)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"loss.smoothing={smoothing!r} must lie in [0, 1)")
        if smoothing and target != "onehot":
            raise ValueError(
                f"loss.smoothing={smoothing} smooths a one-hot target, but loss.target={target!r}: set "
                "loss.target=onehot, or use the criterion's own option (e.g. CrossEntropyLoss's label_smoothing)"
            )
        self.criterion = criterion
        self.input = input
        self.target = target
        self.num_classes = num_classes
        self.smoothing = float(smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"loss expects logits of shape (N, {self.num_classes}), got {tuple(logits.shape)}")
        logits = logits.float()
        encoded = encode_target(target, self.target, self.num_classes, logits.dtype, self.smoothing)
        return self.criterion(transform_input(logits, self.input), encoded)

    def extra_repr(self) -> str:
        smoothing = f", smoothing={self.smoothing}" if self.smoothing else ""
        return f"input={self.input}, target={self.target}, num_classes={self.num_classes}{smoothing}"


def build_loss(loss_cfg, num_classes: int) -> ClassificationLoss:
    """Build the loss a ``conf/loss/*.yaml`` entry describes (``criterion`` is instantiated by Hydra).

    Keys: ``name``, ``criterion`` (``_target_`` + kwargs), ``input`` (default ``logits``), ``target``
    (default ``index``) and ``smoothing`` (default 0: ε of a label-smoothed one-hot target); ``probabilities``
    (default ``softmax``) says what scores the run (``test/own_*``, lossbench.metrics.calibration), not what it
    trains, and is not the loss's business here. ``outputs: 1`` (``bce_single``) asks for a one-output head, two
    classes only (lossbench.models.SingleLogit reads it as the logits ``[0, z]``): refused for any other count.
    """
    if not isinstance(loss_cfg, DictConfig):
        loss_cfg = OmegaConf.create(loss_cfg)
    unknown = sorted(set(loss_cfg.keys()) - set(LOSS_KEYS))
    if unknown:
        raise ValueError(f"loss.{unknown[0]} is not a loss key: use {', '.join(LOSS_KEYS)}")
    if loss_cfg.get("outputs") is not None and (loss_cfg.outputs != 1 or num_classes != 2):
        raise ValueError(
            f"loss.outputs={loss_cfg.outputs} is one sigmoid logit for two classes, not {num_classes}: choose two "
            "classes (data.classes=[a,b] data.num_classes=2) or another loss"
        )
    criterion_cfg = loss_cfg.get("criterion")
    if criterion_cfg is None or "_target_" not in criterion_cfg:
        raise ValueError("loss.criterion._target_ is missing: name an nn.Module, e.g. torch.nn.CrossEntropyLoss")
    criterion = instantiate(criterion_cfg)
    if not isinstance(criterion, nn.Module):
        raise TypeError(f"loss.criterion._target_ must build a torch.nn.Module, got {type(criterion).__name__}")
    return ClassificationLoss(
        criterion,
        input=loss_cfg.get("input", "logits"),
        target=loss_cfg.get("target", "index"),
        num_classes=num_classes,
        smoothing=loss_cfg.get("smoothing", 0.0),
    )


# --------------------------------------------------------------------------------------------------
# Losses PyTorch does not have. Each takes raw logits (N, C) and class indices (N,).
# --------------------------------------------------------------------------------------------------


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not known: use one of {', '.join(REDUCTIONS)}")
    return reduction


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    """PyTorch's reductions over per-sample losses ``(N,)``."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _log_probs(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``log softmax(z)`` in float32, shape ``(N, C)``, and its entry at the true class, ``(N,)``."""
    log_p = logits.float().log_softmax(dim=1)
    return log_p, log_p.gather(1, target.unsqueeze(1)).squeeze(1)


class _IndexLoss(nn.Module):
    """Shared plumbing: a ``reduction`` argument checked like PyTorch's."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = _check_reduction(reduction)


class FocalLoss(_IndexLoss):
    r"""Focal loss: cross-entropy down-weighted on examples already classified well.

    .. math::
        \ell(z, y) = -(1 - p_y)^{\gamma} \log p_y

    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017 (arXiv:1708.02002), Eq. (4),
    applied to the softmax of C classes (the paper's sigmoid/one-vs-rest form is for detection).
    :math:`\gamma = 0` is cross-entropy; the paper uses :math:`\gamma = 2`; Ma et al. (2020) use
    :math:`\gamma = 0.5` on MNIST, which is what ``conf/loss/focal.yaml`` sets. The modulating
    factor is differentiated through, as in the paper (some public code detaches it).

    Shape:
        - logits: :math:`(N, C)` raw scores, any float dtype (computed in float32)
        - target: :math:`(N)` class indices in :math:`[0, C)`
        - output: scalar; :math:`(N)` if ``reduction='none'``
    """

    def __init__(self, gamma: float = 0.5, reduction: str = "mean"):
        super().__init__(reduction)
        if gamma < 0:
            raise ValueError(f"gamma={gamma!r} must be >= 0")
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _, log_p_y = _log_probs(logits, target)
        # 1 - p_y via expm1 keeps precision near p_y = 1; the floor keeps d/dp (1-p)^γ finite for γ < 1.
        one_minus_p = (-torch.expm1(log_p_y)).clamp_min(torch.finfo(torch.float32).tiny)
        return _reduce(-one_minus_p.pow(self.gamma) * log_p_y, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction}"


class Poly1Loss(_IndexLoss):
    r"""Poly-1 loss: cross-entropy plus a tunable weight on the first term of its Taylor series.

    .. math::
        \ell(z, y) = -\log p_y + \epsilon\,(1 - p_y)

    Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions",
    ICLR 2022 (arXiv:2204.12511), the Poly-1 formulation. Since :math:`-\log p = \sum_j (1-p)^j /
    j`, this raises the leading coefficient from 1 to :math:`1 + \epsilon`. :math:`\epsilon = 0` is
    cross-entropy; the paper's default is :math:`\epsilon = 1` and it keeps :math:`\epsilon \ge -1`.

    Shape:
        - logits: :math:`(N, C)` raw scores, any float dtype (computed in float32)
        - target: :math:`(N)` class indices in :math:`[0, C)`
        - output: scalar; :math:`(N)` if ``reduction='none'``
    """

    def __init__(self, epsilon: float = 1.0, reduction: str = "mean"):
        super().__init__(reduction)
        self.epsilon = epsilon

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _, log_p_y = _log_probs(logits, target)
        return _reduce(-log_p_y - self.epsilon * torch.expm1(log_p_y), self.reduction)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, reduction={self.reduction}"


class GCELoss(_IndexLoss):
    r"""Generalized cross-entropy (the :math:`\mathcal{L}_q` loss), robust to label noise.

    .. math::
        \ell(z, y) = \frac{1 - p_y^{\,q}}{q}

    Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
    Labels", NeurIPS 2018 (arXiv:1805.07836): the negative Box-Cox transform of :math:`p_y`. It
    tends to cross-entropy as :math:`q \to 0` and is MAE on the softmax, up to a factor 2, at
    :math:`q = 1`. The paper (and Ma et al., 2020, on MNIST) use :math:`q = 0.7`.

    Shape:
        - logits: :math:`(N, C)` raw scores, any float dtype (computed in float32)
        - target: :math:`(N)` class indices in :math:`[0, C)`
        - output: scalar; :math:`(N)` if ``reduction='none'``
    """

    def __init__(self, q: float = 0.7, reduction: str = "mean"):
        super().__init__(reduction)
        if not 0 < q <= 1:
            raise ValueError(f"q={q!r} must lie in (0, 1]")
        self.q = q

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _, log_p_y = _log_probs(logits, target)
        return _reduce(-torch.expm1(self.q * log_p_y) / self.q, self.reduction)  # p^q = exp(q log p)

    def extra_repr(self) -> str:
        return f"q={self.q}, reduction={self.reduction}"


RELEASED_LOG_ZERO = math.log(1e-4)
"""RCE's ``log 0`` in the SCE and APL authors' released code, which clamps the one-hot label at 1e-4:
ln 1e-4 ≈ −9.2103. Their published α, β were tuned with it, so it is lossbench's default."""
PAPER_LOG_ZERO = -4.0
"""RCE's ``log 0`` as the SCE paper's text states it (Wang et al., 2019): A = −4."""


class RCELoss(_IndexLoss):
    r"""Reverse cross-entropy: the cross-entropy with prediction and label swapped.

    .. math::
        \ell(z, y) = -\sum_k p_k \log e_{y,k} = -A\,(1 - p_y), \qquad \log 0 := A

    Wang et al., "Symmetric Cross Entropy for Robust Learning with Noisy Labels", ICCV 2019
    (arXiv:1908.06112). It is symmetric: :math:`\sum_k \ell(z, k) = -A\,(C - 1)` whatever
    :math:`z`, hence robust to symmetric label noise (Ghosh et al., 2017); it is MAE on the softmax
    scaled by :math:`-A/2`.

    :math:`A` (``log_zero``) is a choice, and it scales the loss. The paper's text sets
    :math:`A = -4`; the authors' released code (``loss.py`` of HanxunH/SCELoss-Reproduce and of
    HanxunH/Active-Passive-Losses) clamps the one-hot label at 1e-4 before its log, i.e.
    :math:`A = \ln 10^{-4} \approx -9.21`, and the published α, β were tuned with that. The default
    is therefore the released value (:data:`RELEASED_LOG_ZERO`); ``log_zero=-4`` gives the paper's.
    The released code also clamps the softmax at 1e-7 from below, which changes the value by at most
    :math:`(C-1) \cdot 10^{-7} \cdot |A|` per sample; lossbench does not (the formula above, exactly).

    Shape:
        - logits: :math:`(N, C)` raw scores, any float dtype (computed in float32)
        - target: :math:`(N)` class indices in :math:`[0, C)`
        - output: scalar; :math:`(N)` if ``reduction='none'``
    """

    def __init__(self, log_zero: float = RELEASED_LOG_ZERO, reduction: str = "mean"):
        super().__init__(reduction)
        if not log_zero < 0:
            raise ValueError(
                f"log_zero={log_zero!r} stands for log 0 and must be negative: "
                f"{RELEASED_LOG_ZERO:.4f} (released code) or {PAPER_LOG_ZERO} (paper)"
            )
        self.log_zero = float(log_zero)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _, log_p_y = _log_probs(logits, target)
        return _reduce(self.log_zero * torch.expm1(log_p_y), self.reduction)  # -A (1 - p_y)

    def extra_repr(self) -> str:
        return f"log_zero={self.log_zero}, reduction={self.reduction}"


class SCELoss(_IndexLoss):
    r"""Symmetric cross-entropy: cross-entropy plus reverse cross-entropy.

    .. math::
        \ell(z, y) = \alpha\,(-\log p_y) + \beta\,(-A)(1 - p_y)

    Wang et al., "Symmetric Cross Entropy for Robust Learning with Noisy Labels", ICCV 2019
    (arXiv:1908.06112): :math:`\ell_{sl} = \alpha\,\ell_{ce} + \beta\,\ell_{rce}`. CE learns
    fast, the symmetric RCE term (see :class:`RCELoss`) resists noisy labels. Their MNIST setting is
    :math:`\alpha = 0.01, \beta = 1`, tuned with the released code's :math:`A = \ln 10^{-4}`
    (``log_zero``, the default; the paper's text says :math:`A = -4`, see :class:`RCELoss`).

    Shape:
        - logits: :math:`(N, C)` raw scores, any float dtype (computed in float32)
        - target: :math:`(N)` class indices in :math:`[0, C)`
        - output: scalar; :math:`(N)` if ``reduction='none'``
    """

    def __init__(
        self, alpha: float = 0.01, beta: float = 1.0, log_zero: float = RELEASED_LOG_ZERO, reduction: str = "mean"
    ):
        super().__init__(reduction)
        self.alpha, self.beta = alpha, beta
        self.rce = RCELoss(log_zero, reduction="none")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        ce = F.cross_entropy(logits.float(), target, reduction="none")
        return _reduce(self.alpha * ce + self.beta * self.rce(logits, target), self.reduction)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, log_zero={self.rce.log_zero}, reduction={self.reduction}"


class NCELoss(_IndexLoss):
    r"""Normalized cross-entropy: cross-entropy divided by its sum over every possible label.

    .. math::
        \ell(z, y) = \frac{-\log p_y}{-\sum_{k=1}^{C} \log p_k}

    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy Labels", ICML 2020
    (arXiv:2006.13554): their normalization :math:`L(f(x), y) / \sum_k L(f(x), k)` applied to CE.
    Values lie in :math:`[0, 1]` and :math:`\sum_k \ell(z, k) = 1`, so NCE is symmetric and
    noise-robust; alone it underfits, which is why the paper pairs it with a passive loss
    (:class:`NCERCELoss`).

    Shape:
        - logits: :math:`(N, C)` raw scores, any float dtype (computed in float32)
        - target: :math:`(N)` class indices in :math:`[0, C)`
        - output: scalar; :math:`(N)` if ``reduction='none'``
    """

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p, log_p_y = _log_probs(logits, target)
        return _reduce(log_p_y / log_p.sum(dim=1), self.reduction)


class NCERCELoss(_IndexLoss):
    r"""NCE+RCE, the active-passive loss (APL) of Ma et al.

    .. math::
        \ell(z, y) = \alpha\,\frac{\log p_y}{\sum_k \log p_k} + \beta\,(-A)(1 - p_y)

    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy Labels", ICML 2020
    (arXiv:2006.13554): :math:`\mathcal{L}_{APL} = \alpha\,\mathcal{L}_{active} +
    \beta\,\mathcal{L}_{passive}`. The "active" NCE pushes :math:`p_y` up, the "passive" RCE pushes
    the other classes down; both are robust. Their MNIST setting is :math:`\alpha = 1, \beta = 10`,
    tuned with their released RCE, :math:`A = \ln 10^{-4}` (``log_zero``, the default; see
    :class:`RCELoss`).

    Shape:
        - logits: :math:`(N, C)` raw scores, any float dtype (computed in float32)
        - target: :math:`(N)` class indices in :math:`[0, C)`
        - output: scalar; :math:`(N)` if ``reduction='none'``
    """

    def __init__(
        self, alpha: float = 1.0, beta: float = 10.0, log_zero: float = RELEASED_LOG_ZERO, reduction: str = "mean"
    ):
        super().__init__(reduction)
        self.alpha, self.beta = alpha, beta
        self.nce = NCELoss(reduction="none")
        self.rce = RCELoss(log_zero, reduction="none")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return _reduce(self.alpha * self.nce(logits, target) + self.beta * self.rce(logits, target), self.reduction)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, log_zero={self.rce.log_zero}, reduction={self.reduction}"


class NFLRCELoss(_IndexLoss):
    r"""NFL+RCE, an active-passive loss of Ma et al.: normalized focal loss plus reverse cross-entropy.

    .. math::
        \ell(z, y) = \alpha\,\frac{(1 - p_y)^{\gamma} \log p_y}{\sum_k (1 - p_k)^{\gamma} \log p_k}
        + \beta\,(-A)(1 - p_y)

    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy Labels", ICML 2020
    (arXiv:2006.13554): the focal loss (:class:`FocalLoss`) normalized over every possible label, as
    :class:`NCELoss` normalizes cross-entropy; "active", it pairs with the "passive" RCE. With
    :math:`A = -1` (``log_zero=-1``) the passive term is the authors' MAE, :math:`1 - p_y`
    (their ``MeanAbsoluteError``, loss.py lines 129-147: half of :math:`\sum_k |p_k - e_{y,k}|`), which
    makes this NFL+MAE.

    Where the released code and the paper's formula differ: the released ``NormalizedFocalLoss``
    (github.com/HanxunH/Active-Passive-Losses, loss.py lines 354-375) computes every modulating factor
    :math:`(1 - p_k)^{\gamma}` from detached probabilities (``.data``), so gradients flow through the
    :math:`\log p_k` alone. ``detach=True`` (the default) does the same, as the published α, β were tuned
    with it; ``detach=False`` differentiates the formula above whole. Their settings: γ = 0.5; α = 1 and
    β = 10 on MNIST, α = β = 1 on CIFAR-10 (configs/*/sym/nfl+rce.yaml).

    Shape:
        - logits: :math:`(N, C)` raw scores, any float dtype (computed in float32)
        - target: :math:`(N)` class indices in :math:`[0, C)`
        - output: scalar; :math:`(N)` if ``reduction='none'``
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 10.0,
        gamma: float = 0.5,
        log_zero: float = RELEASED_LOG_ZERO,
        detach: bool = True,
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        self.alpha, self.beta, self.gamma, self.detach = alpha, beta, gamma, detach
        self.rce = RCELoss(log_zero, reduction="none")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p, log_p_y = _log_probs(logits, target)
        p = log_p.exp()
        weights = (1 - (p.detach() if self.detach else p)).pow(self.gamma)
        weight_y = weights.gather(1, target.unsqueeze(1)).squeeze(1)
        nfl = (weight_y * log_p_y) / (weights * log_p).sum(dim=1)
        return _reduce(self.alpha * nfl + self.beta * self.rce(logits, target), self.reduction)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, log_zero={self.rce.log_zero}, "
            f"detach={self.detach}, reduction={self.reduction}"
        )


class ClassHingeEmbeddingLoss(nn.HingeEmbeddingLoss):
    r"""PyTorch's ``HingeEmbeddingLoss`` with each class's negative log-probability as its distance.

    .. math::
        \ell(z, t) = \frac{1}{C} \sum_{k=1}^{C}
        \begin{cases} d_k & t_k = +1 \\ \max(0, \Delta - d_k) & t_k = -1 \end{cases},
        \qquad d_k = -\log p_k

    ``HingeEmbeddingLoss`` is a metric-learning loss: its input :math:`x` is a *distance* (small =
    similar) and :math:`t = \pm 1` says similar / dissimilar; it pulls similar pairs to distance 0
    and pushes dissimilar ones beyond the margin :math:`\Delta`. For classification the pairs are
    (input, class k) with :math:`t_k = +1` for the true class and :math:`-1` for the C−1 others, so
    the network must output distances, not scores: fed raw logits it would push the true class's
    logit *down* without bound. Here :math:`d_k = -\log p_k` (the cross-entropy the input would have
    if its label were k): the true-class term is exactly cross-entropy, and a wrong class is
    penalized only while it is closer than :math:`\Delta` nats (:math:`p_k > e^{-\Delta}`).

    How it differs from ``hinge`` (``MultiMarginLoss``, Weston & Watkins): that one compares scores
    *between* classes, :math:`\max(0, 1 - z_y + z_k)`, and is zero once the true class wins by the
    margin; this one scores each class *on its own* against a fixed threshold, one-vs-rest, and is
    zero only when :math:`p_y = 1`. The mean runs over :math:`N \cdot C` entries, as PyTorch's does.

    Shape:
        - logits: :math:`(N, C)` raw scores, any float dtype (computed in float32)
        - target: :math:`(N, C)` in :math:`\{-1, +1\}`, +1 at the true class (``target: signed``)
        - output: scalar; :math:`(N, C)` if ``reduction='none'``
    """

    def __init__(self, margin: float = 1.0, reduction: str = "mean"):
        super().__init__(margin=margin, reduction=_check_reduction(reduction))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        distance = -logits.float().log_softmax(dim=1)
        return super().forward(distance, target.to(distance.dtype))


class SingleLogitBCELoss(nn.Module):
    r"""Binary cross-entropy on one sigmoid logit, for two classes: the logistic regression of class 1 against 0.

        .. math::
            \ell(z, y) = -\left[y \log \sigma(s) + (1 - y) \log(1 - \sigma(s))
    ight], \qquad s = z_1 - z_0

        The model of ``loss=bce_single`` has a one-output head whose output :math:`s` lossbench reads as the logits
        :math:`[0, s]` (``lossbench.models.SingleLogit``), so here :math:`s = z_1 - z_0` is that output itself, and
        :math:`\mathrm{softmax}([0, s]) = [1 - \sigma(s), \sigma(s)]`: accuracy, NLL, ECE and margins compare with the
        softmax over two logits of ``ce``. On two logits the loss is ``ce`` itself (:math:`-\log \sigma(\pm(z_1 - z_0))`
        is :math:`-\log \mathrm{softmax}(z)_y`): the single-logit sigmoid and the two-logit softmax are the same model.

        Shape:
            - logits: :math:`(N, 2)` (the ``[0, s]`` of a one-output head), any float dtype (computed in float32)
            - target: :math:`(N)` class indices in :math:`\{0, 1\}` (``target: index``)
            - output: scalar; :math:`(N)` if ``reduction='none'``
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.dim() != 2 or logits.shape[1] != 2:
            raise ValueError(f"SingleLogitBCELoss takes two classes' logits (N, 2), got {tuple(logits.shape)}")
        logits = logits.float()
        s = logits[:, 1] - logits[:, 0]
        return F.binary_cross_entropy_with_logits(s, target.to(s.dtype), reduction=self.reduction)


# --------------------------------------------------------------------------------------------------
# The table: python -m lossbench.losses
# --------------------------------------------------------------------------------------------------

_FORMULA = re.compile(r"^#\s*formula:\s*(.+?)\s*$", re.MULTILINE)


def loss_table(loss_dir: Path | None = None) -> list[dict[str, str]]:
    """One row per ``conf/loss/*.yaml``: name, formula (the header's ``# formula:`` line), input
    transform, target encoding, hyper-parameters (the criterion's kwargs, and ``smoothing``)."""
    if loss_dir is None:
        loss_dir = conf_dir() / "loss"
    rows = []
    for path in sorted(loss_dir.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        cfg = OmegaConf.to_container(OmegaConf.create(text))
        kwargs: dict[str, Any] = {k: v for k, v in cfg.get("criterion", {}).items() if k != "_target_"}
        if "smoothing" in cfg:
            kwargs["smoothing"] = cfg["smoothing"]
        formula = _FORMULA.search(text)
        rows.append(
            {
                "name": cfg.get("name", path.stem),
                "formula": formula.group(1) if formula else "",
                "input": cfg.get("input", "logits"),
                "target": cfg.get("target", "index"),
                "hyper-parameters": ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "-",
                "criterion": cfg.get("criterion", {}).get("_target_", ""),
            }
        )
    return rows


_COLUMNS = ("name", "formula", "input", "target", "hyper-parameters")


def format_table(rows: list[dict[str, str]], markdown: bool = False) -> str:
    """The table as aligned text, or as a Markdown table (for ``docs/losses.md``)."""
    columns = _COLUMNS + (("criterion",) if markdown else ())
    if markdown:
        cell = {"name": "`{}`", "criterion": "`{}`"}
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        for row in rows:
            cells = (cell.get(c, "{}").format(row[c]).replace("|", "\\|") for c in columns)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        lines.append("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lossbench.losses",
        description="The losses lossbench knows (conf/loss/*.yaml). Choose one with loss=<name>; "
        "override a hyper-parameter with loss.criterion.<key>=<value>.",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (as in docs/losses.md)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="a folder of loss YAMLs (default: lossbench's conf/loss)"
    )
    args = parser.parse_args(argv)
    print(format_table(loss_table(args.dir), markdown=args.markdown))


if __name__ == "__main__":
    main()
