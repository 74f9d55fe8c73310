"""Every figure is written as a PNG that loads back with a sensible size."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread

from lossbench import plots


def curves(offset: float = 0.0) -> dict[str, list[float]]:
    return {
        "train/loss": [1.2, 0.7, 0.5, 0.4, 0.35, 0.3],
        "train/acc": [0.6, 0.8, 0.85, 0.88, 0.9, 0.92],
        "train_eval/loss": [1.0, 0.6, 0.45, 0.35, 0.3, 0.25],
        "train_eval/nll": [1.0 + offset, 0.6, 0.45, 0.35, 0.3, 0.25],
        "train_eval/acc": [0.65, 0.82, 0.87, 0.9, 0.92, 0.94],
        "val/loss": [1.0, 0.65, 0.5, 0.52, 0.55, math.nan],
        "val/nll": [1.0, 0.65, 0.5 + offset, 0.52, 0.55, math.nan],
        "val/acc": [0.64, 0.8, 0.84, 0.85, 0.84, math.nan],
    }


def assert_png(path: Path, min_width: int = 400) -> np.ndarray:
    assert path.is_file() and path.suffix == ".png"
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[1] >= min_width and image.shape[0] >= 200
    assert image.std() > 0.01, "the image is blank"
    return image


def test_learning_curves_png(tmp_path: Path) -> None:
    out = plots.learning_curves(curves(), tmp_path / "deep" / "curves.png", title="ce / adam", onset_epoch=2)
    assert out == tmp_path / "deep" / "curves.png"
    image = assert_png(out, min_width=1000)
    assert image.shape[1] > image.shape[0], "three panels side by side"


def test_learning_curves_with_missing_metrics(tmp_path: Path) -> None:
    assert_png(plots.learning_curves({"val/nll": [1.0, 0.9]}, tmp_path / "sparse.png"))
    assert_png(plots.learning_curves({}, tmp_path / "empty.png"))


def test_confusion_matrix_10x10(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 20, size=(10, 10)) + np.diag(np.full(10, 400))
    names = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]
    image = assert_png(plots.confusion_matrix(matrix, tmp_path / "cm.png", class_names=names, title="fashion"))
    assert image.shape[1] >= 600
    assert_png(plots.confusion_matrix(matrix / matrix.sum(), tmp_path / "cm_frac.png"))


def test_confusion_matrix_rejects_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="square"):
        plots.confusion_matrix(np.zeros((10, 9)), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="class names"):
        plots.confusion_matrix(np.eye(3), tmp_path / "bad.png", class_names=["a", "b"])


def test_curve_grid_png(tmp_path: Path) -> None:
    panels = {
        f"{loss} / {opt}": [curves(0.0), curves(0.05)] for loss in ("ce", "mse", "mae") for opt in ("adam", "sgd")
    }
    image = assert_png(plots.curve_grid(panels, tmp_path / "grid.png", title="sweep"), min_width=1200)
    assert image.shape[0] >= 600, "two rows of panels"
    assert_png(plots.curve_grid({"ce / adam": [curves()]}, tmp_path / "one.png"))


def test_grouped_bars_png(tmp_path: Path) -> None:
    gaps = {"ce": {"adam": [0.02, 0.03], "sgd": [0.01]}, "mse": {"adam": [0.0, -0.01], "sgd": [math.nan, 0.02]}}
    assert_png(plots.grouped_bars(gaps, tmp_path / "gap.png", ylabel="accuracy gap", title="gap"))
    assert_png(plots.grouped_bars({"ce": {"": [0.1]}}, tmp_path / "single.png"))


def test_noise_chart_png(tmp_path: Path) -> None:
    best = {"ce": {0.0: [0.92, 0.93], 0.4: [0.85, 0.86]}, "mae": {0.0: [0.9], 0.4: [0.88, 0.87]}}
    last = {"ce": {0.0: [0.92, 0.925], 0.4: [0.7, 0.72]}, "mae": {0.0: [0.9], 0.4: [0.87, 0.87]}}
    assert_png(plots.noise_chart(best, last, tmp_path / "noise.png", title="noise"))


@pytest.mark.parametrize("n, ncols", [(4, 3), (5, 3), (7, 4), (3, 3), (2, 3)])
def test_curve_grid_labels_the_epoch_axis_under_every_column(n: int, ncols: int) -> None:
    panels = {f"loss{i} / adam": [curves()] for i in range(n)}
    fig = plots.curve_grid_figure(panels, ncols=ncols)
    fig.canvas.draw()  # tick labels exist once drawn
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == n
    cols = min(ncols, n)
    by_column: dict[int, list] = {}
    for ax in shown:  # position on the figure, not creation order, tells columns and rows apart
        box = ax.get_position()
        by_column.setdefault(round(box.x0, 3), []).append(ax)
    assert len(by_column) == cols
    for column in by_column.values():
        lowest = min(column, key=lambda ax: ax.get_position().y0)
        for ax in column:
            labels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
            if ax is lowest:
                assert ax.get_xlabel() == "epoch" and labels, (
                    f"{ax.get_title()}: the lowest panel of its column shows epochs"
                )
            else:
                assert ax.get_xlabel() == "" and not labels, (
                    f"{ax.get_title()}: a panel above another repeats no epoch axis"
                )


@pytest.mark.parametrize("epochs", [1, 3, 12])
def test_epoch_axes_show_whole_epochs_only(epochs: int) -> None:
    """A one-epoch run read -0.04 ... 0.04 on its epoch axis; every epoch tick is a whole number in the data."""
    run = {"val/nll": [0.5 - 0.01 * e for e in range(epochs)], "train_eval/nll": [0.4] * epochs}
    fig = plots.curve_grid_figure({"ce / adam": [run], "mae / adam": [run]})  # two panels share the epoch axis
    fig.canvas.draw()
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 2
    for ax in shown:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(t == int(t) for t in ticks), ticks
        assert [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi] == [
            str(int(t)) for t in ticks
        ]
        if epochs == 1:
            assert ticks == [1], "epochs count from 1"


@pytest.mark.parametrize("n, ncols", [(1, 3), (2, 3), (10, 4), (7, 3)])
def test_curve_grid_panels_do_not_overlap(n: int, ncols: int) -> None:
    """Fixed margins (no layout engine): no panel's title, tick labels or axis label runs into another panel or
    the figure's title, with wide tick labels (values in the thousands) and a one-epoch panel among them."""
    big = {"val/nll": [1200.5, 950.25, 1800.75], "train_eval/nll": [1000.0, 800.0, 700.0]}
    panels = {f"loss{i} / adam": [big if i % 2 else curves()] for i in range(n)}
    fig = plots.curve_grid_figure(panels, ncols=ncols, title="val/nll and train_eval/nll per epoch")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible()]
    title = fig._suptitle.get_window_extent(renderer)
    width, height = canvas.get_width_height()
    for i, box in enumerate(boxes):
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, f"panel {i} leaves the figure"
        assert not box.overlaps(title), f"panel {i} runs into the figure's title"
        for j, other in enumerate(boxes[i + 1 :], i + 1):
            assert not box.overlaps(other), f"panels {i} and {j} overlap"
