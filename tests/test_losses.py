"""The loss library: every conf/loss/*.yaml against a hand computation, and the properties the math
promises (finite gradients, minima, symmetry, reductions, bf16, a few SGD steps).

Reference values are written here in plain numpy / arithmetic from the formulas, never by calling
the code under test.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lossbench import losses
from lossbench.losses import (
    INPUT_TRANSFORMS,
    LOSS_KEYS,
    TARGET_ENCODINGS,
    ClassHingeEmbeddingLoss,
    ClassificationLoss,
    build_loss,
    format_table,
    loss_table,
)
from lossbench.paths import conf_dir

LOSS_DIR = conf_dir() / "loss"
LOSS_FILES = sorted(LOSS_DIR.glob("*.yaml"))
NAMES = [f.stem for f in LOSS_FILES]
TWO_CLASS = {"bce_single"}  # one sigmoid output, two classes only: its own tests below
MULTICLASS = [n for n in NAMES if n not in TWO_CLASS]
C = 10
A = math.log(1e-4)  # log 0 in RCE/SCE/NCE+RCE: the released code's one-hot clamp at 1e-4 (the YAMLs' log_zero)


def cfg_of(name: str, **criterion_overrides):
    cfg = OmegaConf.load(LOSS_DIR / f"{name}.yaml")
    if criterion_overrides:
        cfg = OmegaConf.merge(cfg, {"criterion": criterion_overrides})
    return cfg


def loss_of(name: str, num_classes: int = C, **criterion_overrides) -> ClassificationLoss:
    return build_loss(cfg_of(name, **criterion_overrides), num_classes)


# --------------------------------------------------------------------------------------------------
# Hand computations, in numpy float64, one per loss, straight from the formulas in the YAML headers.
# --------------------------------------------------------------------------------------------------


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def onehot(y, c):
    return np.eye(c)[y]


def p_true(z, y):
    return softmax(z)[np.arange(len(y)), y]


def ref_bce(z, y):  # mean over N*C entries of -[t log s + (1 - t) log(1 - s)], s = sigmoid(z)
    t, s = onehot(y, z.shape[1]), sigmoid(z)
    return np.mean(-(t * np.log(s) + (1 - t) * np.log(1 - s)))


def ref_hinge(z, y, power):
    n, c = z.shape
    total = 0.0
    for i in range(n):
        for k in range(c):
            if k != y[i]:
                total += max(0.0, 1 - z[i, y[i]] + z[i, k]) ** power
    return total / (n * c)


def ref_bce_single(s, y):  # mean over N of -[y log sigmoid(s) + (1 - y) log(1 - sigmoid(s))], one logit s
    return np.mean(-(y * np.log(sigmoid(s)) + (1 - y) * np.log(1 - sigmoid(s))))


def ref_rce(z, y, log_zero=A):  # -sum_k p_k log t_k with log 1 = 0 and log 0 = log_zero, per sample
    p, t = softmax(z), onehot(y, z.shape[1])
    log_t = np.where(t == 1, 0.0, log_zero)
    return -(p * log_t).sum(axis=1)


def ref_nce(z, y):
    log_p = np.log(softmax(z))
    return log_p[np.arange(len(y)), y] / log_p.sum(axis=1)


def ref_nfl(z, y, gamma):  # (1 - p_y)^g log p_y / sum_k (1 - p_k)^g log p_k, per sample
    p = softmax(z)
    w_log = (1 - p) ** gamma * np.log(p)
    return w_log[np.arange(len(y)), y] / w_log.sum(axis=1)


def ref_huber(r, delta):
    return np.where(np.abs(r) < delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))


def ref_smooth_l1(r, beta):
    return np.where(np.abs(r) < beta, 0.5 * r**2 / beta, np.abs(r) - 0.5 * beta)


def ref_smoothed(y, c, eps):
    return (1 - eps) * onehot(y, c) + eps / c


def ref_kl(z, y, eps):  # sum_k t_k log(t_k / p_k) with 0 log 0 = 0, averaged over samples
    t, p = ref_smoothed(y, z.shape[1], eps), softmax(z)
    safe_t = np.where(t > 0, t, 1.0)
    return np.where(t > 0, t * np.log(safe_t / p), 0.0).sum() / len(y)


REFERENCE = {
    "ce": lambda z, y: np.mean(-np.log(p_true(z, y))),
    "nll": lambda z, y: np.mean(-np.log(p_true(z, y))),
    "bce": lambda z, y: ref_bce(z, y),
    "bce_prob": lambda z, y: ref_bce(z, y),
    "mse": lambda z, y: np.mean((softmax(z) - onehot(y, z.shape[1])) ** 2),
    "mse_logits": lambda z, y: np.mean((z - onehot(y, z.shape[1])) ** 2),
    "mae": lambda z, y: np.mean(np.abs(softmax(z) - onehot(y, z.shape[1]))),
    "huber": lambda z, y: np.mean(ref_huber(z - onehot(y, z.shape[1]), 1.0)),
    "smooth_l1": lambda z, y: np.mean(ref_smooth_l1(softmax(z) - onehot(y, z.shape[1]), 0.5)),
    "hinge": lambda z, y: ref_hinge(z, y, 1),
    "squared_hinge": lambda z, y: ref_hinge(z, y, 2),
    "hinge_embedding": lambda z, y: np.mean(
        np.where(onehot(y, z.shape[1]) == 1, -np.log(softmax(z)), np.maximum(0.0, 1.0 + np.log(softmax(z))))
    ),
    "kl_div": lambda z, y: ref_kl(z, y, 0.0),
    "label_smoothing": lambda z, y: np.mean(-(ref_smoothed(y, z.shape[1], 0.1) * np.log(softmax(z))).sum(axis=1)),
    "focal": lambda z, y: np.mean(-((1 - p_true(z, y)) ** 0.5) * np.log(p_true(z, y))),
    "poly1": lambda z, y: np.mean(-np.log(p_true(z, y)) + 1.0 * (1 - p_true(z, y))),
    "gce": lambda z, y: np.mean((1 - p_true(z, y) ** 0.7) / 0.7),
    "sce": lambda z, y: np.mean(0.01 * -np.log(p_true(z, y)) + 1.0 * ref_rce(z, y)),
    "rce": lambda z, y: np.mean(ref_rce(z, y)),
    "nce": lambda z, y: np.mean(ref_nce(z, y)),
    "nce_rce": lambda z, y: np.mean(1.0 * ref_nce(z, y) + 10.0 * ref_rce(z, y)),
    "nce_mae": lambda z, y: np.mean(1.0 * ref_nce(z, y) + 10.0 * (1 - p_true(z, y))),
    "nfl_rce": lambda z, y: np.mean(1.0 * ref_nfl(z, y, 0.5) + 10.0 * ref_rce(z, y)),
    "nfl_mae": lambda z, y: np.mean(1.0 * ref_nfl(z, y, 0.5) + 10.0 * (1 - p_true(z, y))),
    "bce_single": lambda z, y: ref_bce_single(z[:, 1] - z[:, 0], y),  # two classes' logits [z0, z1]
}

# The same losses at zero logits (p = 1/10 for every class), worked out by hand:
#   ln 10 = 2.302585; BCE per entry = ln 2; 0.1^0.7 = 0.199526; sqrt(0.9) = 0.948683.
AT_ZERO_LOGITS = {
    "ce": 2.302585,  # -ln 0.1
    "nll": 2.302585,
    "bce": 0.693147,  # every entry: -ln sigmoid(0) = ln 2
    "bce_prob": 0.693147,
    "mse": 0.09,  # (0.9^2 + 9 * 0.1^2) / 10
    "mse_logits": 0.1,  # (1^2 + 9 * 0) / 10
    "mae": 0.18,  # (0.9 + 9 * 0.1) / 10
    "huber": 0.05,  # (1^2 / 2) / 10
    "smooth_l1": 0.074,  # true class |0.9| >= 0.5: 0.9 - 0.25; others 0.1^2 / (2 * 0.5) = 0.01; (0.65 + 0.09) / 10
    "hinge": 0.9,  # 9 violations of size 1, / 10
    "squared_hinge": 0.9,
    "hinge_embedding": 0.2302585,  # true class d = ln 10; others max(0, 1 - ln 10) = 0; / 10
    "kl_div": 2.302585,  # KL(e_y || uniform) = ln 10
    "label_smoothing": 2.302585,  # -sum_k t_k ln 0.1 = ln 10 since sum t = 1
    "focal": 2.184424,  # sqrt(0.9) * ln 10
    "poly1": 3.202585,  # ln 10 + 0.9
    "gce": 1.143534,  # (1 - 0.199526) / 0.7
    "sce": 8.312332,  # 0.01 * ln 10 + 9.210340 * 0.9
    "rce": 8.289306,  # -A * (1 - 0.1), A = ln 1e-4 = -9.210340
    "nce": 0.1,  # ln 10 / (10 ln 10)
    "nce_rce": 82.993063,  # 0.1 + 10 * 8.289306
    "nce_mae": 9.1,  # 0.1 + 10 * (1 - 0.1)
    "nfl_rce": 82.993063,  # NFL at uniform p is 1/10, like NCE
    "nfl_mae": 9.1,
    "bce_single": 0.693147,  # -ln sigmoid(0) = ln 2 (two classes)
}


def small_batch(seed: int = 0, n: int = 6, c: int = C, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (n,), generator=g)
    return z, y


def test_every_yaml_has_a_hand_computation():
    assert set(REFERENCE) == set(NAMES) == set(AT_ZERO_LOGITS)


@pytest.mark.parametrize("name", MULTICLASS)
def test_matches_hand_computation(name):
    z, y = small_batch()
    got = loss_of(name)(z.float(), y).item()
    assert got == pytest.approx(REFERENCE[name](z.numpy(), y.numpy()), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", MULTICLASS)
def test_gradient_matches_finite_differences_of_the_hand_computation(name):
    """NFL's released gradient leaves out its factors' own (detach=true, checked against the code below): here
    the formula's, with detach=false."""
    z, y = small_batch(9, n=3, c=4)
    z32 = z.float().requires_grad_()
    loss_of(name, num_classes=4, **({"detach": False} if name.startswith("nfl_") else {}))(z32, y).backward()
    zn, yn, h = z.numpy(), y.numpy(), 1e-5
    numeric = np.zeros_like(zn)
    for idx in np.ndindex(*zn.shape):
        up, down = zn.copy(), zn.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (REFERENCE[name](up, yn) - REFERENCE[name](down, yn)) / (2 * h)
    np.testing.assert_allclose(z32.grad.numpy(), numeric, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", MULTICLASS)
def test_at_zero_logits(name):
    y = torch.tensor([0, 3, 9])
    assert loss_of(name)(torch.zeros(3, C), y).item() == pytest.approx(AT_ZERO_LOGITS[name], rel=1e-5)


# --------------------------------------------------------------------------------------------------
# Textbook examples
# --------------------------------------------------------------------------------------------------


def test_textbook_mse_and_mae():
    pred, target = torch.tensor([1.2, 1.8, 3.1]), torch.tensor([1.0, 2.0, 3.0])
    # errors 0.2, -0.2, 0.1: MSE = (0.04 + 0.04 + 0.01) / 3 = 0.03 (the tutorial's ≈0.03 is right);
    # MAE = (0.2 + 0.2 + 0.1) / 3 = 0.1667.
    assert loss_of("mse").criterion(pred, target).item() == pytest.approx(0.03, rel=1e-5)
    assert loss_of("mae").criterion(pred, target).item() == pytest.approx(0.5 / 3, rel=1e-5)


def test_textbook_cross_entropy():
    logits, classes = torch.tensor([[0.1, 0.2, 0.7], [0.3, 0.5, 0.2]]), torch.tensor([2, 1])
    # Row 1: ln(e^0.1 + e^0.2 + e^0.7) - 0.7 = ln 4.340320 - 0.7 = 0.767950
    # Row 2: ln(e^0.3 + e^0.5 + e^0.2) - 0.5 = ln 4.219977 - 0.5 = 0.939831
    # Mean 0.853890. The widely read tutorial's "≈0.813" is wrong: no reading of these numbers gives
    # it (sum 1.708, treating them as probabilities 0.525, log2 1.232, log10 0.371).
    row1 = math.log(math.exp(0.1) + math.exp(0.2) + math.exp(0.7)) - 0.7
    row2 = math.log(math.exp(0.3) + math.exp(0.5) + math.exp(0.2)) - 0.5
    expected = (row1 + row2) / 2
    assert expected == pytest.approx(0.853890, abs=1e-6)
    assert loss_of("ce", num_classes=3)(logits, classes).item() == pytest.approx(expected, rel=1e-6)
    assert nn.CrossEntropyLoss()(logits, classes).item() == pytest.approx(expected, rel=1e-6)
    assert loss_of("ce", num_classes=3)(logits, classes).item() != pytest.approx(0.813, abs=1e-3)


# --------------------------------------------------------------------------------------------------
# RCE's log 0: the authors' released code (default) and the paper's text (log_zero = -4)
# --------------------------------------------------------------------------------------------------

# The released formulas, rewritten here from loss.py of HanxunH/SCELoss-Reproduce @c81fb33 (SCELoss,
# lines 14-27) and HanxunH/Active-Passive-Losses @04bce53 (ReverseCrossEntropy lines 51-57,
# NormalizedCrossEntropy lines 86-90, NCEandRCE lines 175-176): softmax clamped to [1e-7, 1], one-hot clamped to [1e-4, 1]
# before its log, each term averaged over the batch and then weighted.


def released_rce(z, y):
    pred = torch.softmax(z, dim=1).clamp(min=1e-7, max=1.0)
    label = nn.functional.one_hot(y, z.shape[1]).to(z.dtype).clamp(min=1e-4, max=1.0)
    return (-1 * torch.sum(pred * torch.log(label), dim=1)).mean()


def released_nce(z, y):
    log_p = torch.log_softmax(z, dim=1)
    label = nn.functional.one_hot(y, z.shape[1]).to(z.dtype)
    return (-1 * torch.sum(label * log_p, dim=1) / (-log_p.sum(dim=1))).mean()


RELEASED = {
    "rce": released_rce,
    "sce": lambda z, y: 0.01 * nn.functional.cross_entropy(z, y) + 1.0 * released_rce(z, y),
    "nce_rce": lambda z, y: 1.0 * released_nce(z, y) + 10.0 * released_rce(z, y),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_rce_losses_equal_the_released_code(name):
    for seed in range(3):
        z, y = small_batch(seed, n=64, scale=2.0)
        assert torch.softmax(z, 1).min() > 1e-7, "no softmax clamp in play: the formulas must agree exactly"
        ours, theirs = z.float().requires_grad_(), z.clone().requires_grad_()
        value, expected = loss_of(name)(ours, y), RELEASED[name](theirs, y)
        value.backward()
        expected.backward()
        assert value.item() == pytest.approx(expected.item(), rel=1e-6)
        torch.testing.assert_close(ours.grad, theirs.grad.float(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_the_released_softmax_clamp_moves_the_value_by_at_most_its_bound(name):
    """Where some p_k < 1e-7 the released code counts 1e-7 instead: it is higher, by at most (C-1)·1e-7·|A|."""
    z, y = small_batch(4, n=16, scale=12.0)
    assert torch.softmax(z, 1).min() < 1e-7
    gap = RELEASED[name](z, y).item() - loss_of(name)(z.float(), y).item()
    weight = 10.0 if name == "nce_rce" else 1.0  # β on the RCE term
    assert 0 < gap <= weight * (C - 1) * 1e-7 * abs(A) * 1.001


PAPER = {  # the paper's text, A = -4: RCE = 4 (1 - p_y)
    "rce": lambda z, y: np.mean(4 * (1 - p_true(z, y))),
    "sce": lambda z, y: np.mean(0.01 * -np.log(p_true(z, y)) + 4 * (1 - p_true(z, y))),
    "nce_rce": lambda z, y: np.mean(ref_nce(z, y) + 10.0 * 4 * (1 - p_true(z, y))),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_log_zero_minus_four_is_the_papers_formula(name):
    z, y = small_batch(5, n=32)
    got = loss_of(name, log_zero=-4)(z.float(), y).item()
    assert got == pytest.approx(PAPER[name](z.numpy(), y.numpy()), rel=1e-5)
    assert loss_of(name)(z.float(), y).item() != pytest.approx(got, rel=1e-2), "the default is not the paper's A"


def test_rce_default_is_the_released_constant():
    assert losses.RCELoss().log_zero == losses.RELEASED_LOG_ZERO == pytest.approx(-9.2103404, abs=1e-7)
    for name in RELEASED:
        assert cfg_of(name).criterion.log_zero == losses.RELEASED_LOG_ZERO


def test_rce_rejects_a_non_negative_log_zero():
    with pytest.raises(ValueError, match=r"log_zero=4 stands for log 0 and must be negative: -9.2103 .* or -4.0"):
        losses.RCELoss(log_zero=4)


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MULTICLASS)
def test_finite_gradients_for_extreme_logits(name):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, C, (16,), generator=g)
    signs = torch.randint(0, 2, (16, C), generator=g).float() * 2 - 1
    right = torch.full((4, C), -1e4).scatter(1, y[:4, None], 1e4)  # confidently right
    wrong = torch.full((4, C), 1e4).scatter(1, y[4:8, None], -1e4)  # confidently wrong
    z = torch.cat([signs[:8] * 1e4, right, wrong]).requires_grad_()
    value = loss_of(name)(z, y)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(z.grad).all()


# Losses whose infimum is reached at finite logits: the logits that reach it, and the value there.
def _log_smoothed(y, eps=0.1):
    return torch.log(torch.from_numpy(ref_smoothed(y.numpy(), C, eps)).float())


FINITE_MINIMUM = {
    "mse_logits": (lambda y: nn.functional.one_hot(y, C).float(), lambda y: 0.0),
    "huber": (lambda y: nn.functional.one_hot(y, C).float(), lambda y: 0.0),
    # p = t, the smoothed target; the minimum is its entropy H(t) = -0.91 ln 0.91 - 9 * 0.01 ln 0.01
    "label_smoothing": (_log_smoothed, lambda y: -(0.91 * math.log(0.91) + 9 * 0.01 * math.log(0.01))),
}


@pytest.mark.parametrize("name", sorted(FINITE_MINIMUM))
def test_finite_minimum_where_the_math_puts_it(name):
    y = torch.tensor([0, 4, 7, 9])
    at, value = FINITE_MINIMUM[name]
    z = at(y).requires_grad_()
    loss = loss_of(name)(z, y)
    loss.backward()
    assert loss.item() == pytest.approx(value(y), abs=1e-5)
    assert z.grad.abs().max().item() < 1e-5  # stationary
    nudged = z.detach() + 0.1 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    assert loss_of(name)(nudged, y).item() > loss.item()


def test_kl_div_with_smoothing_has_its_minimum_zero_at_the_smoothed_target():
    y = torch.tensor([0, 4, 7, 9])
    kl = build_loss(OmegaConf.merge(cfg_of("kl_div"), {"smoothing": 0.1}), C)
    z = _log_smoothed(y).requires_grad_()
    loss = kl(z, y)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert z.grad.abs().max().item() < 1e-6


@pytest.mark.parametrize("name", sorted(set(MULTICLASS) - set(FINITE_MINIMUM)))
def test_infimum_is_approached_as_the_true_class_wins(name):
    """Infimum 0, approached as z_y - z_k grows (hinge reaches it once the margin is met)."""
    loss = loss_of(name)
    y = torch.tensor([0, 4, 7, 9])
    signed = nn.functional.one_hot(y, C).float() * 2 - 1
    values = [loss(s * signed, y).item() for s in (0.0, 1.0, 2.0, 5.0, 10.0, 20.0)]
    assert all(b <= a + 1e-7 for a, b in itertools.pairwise(values)), values
    assert values[-1] < 1e-3 * max(values[0], 1e-3)
    assert values[-1] >= -1e-7
    wrong = loss(-5 * signed, y).item()  # confidently wrong is worse than undecided
    assert wrong > values[0]


@pytest.mark.parametrize("name", MULTICLASS)
def test_gradient_at_zero_logits_raises_the_true_class(name):
    y = torch.tensor([0, 4, 7, 9])
    z = torch.zeros(4, C, requires_grad=True)
    loss_of(name)(z, y).backward()
    true_grad = z.grad.gather(1, y[:, None])
    assert (true_grad < 0).all(), "gradient descent must raise the true class's logit"


def test_raw_hinge_embedding_on_logits_would_lower_the_true_class():
    """Why hinge_embedding feeds distances: on raw scores HingeEmbeddingLoss pushes z_y down."""
    y = torch.tensor([0, 4])
    z = torch.zeros(2, C, requires_grad=True)
    signed = nn.functional.one_hot(y, C).float() * 2 - 1
    nn.HingeEmbeddingLoss()(z, signed).backward()
    assert (z.grad.gather(1, y[:, None]) > 0).all()
    z2 = torch.zeros(2, C, requires_grad=True)
    ClassHingeEmbeddingLoss()(z2, signed).backward()
    assert (z2.grad.gather(1, y[:, None]) < 0).all()


SYMMETRIC = {
    # sum over every label k of the per-sample loss with reduction='sum' on one sample
    "mae": 2 * (C - 1),  # sum_j |p_j - e_kj| = 2 (1 - p_k); summed over k: 2 (C - 1)
    "rce": -A * (C - 1),  # -A (1 - p_k) summed over k
    "nce": 1.0,  # ratios with a common denominator
    "nce_rce": 1.0 + 10.0 * -A * (C - 1),
}


@pytest.mark.parametrize("name", sorted(SYMMETRIC))
def test_symmetric_losses_sum_to_a_constant_over_labels(name):
    loss = loss_of(name, reduction="sum")
    for seed in range(3):
        z, _ = small_batch(seed, n=1, scale=3.0)
        total = sum(loss(z.float(), torch.tensor([k])).item() for k in range(C))
        assert total == pytest.approx(SYMMETRIC[name], rel=1e-5)


def test_cross_entropy_is_not_symmetric():
    loss = loss_of("ce", reduction="sum")
    totals = [
        sum(loss(small_batch(s, n=1, scale=3.0)[0].float(), torch.tensor([k])).item() for k in range(C))
        for s in range(2)
    ]
    assert totals[0] != pytest.approx(totals[1], rel=1e-3)


@pytest.mark.parametrize("name", MULTICLASS)
def test_reductions_agree(name):
    z, y = small_batch(2)
    z = z.float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # KLDivLoss warns that 'mean' also divides by C
        none = loss_of(name, reduction="none")(z, y)
        mean = loss_of(name, reduction="mean")(z, y)
    total = loss_of(name, reduction="sum")(z, y)
    assert none.shape[0] == len(y)
    assert mean.dim() == 0 and total.dim() == 0
    assert total.item() == pytest.approx(none.sum().item(), rel=1e-5)
    assert mean.item() == pytest.approx(none.mean().item(), rel=1e-5)


LOSSBENCH_DEFINED = sorted(
    {t.rsplit(".", 1)[1] for t in (cfg_of(n).criterion._target_ for n in NAMES) if t.startswith("lossbench.losses.")}
)


@pytest.mark.parametrize("class_name", LOSSBENCH_DEFINED)
def test_lossbench_losses_reject_an_unknown_reduction(class_name):
    cls = getattr(losses, class_name)
    with pytest.raises(ValueError, match="reduction='average' is not known: use one of none, mean, sum"):
        cls(reduction="average")


def test_kl_div_batchmean_is_the_per_sample_kl():
    z, y = small_batch(3)
    per_entry = loss_of("kl_div", reduction="none")(z.float(), y)
    assert loss_of("kl_div")(z.float(), y).item() == pytest.approx(per_entry.sum().item() / len(y), rel=1e-6)


def test_nll_equals_ce():
    z, y = small_batch(4)
    z1, z2 = z.float().requires_grad_(), z.float().requires_grad_()
    a, b = loss_of("ce")(z1, y), loss_of("nll")(z2, y)
    a.backward()
    b.backward()
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    torch.testing.assert_close(z1.grad, z2.grad)


def test_kl_div_with_smoothing_is_label_smoothing_minus_a_constant():
    z, y = small_batch(5)
    z1, z2 = z.float().requires_grad_(), z.float().requires_grad_()
    kl = build_loss(OmegaConf.merge(cfg_of("kl_div"), {"smoothing": 0.1}), C)(z1, y)
    ls = loss_of("label_smoothing")(z2, y)
    kl.backward()
    ls.backward()
    entropy = -(0.91 * math.log(0.91) + 9 * 0.01 * math.log(0.01))
    assert kl.item() == pytest.approx(ls.item() - entropy, rel=1e-5)
    torch.testing.assert_close(z1.grad, z2.grad)


def test_focal_gamma_zero_and_poly1_epsilon_zero_are_cross_entropy():
    z, y = small_batch(6)
    ce = loss_of("ce")(z.float(), y).item()
    assert loss_of("focal", gamma=0.0)(z.float(), y).item() == pytest.approx(ce, rel=1e-6)
    assert loss_of("poly1", epsilon=0.0)(z.float(), y).item() == pytest.approx(ce, rel=1e-6)


def test_bce_prob_instability_as_documented():
    """A wrong class at z = 20: BCEWithLogitsLoss says ≈20 with gradient ≈1 per entry; BCELoss on the
    rounded sigmoid (σ(20) == 1.0 in float32) says 100 (its log clamp) with gradient 0."""
    assert torch.tensor(20.0).sigmoid().item() == 1.0
    z = torch.tensor([[20.0, 0.0]], requires_grad=True)
    target = torch.tensor([1])  # class 0 is wrong and sure of itself
    stable = loss_of("bce", num_classes=2, reduction="none")(z, target)
    stable[0, 0].backward()
    assert stable[0, 0].item() == pytest.approx(20.0 + math.log1p(math.exp(-20.0)), rel=1e-6)
    assert z.grad[0, 0].item() == pytest.approx(1.0, rel=1e-6)
    z.grad = None
    naive = loss_of("bce_prob", num_classes=2, reduction="none")(z, target)
    naive[0, 0].backward()
    assert naive[0, 0].item() == 100.0
    assert z.grad[0, 0].item() == 0.0


# --------------------------------------------------------------------------------------------------
# Precision and devices
# --------------------------------------------------------------------------------------------------


def _check_dtype_device(name, dtype, device):
    z, y = small_batch(7, n=16)
    reference = loss_of(name)(z.float(), y).item()
    z_low = z.to(dtype=dtype, device=device).requires_grad_()
    value = loss_of(name).to(device)(z_low, y.to(device))
    value.backward()
    assert value.dtype == torch.float32 and value.dim() == 0
    assert torch.isfinite(value)
    assert z_low.grad.dtype == dtype and torch.isfinite(z_low.grad).all()
    assert value.item() == pytest.approx(reference, rel=3e-2, abs=1e-2)


@pytest.mark.parametrize("name", MULTICLASS)
def test_bfloat16_logits_give_the_float32_value(name):
    _check_dtype_device(name, torch.bfloat16, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", MULTICLASS)
def test_cuda(name, dtype):
    _check_dtype_device(name, dtype, "cuda")


# --------------------------------------------------------------------------------------------------
# Training: a few SGD steps lower every loss
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MULTICLASS)
def test_sgd_steps_lower_the_loss(name):
    torch.manual_seed(0)
    x = torch.randn(64, 20) / math.sqrt(20)
    y = torch.randint(0, C, (64,))
    model = nn.Linear(20, C)
    loss = loss_of(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        before = loss(model(x), y).item()
    for _ in range(5):
        optimizer.zero_grad()
        loss(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        after = loss(model(x), y).item()
    assert after < before, (before, after)


# --------------------------------------------------------------------------------------------------
# The YAMLs and build_loss
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", LOSS_FILES, ids=NAMES)
def test_every_yaml_builds_and_trains_one_step(path):
    classes = 2 if path.stem in TWO_CLASS else C
    loss = build_loss(OmegaConf.load(path), classes)
    z = torch.randn(8, classes, requires_grad=True)
    value = loss(z, torch.randint(0, classes, (8,)))
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value)
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("path", LOSS_FILES, ids=NAMES)
def test_yaml_format(path):
    text = path.read_text(encoding="utf-8")
    cfg = OmegaConf.load(path)
    assert text.startswith("#"), "a comment header says what the loss computes"
    assert "# formula:" in text
    assert set(cfg.keys()) <= set(LOSS_KEYS)
    assert cfg.name == path.stem
    assert cfg.input in INPUT_TRANSFORMS and cfg.target in TARGET_ENCODINGS


def test_table_lists_every_loss(capsys):
    rows = loss_table()
    assert [r["name"] for r in rows] == NAMES
    assert all(r["formula"] for r in rows)
    losses.main([])
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert "gamma=0.5" in out and "alpha=1.0, beta=10.0, log_zero=-9.210340371976182" in out


def test_docs_table_is_current():
    docs = Path(__file__).resolve().parents[1] / "docs" / "losses.md"
    assert format_table(loss_table(), markdown=True) in docs.read_text(encoding="utf-8"), (
        "docs/losses.md is stale: paste in the output of python -m lossbench.losses --markdown"
    )


def test_build_loss_defaults_and_plain_dicts():
    loss = build_loss({"criterion": {"_target_": "torch.nn.CrossEntropyLoss"}}, C)
    assert (loss.input, loss.target, loss.smoothing) == ("logits", "index", 0.0)


CE = {"name": "ce", "criterion": {"_target_": "torch.nn.CrossEntropyLoss"}, "input": "logits", "target": "index"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"input": "probs"}, r"loss.input='probs' is invalid: expected one of logits, softmax, sigmoid, log_softmax"),
        ({"target": "hot"}, r"loss.target='hot' is invalid: expected one of index, onehot, signed"),
        ({"targt": "index"}, r"loss.targt is not a loss key: use name, criterion, input, target, smoothing"),
        ({"smoothing": 0.1}, r"loss.smoothing=0.1 smooths a one-hot target, but loss.target='index'"),
        ({"target": "onehot", "smoothing": 1.5}, r"loss.smoothing=1.5 must lie in \[0, 1\)"),
        ({"criterion": {}}, r"loss.criterion._target_ is missing"),
        ({"criterion": {"_target_": "builtins.dict"}}, r"must build a torch.nn.Module, got dict"),
    ],
)
def test_build_loss_errors_name_the_key(change, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build_loss({**CE, **change}, C)


def test_wrong_number_of_classes_is_reported():
    with pytest.raises(ValueError, match=r"logits of shape \(N, 10\), got \(4, 3\)"):
        loss_of("ce")(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))


# --------------------------------------------------------------------------------------------------
# Hydra: loss=<name>, hyper-parameter overrides, and a user's own loss with no change to lossbench
# --------------------------------------------------------------------------------------------------


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_hyper_parameters_override_from_the_command_line():
    cfg = _compose(["loss=focal", "loss.criterion.gamma=2"])
    loss = build_loss(cfg.loss, C)
    assert loss.criterion.gamma == 2
    cfg = _compose(["loss=kl_div", "loss.smoothing=0.1"])
    assert build_loss(cfg.loss, C).smoothing == 0.1


def test_user_loss_by_target_on_the_command_line():
    from user_losses import MyLoss

    cfg = _compose(
        ["loss=ce", "loss.name=mine", "loss.criterion._target_=user_losses.MyLoss", "+loss.criterion.temperature=2.0"]
    )
    loss = build_loss(cfg.loss, C)
    assert isinstance(loss.criterion, MyLoss) and loss.criterion.temperature == 2.0
    z, y = small_batch(8)
    expected = nn.functional.cross_entropy(z.float() / 2.0, y).item()
    assert loss(z.float(), y).item() == pytest.approx(expected, rel=1e-6)


def test_user_loss_yaml_in_their_own_config_dir(tmp_path):
    (tmp_path / "loss").mkdir()
    (tmp_path / "loss" / "mine.yaml").write_text(
        "# My temperature-scaled cross-entropy.\n"
        "# formula: −log softmax(z/T)_y\n"
        "name: mine\n"
        "criterion:\n"
        "  _target_: user_losses.MyLoss\n"
        "  temperature: 0.5\n"
        "input: logits\n"
        "target: index\n"
    )
    cfg = _compose([f"hydra.searchpath=[file://{tmp_path}]", "loss=mine", "loss.criterion.temperature=3"])
    loss = build_loss(cfg.loss, C)
    assert type(loss.criterion).__name__ == "MyLoss" and loss.criterion.temperature == 3
    assert [r["name"] for r in loss_table(tmp_path / "loss")] == ["mine"]


# --------------------------------------------------------------------------------------------------
# NFL as the authors released it: its modulating factors detached
# --------------------------------------------------------------------------------------------------


def released_nfl(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """NormalizedFocalLoss.forward of github.com/HanxunH/Active-Passive-Losses loss.py lines 362-375, written out."""
    logpt = torch.log_softmax(logits, dim=1)
    normalizor = torch.sum(-1 * (1 - logpt.detach().exp()) ** gamma * logpt, dim=1)
    logpt_y = logpt.gather(1, target.view(-1, 1)).view(-1)
    pt = logpt_y.detach().exp()
    return (-1 * (1 - pt) ** gamma * logpt_y / normalizor).mean()


@pytest.mark.parametrize("seed", range(3))
def test_nfl_has_the_released_codes_value_and_gradient_and_detach_false_the_formulas(seed: int):
    z, y = small_batch(seed)
    grads = {}
    for detach in (True, False):
        logits = z.clone().requires_grad_(True)
        value = losses.NFLRCELoss(alpha=1.0, beta=0.0, gamma=0.5, detach=detach)(logits, y)
        value.backward()
        grads[detach] = logits.grad
        assert value.item() == pytest.approx(np.mean(ref_nfl(z.numpy(), y.numpy(), 0.5)), rel=1e-6)
    logits = z.clone().requires_grad_(True)
    released_nfl(logits, y, 0.5).backward()
    torch.testing.assert_close(grads[True].float(), logits.grad.float(), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(grads[False], grads[True], rtol=1e-3, atol=1e-6), "the factors' own gradient"


def test_the_cifar10_settings_of_the_apl_experiment():
    """conf/loss/apl_cifar10/: the authors' CIFAR-10 alpha, beta; their MAE is 1 - p_y (RCE with A = -1)."""
    from lossbench.paths import compose

    z, y = small_batch(4)
    zn, yn = z.numpy(), y.numpy()
    expected = {
        "apl_cifar10/mae": np.mean(1 - p_true(zn, yn)),
        "apl_cifar10/sce": np.mean(0.1 * -np.log(p_true(zn, yn)) + 1.0 * ref_rce(zn, yn)),
        "apl_cifar10/nce_rce": np.mean(ref_nce(zn, yn) + ref_rce(zn, yn)),
        "apl_cifar10/nce_mae": np.mean(ref_nce(zn, yn) + (1 - p_true(zn, yn))),
        "apl_cifar10/nfl_rce": np.mean(ref_nfl(zn, yn, 0.5) + ref_rce(zn, yn)),
        "apl_cifar10/nfl_mae": np.mean(ref_nfl(zn, yn, 0.5) + (1 - p_true(zn, yn))),
    }
    for option, value in expected.items():
        loss = build_loss(compose(f"loss={option}").loss, C)
        assert loss(z, y).item() == pytest.approx(value, rel=1e-6), option


# --------------------------------------------------------------------------------------------------
# bce_single: one sigmoid logit, two classes
# --------------------------------------------------------------------------------------------------


def test_bce_single_matches_its_hand_computation_and_its_gradient():
    z, y = small_batch(4, n=8, c=2)
    z32 = z.float().requires_grad_()
    value = loss_of("bce_single", num_classes=2)(z32, y)
    value.backward()
    assert value.item() == pytest.approx(REFERENCE["bce_single"](z.numpy(), y.numpy()), rel=1e-5)
    s = (z[:, 1] - z[:, 0]).numpy()
    expected = (sigmoid(s) - y.numpy()) / len(y)  # d/ds of the mean BCE, then ds/dz = (-1, +1)
    np.testing.assert_allclose(z32.grad.numpy(), np.stack([-expected, expected], axis=1), rtol=1e-4, atol=1e-7)
    at_zero = loss_of("bce_single", num_classes=2)(torch.zeros(3, 2), torch.tensor([0, 1, 1])).item()
    assert at_zero == pytest.approx(AT_ZERO_LOGITS["bce_single"], rel=1e-5)


def test_bce_single_on_a_one_output_head_is_ce_on_two_logits_the_same_model():
    """The head's output s read as [0, s]: sigmoid(s) is softmax([0, s])[1], and the loss, its NLL, its accuracy and
    its gradient with respect to s are cross-entropy's on those two logits."""
    from lossbench.metrics import yardsticks
    from lossbench.models import SingleLogit

    torch.manual_seed(0)
    x, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    head = SingleLogit(nn.Linear(3, 1))
    logits = head(x)
    s = logits[:, 1]
    assert torch.equal(logits[:, 0], torch.zeros(50))
    torch.testing.assert_close(logits.softmax(dim=1)[:, 1], torch.sigmoid(s))
    bce = loss_of("bce_single", num_classes=2)(logits, y)
    torch.testing.assert_close(bce, nn.functional.cross_entropy(logits, y))
    torch.testing.assert_close(bce, nn.functional.binary_cross_entropy_with_logits(s, y.float()))
    hits = ((torch.sigmoid(s) > 0.5).long() == y).float().mean()
    assert float(yardsticks(logits.detach(), y)["acc"]) == pytest.approx(float(hits))
    # a two-logit softmax model whose logit difference is the single logit: every yardstick the same
    two = nn.Linear(3, 2)
    with torch.no_grad():  # class 0's row is arbitrary; class 1's is it plus the single logit's
        two.weight[1] = two.weight[0] + head.net.weight[0]
        two.bias[1] = two.bias[0] + head.net.bias[0]
        ours, theirs = yardsticks(head(x), y), yardsticks(two(x), y)
        torch.testing.assert_close(two(x).softmax(dim=1), head(x).softmax(dim=1))
    assert {k: float(v) for k, v in ours.items()} == pytest.approx({k: float(v) for k, v in theirs.items()}, rel=1e-5)


def test_bce_single_refuses_other_than_two_classes():
    with pytest.raises(ValueError, match="loss.outputs=1 is one sigmoid logit for two classes, not 10"):
        build_loss(cfg_of("bce_single"), 10)
    with pytest.raises(ValueError, match=r"two classes' logits \(N, 2\), got \(4, 3\)"):
        losses.SingleLogitBCELoss()(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
