r"""Synthetic label noise: corrupt a training set's labels at a known rate, reproducibly.

Pure functions, no I/O. The data module calls :func:`corrupt_labels` once on the training labels;
validation and test labels stay clean, so a loss's robustness shows as clean test accuracy.

Two kinds, as in the noisy-label literature (Ma et al. 2020, Sec. 5; Zhang & Sabuncu 2018):

**symmetric** (uniform) noise with rate :math:`\eta` over :math:`C` classes has the transition
matrix

.. math::
    T_{ij} = P(\tilde y = j \mid y = i) = \begin{cases} 1 - \eta & i = j \\
    \eta / (C - 1) & i \neq j \end{cases}

i.e. a flipped label always lands on a *different* class, chosen uniformly among the other
:math:`C - 1`. (Some papers, e.g. Zhang & Sabuncu 2018, draw over all :math:`C` classes so the true
one can be redrawn, which makes the real rate :math:`\eta (C-1)/C`; lossbench does not.)

**asymmetric** (class-dependent) noise flips a fraction :math:`\eta` of some classes to one
visually similar class each, by a class map that belongs to the data set (``data.noise_map`` in its
YAML, ``[[source, target], ...]``): for MNIST the protocol of Patrini et al. 2017, used by Ma et al. 2020,
7→1, 2→7, 5↔6, 3→8; for CIFAR-10 truck→automobile, bird→airplane, deer→horse, cat↔dog; every class
the map does not name is untouched.

Rather than flipping each label with probability :math:`\eta` (whose count varies from draw to
draw), both kinds flip an *exact* number of labels, sampled without replacement, so a run's
noise rate is the rate asked, and two runs at one rate differ only in which labels were flipped.

**Corrupted inputs** (:func:`corrupt_images`, ``data.input_noise``): outliers of another kind, whose *image* is
wrong and whose label is right. Exactly :math:`\mathrm{round}(\eta N)` training images, drawn uniformly without
replacement from the noise's own seed, are

- ``uniform``: replaced by an image of independent uniform pixels in 0..255 (no trace of its class: an outlier far
  from every class, still carrying its label), or
- ``gaussian``: perturbed by independent Gaussian noise of standard deviation ``std`` times the pixel range (255),
  rounded and clipped to 0..255.

Validation and test images stay clean.

References:
    - X. Ma, H. Huang, Y. Wang, S. Romano, S. Erfani, J. Bailey. "Normalized Loss Functions for
      Deep Learning with Noisy Labels." ICML 2020. https://arxiv.org/abs/2006.13554
    - G. Patrini, A. Rozza, A. K. Menon, R. Nock, L. Qu. "Making Deep Neural Networks Robust to
      Label Noise: a Loss Correction Approach." CVPR 2017. https://arxiv.org/abs/1609.03683
    - Z. Zhang, M. R. Sabuncu. "Generalized Cross Entropy Loss for Training Deep Neural Networks
      with Noisy Labels." NeurIPS 2018. https://arxiv.org/abs/1805.07836
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

import torch
from torch import Tensor

from lossbench.config import check  # the rules for rate and kind: config.RULES, shared with config validation
from lossbench.errors import ConfigError

_INPUT_RATE_KEY, _INPUT_KIND_KEY, _INPUT_STD_KEY = (
    "data.input_noise.rate",
    "data.input_noise.kind",
    "data.input_noise.std",
)
_RATE_KEY = "data.label_noise.rate"
_KIND_KEY = "data.label_noise.kind"
_MAP_KEY = "data.noise_map"


@dataclass(frozen=True)
class NoiseReport:
    """What :func:`corrupt_labels` did, for logging next to the run.

    Attributes:
        rate: the noise rate asked for.
        kind: ``symmetric`` or ``asymmetric``.
        seed: the noise seed.
        num_samples: number of labels :math:`N`.
        flipped: number of labels that now differ from the clean ones.
        fraction_flipped: ``flipped / N``, the rate actually applied (below ``rate`` for
            asymmetric noise, which touches only some classes).
        flipped_per_class: labels flipped away from each clean class, indexed by class.
        label_hash: first 16 hex digits of the SHA-256 of the noisy labels as little-endian int64
            bytes; equal hashes mean identical noisy label vectors.
    """

    rate: float
    kind: str
    seed: int
    num_samples: int
    flipped: int
    fraction_flipped: float
    flipped_per_class: tuple[int, ...]
    label_hash: str

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain scalars (no tuples, no tensors) for MLflow params/metrics; the per-class counts
        are left out."""
        out = asdict(self)
        del out["flipped_per_class"]
        return out


def corrupt_labels(
    labels: Tensor,
    rate: float,
    kind: str,
    seed: int,
    num_classes: int = 10,
    class_map: Sequence[Sequence[int]] | None = None,
) -> tuple[Tensor, NoiseReport]:
    r"""Return a noisy copy of ``labels`` and a :class:`NoiseReport`; ``labels`` is left untouched.

    Args:
        labels: 1-D integer tensor of class indices in ``[0, num_classes)``, on any device.
        rate: noise rate :math:`\eta \in [0, 1)` (config key ``data.label_noise.rate``). ``0``
            returns an unchanged copy. For ``asymmetric`` noise a rate above 0.5 makes the wrong
            class the majority of its source class (the flip is then learnable, not noise); it is
            allowed, but rarely what an experiment means.
        kind: ``symmetric`` or ``asymmetric`` (config key ``data.label_noise.kind``); see the
            module docstring for their definitions.
        seed: seeds a local ``torch.Generator``; the global RNG is neither read nor advanced, so
            the noise depends on this seed alone, not on the run's training seed.
        num_classes: :math:`C`.
        class_map: ``[[source, target], ...]``, the data set's map for ``asymmetric`` noise
            (``data.noise_map``); each source class at most once, never onto itself. Unused by ``symmetric``.

    Counts (:math:`n_c` = samples of clean class :math:`c`, :math:`N = \sum_c n_c`; ``round`` is
    Python's, i.e. half to even, applied to the decimal value of ``rate`` so ``0.29 * 100`` is 29):

    - **symmetric** flips exactly :math:`K = \mathrm{round}(\eta N)` labels, balanced per class by
      largest remainders (Hamilton apportionment): class :math:`c` first gets
      :math:`\lfloor \eta n_c \rfloor`, then the :math:`K - \sum_c \lfloor \eta n_c \rfloor`
      left over go one each to the classes with the largest fractional part of :math:`\eta n_c`
      (ties broken at random by the seed). So every class loses :math:`\lfloor \eta n_c \rfloor`
      or :math:`\lceil \eta n_c \rceil` labels, never more than 1 away from :math:`\eta n_c`,
      and the total is exactly :math:`K`. Each flipped label moves to one of the other
      :math:`C - 1` classes, uniformly; none maps to itself.
    - **asymmetric** flips exactly :math:`\mathrm{round}(\eta n_c)` labels of each source class
      :math:`c` of ``class_map`` to its target; the samples are chosen among the
      *clean* labels, so a 5 that became a 6 is never flipped back by 6→5.

    Which samples of a class are flipped is a uniform draw without replacement.

    Raises:
        ValueError: on a rate outside ``[0, 1)`` or an unknown kind (a ``ConfigError`` by config.RULES),
            labels that are not a 1-D integer tensor with values in ``[0, num_classes)``, or a class map
            that does not fit.

    Shape:
        - labels: :math:`(N)`
        - output: :math:`(N)`, same dtype and device as ``labels``
    """
    check(_RATE_KEY, rate)
    check(_KIND_KEY, kind)
    rate_exact = Fraction(repr(float(rate)))  # exact: round(0.29 * 100) is 29
    seed = operator.index(seed)
    num_classes = operator.index(num_classes)
    clean = _check_labels(labels, num_classes)
    pairs = _check_map(class_map, num_classes) if kind == "asymmetric" else []

    noisy = _flip(clean, rate_exact, kind, pairs, num_classes, torch.Generator().manual_seed(seed))
    changed = noisy != clean
    flipped_per_class = torch.bincount(clean[changed], minlength=num_classes).tolist()
    flipped = int(changed.sum())
    n = clean.numel()
    report = NoiseReport(
        rate=float(rate),
        kind=kind,
        seed=seed,
        num_samples=n,
        flipped=flipped,
        fraction_flipped=flipped / n if n else 0.0,
        flipped_per_class=tuple(flipped_per_class),
        label_hash=_label_hash(noisy),
    )
    return noisy.to(device=labels.device, dtype=labels.dtype), report


def _flip(
    clean: Tensor, rate: Fraction, kind: str, pairs: list[tuple[int, int]], num_classes: int, gen: torch.Generator
) -> Tensor:
    """A copy of ``clean`` with the labels flipped as :func:`corrupt_labels` says."""
    noisy = clean.clone()
    per_class = torch.bincount(clean, minlength=num_classes).tolist()
    if rate == 0:
        return noisy
    if kind == "symmetric":
        for c, k in enumerate(_apportion(rate, per_class, gen)):
            idx = _pick(clean, c, k, gen)
            # An offset in [1, C) skips the true class and is uniform over the other C - 1.
            offset = torch.randint(1, num_classes, (k,), generator=gen)
            noisy[idx] = (c + offset) % num_classes
    else:
        for source, target in pairs:
            noisy[_pick(clean, source, round(rate * per_class[source]), gen)] = target
    return noisy


def _check_labels(labels: Tensor, num_classes: int) -> Tensor:
    """A CPU int64 copy of ``labels`` after checking shape, dtype and range."""
    if not isinstance(labels, Tensor) or labels.dim() != 1:
        raise ValueError("labels must be a 1-D tensor of class indices")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of class indices; got {labels.dtype}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2; got {num_classes}")
    clean = labels.detach().to(device="cpu", dtype=torch.int64)
    if clean.numel() and (int(clean.min()) < 0 or int(clean.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got min {int(clean.min())}, max {int(clean.max())}")
    return clean


def _check_map(class_map: Sequence[Sequence[int]] | None, num_classes: int) -> list[tuple[int, int]]:
    """The asymmetric map as ``(source, target)`` pairs of distinct classes in ``[0, num_classes)``, each source once."""
    if not class_map:
        raise ConfigError(
            f"{_KIND_KEY}=asymmetric needs the data set's class map ({_MAP_KEY} in its conf/data YAML), and it has "
            f"none: set {_MAP_KEY}=[[source,target],...] or use {_KIND_KEY}=symmetric"
        )
    pairs = []
    for pair in class_map:
        pair = tuple(pair)
        if len(pair) != 2 or not all(isinstance(c, int) and not isinstance(c, bool) for c in pair):
            raise ConfigError(f"{_MAP_KEY}: {list(pair)} is not a [source, target] pair of class indices")
        if not all(0 <= c < num_classes for c in pair) or pair[0] == pair[1]:
            raise ConfigError(f"{_MAP_KEY}: {list(pair)} must map a class in [0, {num_classes}) to another one")
        pairs.append(pair)
    sources = [source for source, _ in pairs]
    if len(set(sources)) != len(sources):
        raise ConfigError(f"{_MAP_KEY}: a class is the source of two pairs in {[list(p) for p in pairs]}")
    return pairs


def _apportion(rate: Fraction, per_class: list[int], gen: torch.Generator) -> list[int]:
    """Split round(rate * N) flips over classes by largest remainders, ties broken by ``gen``."""
    total = round(rate * sum(per_class))
    shares = [rate * n for n in per_class]
    counts = [math.floor(s) for s in shares]
    tiebreak = torch.randperm(len(per_class), generator=gen).tolist()
    order = sorted(range(len(per_class)), key=lambda c: (-(shares[c] - counts[c]), tiebreak[c]))
    # At most one extra per class, and only to classes with a nonzero remainder: the leftover is
    # an integer no larger than sum(remainders) + 1/2, and each remainder is below 1.
    for c in order[: total - sum(counts)]:
        counts[c] += 1
    return counts


def _pick(labels: Tensor, cls: int, k: int, gen: torch.Generator) -> Tensor:
    """Indices of ``k`` samples of class ``cls``, drawn uniformly without replacement."""
    members = (labels == cls).nonzero().flatten()
    return members[torch.randperm(members.numel(), generator=gen)[:k]]


def _label_hash(labels: Tensor) -> str:
    data = labels.to(torch.int64).numpy().astype("<i8", copy=False).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class InputNoiseReport:
    r"""What :func:`corrupt_images` did, for logging next to the run (as ``noise.input_*`` tags).

    Attributes:
        rate, kind, std, seed: as asked (``data.input_noise.*``).
        num_samples: images :math:`N`.
        corrupted: images corrupted, :math:`\mathrm{round}(\eta N)`.
        index_hash: first 16 hex digits of the SHA-256 of the corrupted images' sorted indices (little-endian
            int64): equal hashes mean the same images were corrupted.
    """

    rate: float
    kind: str
    std: float
    seed: int
    num_samples: int
    corrupted: int
    index_hash: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def corrupt_images(
    images: Tensor, rate: float, kind: str, seed: int, std: float = 0.5
) -> tuple[Tensor, InputNoiseReport]:
    r"""Return a copy of the uint8 ``images`` with exactly :math:`\mathrm{round}(\eta N)` of them corrupted, and an
    :class:`InputNoiseReport`; ``images`` is left untouched.

    Args:
        images: uint8 tensor ``(N, ...)`` (one image per row: ``(N, C, H, W)`` as the data module holds them).
        rate: :math:`\eta \in [0, 1)` (``data.input_noise.rate``); ``0`` returns an unchanged copy.
        kind: ``uniform`` (each chosen image replaced by uniform pixels in 0..255) or ``gaussian`` (each chosen image
            plus Gaussian noise of standard deviation ``std · 255``, rounded, clipped to 0..255); see the module
            docstring.
        seed: seeds a local ``torch.Generator``, which draws which images (uniformly, without replacement) and
            their noise: the corruption depends on this seed alone, not on the run's training seed.
        std: the Gaussian noise's standard deviation as a fraction of the pixel range (``gaussian`` only).

    Shape:
        - images: :math:`(N, *)`, uint8
        - output: the same shape, dtype and device
    """
    check(_INPUT_RATE_KEY, rate)
    check(_INPUT_KIND_KEY, kind)
    check(_INPUT_STD_KEY, std)
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() < 2:
        raise ValueError("images must be a uint8 tensor with one image per row, e.g. (N, C, H, W)")
    gen = torch.Generator().manual_seed(operator.index(seed))
    n = images.shape[0]
    k = round(Fraction(repr(float(rate))) * n)  # exact: round(0.29 * 100) is 29
    chosen = torch.randperm(n, generator=gen)[:k]
    out = images.detach().to("cpu").clone()
    shape = (k, *images.shape[1:])
    if kind == "uniform":
        out[chosen] = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    else:
        noise = torch.randn(shape, generator=gen) * (float(std) * 255)
        out[chosen] = (out[chosen].float() + noise).round().clamp(0, 255).to(torch.uint8)
    digest = hashlib.sha256(chosen.sort().values.numpy().astype("<i8", copy=False).tobytes()).hexdigest()[:16]
    report = InputNoiseReport(float(rate), kind, float(std), int(seed), n, k, digest)
    return out.to(images.device), report
