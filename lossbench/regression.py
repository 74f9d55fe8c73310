"""A regression task on images: predict the angle each image was rotated by (``data.task=regression``).

Textbook claim 1 ("MSE is sensitive to outliers; MAE is more robust") is about regression errors that get squared,
so it is tested on a regression task: every image of a classification data set is rotated by its own angle, drawn
uniformly in ``[-degrees, degrees]`` from a seed, and the model's one output predicts that angle (in units of
``degrees``: the clean targets lie in ``[-1, 1]``). A share of the *training* targets is then replaced by gross errors
(:func:`outlier_targets`); validation and test targets stay clean. Every loss is judged on the same yardsticks, the
root mean squared and the mean absolute error against the clean targets, in degrees (:func:`yardsticks`).

The pieces, each at its seam with the classification path:

- :class:`RotatedImages`: the data (an :class:`~lossbench.data.ImageData` whose held images are rotated once at load
  time, whose labels are the targets);
- :class:`RegressionLoss` / :func:`build_loss`: torch's own criterion (``MSELoss``, ``L1Loss``, ``HuberLoss``,
  ``SmoothL1Loss``) on the one output and the target;
- :class:`RegressionModule`: the LightningModule with the regression yardsticks in place of accuracy, NLL and ECE.

The config rules that refuse classification-only options on a regression run live in lossbench.config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from lossbench.config import OUTLIER_KINDS, REGRESSION_CRITERIA
from lossbench.data import ImageData, Splits
from lossbench.errors import ConfigError
from lossbench.module import LossbenchModule
from lossbench.names import (
    EVAL_PREFIXES,
    REGRESSION_YARDSTICKS,
    TEST_PREFIX,
    TRAIN_EVAL_PREFIX,
    TRAIN_MAE_DEG,
)
from lossbench.noise import _label_hash  # the SHA-256 of int64 rows, as for label noise

CHUNK = 4096  # images rotated at once (bounds the sampling grid's memory)


# ------------------------------------------------------------------------------------------ the data


def draw_angles(n: int, degrees: float, seed: int) -> Tensor:
    """``n`` angles drawn uniformly in ``[-degrees, degrees]`` (float32) from ``seed`` alone."""
    generator = torch.Generator().manual_seed(int(seed))
    return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1).mul_(degrees).float()


def rotate(images: Tensor, angles: Tensor, fill: float | Tensor = 0.0) -> Tensor:
    """Each image ``(N, C, H, W)`` rotated counter-clockwise by its own angle in degrees about its centre, bilinear,
    the corners it uncovers filled with ``fill`` (a number, or ``(1, C, 1, 1)`` per channel): torchvision's
    ``rotate(img, angle, InterpolationMode.BILINEAR, fill=...)`` per image, vectorised (one sampling grid per chunk)."""
    out = torch.empty_like(images, dtype=torch.float32)
    fill = torch.as_tensor(fill, dtype=torch.float32).reshape(1, -1, 1, 1) if torch.is_tensor(fill) else float(fill)
    n, c, h, w = images.shape
    for start in range(0, n, CHUNK):
        x = images[start : start + CHUNK].float() - fill
        theta = torch.deg2rad(angles[start : start + CHUNK].double())
        cos, sin = torch.cos(theta), torch.sin(theta)
        # output pixel (x, y) samples the input at R(-angle) (x, y); y points down in image coordinates, so a
        # counter-clockwise turn of the picture is this matrix in affine_grid's normalised coordinates
        # (scaled by w/h on non-square images so the turn is a rotation in pixels).
        matrix = torch.zeros(len(x), 2, 3, dtype=torch.float64)
        matrix[:, 0, 0], matrix[:, 0, 1] = cos, -sin * h / w
        matrix[:, 1, 0], matrix[:, 1, 1] = sin * w / h, cos
        grid = F.affine_grid(matrix.float(), [len(x), c, h, w], align_corners=False)
        out[start : start + CHUNK] = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[start : start + CHUNK] += fill
    return out


@dataclass(frozen=True)
class OutlierReport:
    """Which training targets were replaced: how many, their share, and a hash of their rows (reproducibility)."""

    target_outliers: int
    target_outlier_rate: float
    target_outlier_hash: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def outlier_targets(
    clean: Tensor, rate: float, kind: str, degrees: float, seed: int, unit: float
) -> tuple[Tensor, OutlierReport]:
    """A copy of the targets ``clean`` (in units of ``unit`` degrees) with exactly ``round(rate * N)`` of them, drawn
    from ``seed``, replaced by gross errors: ``uniform`` draws a new angle uniformly in ``[-degrees, degrees]``,
    whatever the image shows; ``offset`` adds ``+degrees`` or ``-degrees`` (a fair coin) to the true angle."""
    if kind not in OUTLIER_KINDS:
        raise ConfigError(f"data.outliers.kind={kind!r} is invalid: expected one of {', '.join(OUTLIER_KINDS)}")
    n = len(clean)
    k = round(rate * n)
    generator = torch.Generator().manual_seed(int(seed))
    rows = torch.randperm(n, generator=generator)[:k].sort().values
    noisy = clean.clone()
    if kind == "uniform":
        noisy[rows] = ((torch.rand(k, generator=generator, dtype=torch.float64) * 2 - 1) * degrees / unit).float()
    else:
        signs = torch.randint(0, 2, (k,), generator=generator).float() * 2 - 1
        noisy[rows] = clean[rows] + signs * (degrees / unit)
    return noisy, OutlierReport(k, k / n if n else 0.0, _label_hash(rows) if k else "none")


class RotatedImages(ImageData):
    """A data set's images, each rotated by its own angle; the target is that angle over ``rotation.degrees``.

    Keywords: those of :class:`~lossbench.data.ImageData` (its ``label_noise`` must stay off: labels are not the
    targets), plus ``task`` (``regression``), ``rotation`` (``degrees``: the largest angle, ``seed``: what draws the
    angles; the training, validation and test splits draw theirs from ``seed * 3 + 0, 1, 2``) and ``outliers``
    (``rate``, ``kind`` (:data:`OUTLIER_KINDS`), ``degrees``, ``seed``: :func:`outlier_targets`, training targets only).
    The class labels are read and checked as for classification, then dropped.
    """

    def __init__(
        self,
        *,
        task: str = "regression",
        rotation: Mapping[str, Any] | None = None,
        outliers: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.task = task
        self.rotation = {"degrees": 45.0, "seed": 0, **dict(rotation or {})}
        self.outliers = {"rate": 0.0, "kind": "uniform", "degrees": 180.0, "seed": 0, **dict(outliers or {})}

    @property
    def target_scale(self) -> float:
        """Degrees per unit of target: a prediction of 1.0 is ``rotation.degrees``."""
        return float(self.rotation["degrees"])

    def _cache_key(self) -> tuple | None:
        key = super()._cache_key()
        return None if key is None else (key, repr(sorted(self.rotation.items())), repr(sorted(self.outliers.items())))

    def _read_and_split(self) -> None:
        super()._read_and_split()
        s, scale, seed = self.splits, self.target_scale, int(self.rotation["seed"])
        fill = 0.0 if self.hold == "uint8" else (-self.transform.mean / self.transform.std)
        held = []
        for k, x in enumerate((s.train_x, s.val_x, s.test_x)):  # each split its own angles
            angles = draw_angles(len(x), scale, seed * 3 + k)
            rotated = rotate(x, angles, fill)
            if x.dtype == torch.uint8:
                rotated = rotated.round_().clamp_(0, 255).to(torch.uint8)
            held.append((rotated, angles / scale))
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = held
        o = self.outliers
        noisy_y, report = outlier_targets(
            train_y, float(o["rate"]), o["kind"], float(o["degrees"]), int(o["seed"]), scale
        )
        if report.target_outliers:
            self.noise_report.update(report.as_dict())
        self.splits = Splits(
            train_x=train_x,
            train_y=noisy_y,
            val_x=val_x,
            val_y=val_y,
            test_x=test_x,
            test_y=test_y,
            train_eval_idx=s.train_eval_idx,
            train_true_y=train_y if report.target_outliers else None,
        )

    @property
    def class_names(self) -> None:
        return None  # no classes: the target is a number


# ------------------------------------------------------------------------------------------ the loss


class RegressionLoss(nn.Module):
    """torch's pointwise criterion on the model's one output ``(N, 1)`` and the targets ``(N,)``."""

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return self.criterion(output[:, 0], target)


def build_loss(loss_cfg: Any) -> RegressionLoss:
    """The loss of a regression run: ``loss.criterion`` (one of :data:`REGRESSION_CRITERIA`), nothing else of the
    loss's config (``input`` and ``target`` say how a classifier's logits and labels are shaped)."""
    target = loss_cfg.criterion.get("_target_")
    if target not in REGRESSION_CRITERIA:
        names = ", ".join(REGRESSION_CRITERIA)
        raise ConfigError(f"loss={loss_cfg.name}: a regression run takes one of {names}, not {target}")
    return RegressionLoss(instantiate(loss_cfg.criterion))


# ------------------------------------------------------------------------------------------ the yardsticks


def yardsticks(output: Tensor, clean: Tensor, scale: float) -> dict[str, Tensor]:
    """Root mean squared and mean absolute error of the one output ``(N, 1)`` against the clean targets ``(N,)``, in
    degrees (targets and output are in units of ``scale`` degrees)."""
    error = (output[:, 0].double() - clean.double()) * scale
    rmse, mae = REGRESSION_YARDSTICKS
    return {rmse: error.square().mean().sqrt().float(), mae: error.abs().mean().float()}


class RegressionModule(LossbenchModule):
    """The LightningModule of a regression run: the same training loop (several optimizer steps per Lightning step),
    scored by :func:`yardsticks` against the clean targets on validation, ``train_eval`` and test.

    ``scale``: degrees per unit of target; ``train_eval_clean``: the clean targets of the ``train_eval`` rows when the
    training targets hold outliers (their yardsticks are against those; ``train_eval/loss`` against what it trains on).
    """

    SCORE, SCORE_DTYPE = TRAIN_MAE_DEG, torch.float32

    def __init__(self, *args: Any, scale: float, train_eval_clean: Tensor | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.scale, self.train_eval_clean = float(scale), train_eval_clean

    def _score(self, output: Tensor, target: Tensor) -> Tensor:
        return (output[:, 0].detach() - target).abs().sum() * self.scale

    def _results(self, dataloader_idx: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        output = torch.cat([o[0] for o in self._eval_outputs[dataloader_idx]])
        target = torch.cat([o[1] for o in self._eval_outputs[dataloader_idx]])
        clean = target
        if EVAL_PREFIXES[dataloader_idx] == TRAIN_EVAL_PREFIX and self.train_eval_clean is not None:
            clean = self.train_eval_clean.to(target.device)
        return output, target, {"loss": self.loss(output, target), **yardsticks(output, clean, self.scale)}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._collect(batch, 0)

    def on_test_epoch_end(self) -> None:
        _, _, results = self._results(0)
        self._eval_outputs = {}
        self.log_dict({f"{TEST_PREFIX}{k}": v for k, v in results.items()})
