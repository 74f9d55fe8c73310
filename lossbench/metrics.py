"""Yardsticks every loss shares: accuracy, NLL of the softmax, expected calibration error.

A run's own loss says little across losses (an MSE of 0.01 and a cross-entropy of 0.3 are not
comparable); these are, so overfitting is judged on them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import multiclass_calibration_error

from lossbench.names import CALIBRATION, CONFIDENCE, MARGIN_QUANTILES, MARGINS, MEMORISATION

ECE_BINS = 15
CONFIDENT = 0.9
"""A prediction is *confident* when its top softmax probability is at least this."""


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


def _autograd_copy(t: Tensor) -> Tensor:
    """A copy of ``t`` autograd may use: evaluation runs in inference mode, whose tensors cannot be saved for
    backward (call inside ``torch.inference_mode(False)``)."""
    return t.detach().clone()


def confidence(logits: Tensor, target: Tensor, loss: Callable[[Tensor, Tensor], Tensor]) -> dict[str, Tensor]:
    """How the loss ``loss`` (mean-reduced over the images, as every loss in conf/loss/) treats wrong predictions
    (:data:`lossbench.names.CONFIDENCE`):

    - ``wrong_conf``: mean top softmax probability of the wrong predictions (NaN when none is wrong);
    - ``confident_wrong``: share of images predicted wrong with a top probability of at least :data:`CONFIDENT`;
    - ``confident_wrong_loss``: mean per-image loss on those images over the mean per-image loss on all images;
    - ``confident_wrong_grad``: mean per-image norm of the loss's gradient with respect to the logits on those
      images over the same mean on all images (the gradient of the mean loss times N is each image's own, since
      images do not interact).

    The last two are NaN when no image is confidently wrong (or the loss is 0 everywhere). Works in and outside
    inference mode (the gradient is taken on copies).
    """
    wrong_conf, confident_wrong, loss_ratio, grad_ratio = CONFIDENCE
    logits, target = logits.float(), target
    top, pred = logits.softmax(dim=1).max(dim=1)
    wrong = pred != target
    flagged = wrong & (top >= CONFIDENT)
    nan = torch.tensor(float("nan"), device=logits.device)
    with torch.inference_mode(False), torch.enable_grad():
        z, y = _autograd_copy(logits).requires_grad_(True), _autograd_copy(target)
        total = loss(z, y)
        (grad,) = torch.autograd.grad(total * len(y), z)
        norms = grad.norm(dim=1)
        on_flagged = loss(z[flagged.clone()], y[flagged.clone()]).detach() if bool(flagged.any()) else nan
    return {
        wrong_conf: top[wrong].mean() if bool(wrong.any()) else nan,
        confident_wrong: flagged.float().mean(),
        loss_ratio: on_flagged / total.detach() if bool(flagged.any()) else nan,
        grad_ratio: norms[flagged].mean() / norms.mean() if bool(flagged.any()) else nan,
    }


def logit_margins(logits: Tensor, target: Tensor) -> Tensor:
    """``z_y - max_{k != y} z_k`` per image: positive when the image is classified correctly, by that much."""
    true = logits.gather(1, target[:, None]).squeeze(1)
    others = logits.scatter(1, target[:, None], float("-inf")).max(dim=1).values
    return true - others


def input_margins(net: Callable[[Tensor], Tensor], x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """The network's logits on ``x`` and each image's distance to the nearest decision boundary in input space, over
    **all** competing classes, as the SVM states its margin:

    .. math::
        d(x) = \\min_{j \\ne y} \\frac{z_y(x) - z_j(x)}{\\lVert \\nabla_x z_y(x) - \\nabla_x z_j(x) \\rVert_2}

    For a linear model ``z = Wx + b`` this is exactly :math:`\\min_j (z_y - z_j) / \\lVert w_y - w_j \\rVert`, the
    distance to the nearest of the C-1 hyperplanes :math:`z_y = z_j`; for a network it is the first-order version per
    competing class (Elsayed et al., 2018, eq. 7). Signed like the logit margin (negative when the image is on the
    wrong side of a boundary). The runner-up class alone is not enough: a class with a lower logit whose gap to the
    true class grows faster away from the image (a larger gradient norm) can have the nearer boundary.

    Images do not interact (a network in eval mode), so the gradient of a logit summed over the batch is each
    image's own: one backward pass for the true classes' logits, then one per class (C + 1 in all), holding one
    ``(N, D)`` gradient at a time.
    """
    with torch.inference_mode(False), torch.enable_grad():
        inputs, y = _autograd_copy(x).requires_grad_(True), _autograd_copy(target)
        logits = net(inputs).float()
        n, classes = logits.shape

        def gradient(value: Tensor, last: bool = False) -> Tensor:
            (grad,) = torch.autograd.grad(value.sum(), inputs, retain_graph=not last, allow_unused=True)
            return torch.zeros_like(inputs).flatten(1) if grad is None else grad.flatten(1)  # a constant logit

        true = gradient(logits.gather(1, y[:, None]))
        norms = torch.stack([(true - gradient(logits[:, k], k == classes - 1)).norm(dim=1) for k in range(classes)], 1)
    z = logits.detach()
    gaps = z.gather(1, y[:, None]) - z
    distances = gaps / norms.clamp_min(torch.finfo(norms.dtype).tiny)
    return z, distances.scatter(1, y[:, None], float("inf")).min(dim=1).values


def margins(logits: Tensor, target: Tensor, distances: Tensor) -> dict[str, Tensor]:
    """The margins of a set of images (:data:`lossbench.names.MARGINS`): percentiles of the logit margin, the share of
    images with a logit margin of at least 1, and percentiles of the input margins ``distances``
    (:func:`input_margins`)."""
    q = torch.tensor([p / 100 for p in MARGIN_QUANTILES], device=logits.device)
    logit = logit_margins(logits.float(), target)
    values = [*torch.quantile(logit, q), (logit >= 1).float().mean(), *torch.quantile(distances.float(), q)]
    return dict(zip(MARGINS, values))


# ---------------------------------------------------------------------- each loss on the probabilities it trains


def own_log_probs(logits: Tensor, probabilities: str, temperature: float | Tensor = 1.0) -> Tensor:
    """Log-probabilities ``(N, C)`` of the distribution a loss trains (its YAML's ``probabilities``), from the logits
    divided by ``temperature``:

    - ``softmax``: :math:`p = \\mathrm{softmax}(z / T)`, the softmax family's own (CE, focal, MAE and MSE on
      softmax, NCE, ...), and what losses with no probabilistic output (hinge, MSE on logits) are scored through;
    - ``sigmoid``: the C one-vs-rest sigmoids a BCE trains, normalised to sum to 1,
      :math:`p_k = \\sigma(z_k / T) / \\sum_j \\sigma(z_j / T)` (the convention of scikit-learn's
      ``OneVsRestClassifier.predict_proba``): it keeps each unit's own estimate, only rescaled, and its arg-max
      is the sigmoids' (so accuracy is unchanged). Conditioning the C independent Bernoullis on "exactly one
      class" would instead give :math:`p_k \\propto e^{z_k}`, the softmax itself: it would score BCE through a
      distribution it never trained, the very thing this measure exists to avoid.

    Computed in log space (log-sigmoid, log-sum-exp), stable for any logits.
    """
    z = logits.float() / temperature
    if probabilities == "sigmoid":
        log_q = F.logsigmoid(z)
        return log_q - log_q.logsumexp(dim=1, keepdim=True)
    if probabilities == "softmax":
        return z.log_softmax(dim=1)
    raise ValueError(f"loss.probabilities={probabilities!r}: use softmax or sigmoid")


def nll_ece(log_probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """NLL (mean of ``-log p_y``) and ECE (as :func:`yardsticks`: 15 equal-width bins of the top probability, L1)."""
    nll = -log_probs.gather(1, target[:, None]).mean()
    ece = multiclass_calibration_error(
        log_probs.exp(), target, num_classes=log_probs.shape[1], n_bins=ECE_BINS, norm="l1"
    )
    return nll, ece


TEMPERATURES = (0.05, 20.0)
"""The range a fitted temperature is kept in: validation data the model separates perfectly sends the NLL-minimising
T to 0 (every validation NLL to 0), and one wrong test image then to an NLL of thousands."""


def fit_temperature(logits: Tensor, target: Tensor, probabilities: str = "softmax") -> Tensor:
    """The temperature T that minimises the NLL of :func:`own_log_probs` on ``(logits, target)`` (Guo et al., 2017):
    L-BFGS with a strong-Wolfe line search on log T, from T = 1, then kept within :data:`TEMPERATURES` (the NLL is
    convex in 1/T, so the nearest end of the range is the best T inside it). A scalar tensor."""
    with torch.inference_mode(False), torch.enable_grad():
        z, y = _autograd_copy(logits).float(), _autograd_copy(target)
        log_t = torch.zeros((), device=z.device, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimizer.zero_grad()
            nll = -own_log_probs(z, probabilities, log_t.exp()).gather(1, y[:, None]).mean()
            nll.backward()
            return nll

        optimizer.step(closure)
    return log_t.detach().exp().clamp(*TEMPERATURES)


def calibration(
    logits: Tensor, target: Tensor, probabilities: str, val: tuple[Tensor, Tensor] | None = None
) -> dict[str, Tensor]:
    """Each loss scored on the probabilities it trains (:data:`lossbench.names.CALIBRATION`): NLL and ECE of
    :func:`own_log_probs` on ``(logits, target)``; with validation logits ``val``, also after temperature scaling,
    one temperature fitted on them (:func:`fit_temperature`) for the loss's own probabilities and one for the
    softmax."""
    own_nll, own_ece, own_nll_ts, own_ece_ts, nll_ts, ece_ts = CALIBRATION
    results = dict(zip((own_nll, own_ece), nll_ece(own_log_probs(logits, probabilities), target)))
    if val is None or len(val[1]) == 0:
        return results
    for form, names in ((probabilities, (own_nll_ts, own_ece_ts)), ("softmax", (nll_ts, ece_ts))):
        temperature = fit_temperature(*val, form)
        results.update(zip(names, nll_ece(own_log_probs(logits, form, temperature), target)))
    return results
