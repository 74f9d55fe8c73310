"""Figures for runs and reports, written as PNG files.

Built on matplotlib's object API (:class:`matplotlib.figure.Figure`), which needs no GUI backend and
keeps no global figure registry, so these functions are safe in headless jobs and in loops. Every
function writes one PNG (creating its folder) and returns its path.

Curves are the same mapping as in :mod:`lossbench.analysis`: metric name -> per-epoch values,
index = epoch, ``NaN`` where missing (drawn as a gap).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from lossbench.analysis import Curves
from lossbench.names import (
    FIRST_EPOCH,
    OBJECTIVE,
    TRAIN_ACC,
    TRAIN_EVAL_ACC,
    TRAIN_EVAL_LOSS,
    TRAIN_EVAL_NLL,
    TRAIN_EVAL_PREFIX,
    TRAIN_LOSS,
    VAL_ACC,
    VAL_LOSS,
    VAL_NLL,
    VAL_PREFIX,
)
from lossbench.stats import seed_order

DPI = 100
PathLike = str | Path

# (metric, legend label, line style) per learning-curve panel; colour = train / train_eval / val.
_COLOURS = {"train": "tab:gray", TRAIN_EVAL_PREFIX: "tab:blue", VAL_PREFIX: "tab:orange"}
_PANELS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "own loss",
        (
            (TRAIN_LOSS, "train (running mean)", ":"),
            (TRAIN_EVAL_LOSS, "train (eval mode)", "-"),
            (VAL_LOSS, "validation", "-"),
        ),
    ),
    ("NLL (cross-entropy of softmax)", ((TRAIN_EVAL_NLL, "train (eval mode)", "-"), (VAL_NLL, "validation", "-"))),
    (
        "accuracy",
        (
            (TRAIN_ACC, "train (running mean)", ":"),
            (TRAIN_EVAL_ACC, "train (eval mode)", "-"),
            (VAL_ACC, "validation", "-"),
        ),
    ),
)


def _save(fig: Figure, path: PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(
        out, dpi=DPI, format="png", pil_kwargs={"compress_level": 1}
    )  # fast zlib level: ~5x quicker, files ~1.5x larger
    return out


def _epoch_axis(ax: Axes, label: bool = True) -> None:
    """Epochs are whole numbers: integer ticks only, and a one-epoch run's axis one epoch wide around its point
    (it would otherwise read -0.04 ... 0.04). Call it once the curves are drawn."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax.get_xlim()
    if hi - lo <= 1:  # equal: a panel sharing the axis of one already set here
        middle = round((lo + hi) / 2)
        ax.set_xlim(middle - 0.5, middle + 0.5)
        ax.set_xticks([middle])
    ax.set_xlabel("epoch" if label else "")


def _colour(metric: str) -> str:
    return _COLOURS.get(metric.split("/", 1)[0], "tab:green")


def _plot_curve(ax: Axes, values: Sequence[float], **style: object) -> bool:
    """Draw one per-epoch curve; markers when there are few epochs. False when it has no finite value."""
    y = np.asarray(values, dtype=float)
    if y.size == 0 or not np.isfinite(y).any():
        return False
    ax.plot(np.arange(y.size) + FIRST_EPOCH, y, marker="o" if y.size <= 25 else None, markersize=3, **style)  # type: ignore[arg-type]
    return True


SELECTED_STYLE = {"color": "tab:green", "linestyle": ":", "linewidth": 1.2}
ONSET_STYLE = {"color": "tab:red", "linestyle": "--", "linewidth": 1.0}


def selected_label(epoch: int | None = None, selected_by: str = OBJECTIVE) -> str:
    """The legend's words for the selected epoch: the raw curve's best, whose checkpoint is tested."""
    where = f"selected epoch {epoch}" if epoch is not None else "selected epoch (each run)"
    return f"{where}: highest raw {selected_by}, tested"


def onset_label(epoch: int | None = None) -> str:
    """The legend's words for the onset: the smoothed validation curve's peak, after which the run overfits."""
    where = f"overfits after epoch {epoch}" if epoch is not None else "overfits after (each run)"
    return f"{where}: smoothed validation peak"


def _mark_epochs(
    ax: Axes,
    selected_epoch: int | None,
    onset_epoch: int | None,
    label: bool,
    selected_by: str = OBJECTIVE,
    per_run: bool = False,
) -> None:
    """Vertical lines: the selected epoch dotted green, the overfitting onset dashed red.

    ``per_run``: the legend names the kind of line, not one run's epoch (a panel holds several runs).
    """
    if selected_epoch is not None:
        text = selected_label(None if per_run else selected_epoch, selected_by)
        ax.axvline(selected_epoch, **SELECTED_STYLE, label=text if label else None)
    if onset_epoch is not None:
        text = onset_label(None if per_run else onset_epoch)
        ax.axvline(onset_epoch, **ONSET_STYLE, label=text if label else None)


_UNITS = {"own loss": "the run's own loss", "NLL (cross-entropy of softmax)": "NLL", "accuracy": "accuracy"}


def learning_curves(
    curves: Curves,
    path: PathLike,
    title: str = "",
    onset_epoch: int | None = None,
    selected_epoch: int | None = None,
    selected_by: str = OBJECTIVE,
) -> Path:
    """Three panels against epoch: the run's own loss, NLL, accuracy; train, train (eval mode), validation.

    ``selected_epoch`` (the checkpoint tested as ``test/*``, best raw ``selected_by``) is marked with a dotted
    vertical line, ``onset_epoch`` (the smoothed validation peak, see :func:`lossbench.analysis.judge`) with a
    dashed one; one legend below the panels says which is which, off the data. Panels whose metrics are all
    missing say so.
    """
    return _save(learning_curves_figure(curves, title, onset_epoch, selected_epoch, selected_by), path)


def learning_curves_figure(
    curves: Curves,
    title: str = "",
    onset_epoch: int | None = None,
    selected_epoch: int | None = None,
    selected_by: str = OBJECTIVE,
) -> Figure:
    """:func:`learning_curves` as a matplotlib Figure (to inspect, or to save elsewhere)."""
    # Fixed margins, not a layout engine: "constrained" lays the figure out by drawing it, doubling its cost per run.
    fig = Figure(figsize=(14, 4.6))
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.25, top=0.87 if title else 0.92, wspace=0.22)
    axes = fig.subplots(1, len(_PANELS))
    for ax, (name, series) in zip(axes, _PANELS):
        drawn = [
            _plot_curve(ax, curves.get(metric, ()), color=_colour(metric), linestyle=style, label=label)
            for metric, label, style in series
        ]
        if not any(drawn):
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", va="center", color="gray")
        _mark_epochs(ax, selected_epoch, onset_epoch, label=ax is axes[0], selected_by=selected_by)
        ax.set_title(name)
        ax.set_ylabel(_UNITS[name])
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 5), fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def confusion_matrix(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    path: PathLike,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """A C×C confusion matrix, rows = true class, columns = predicted class.

    Cells are coloured by the row-normalised fraction (recall per true class) and annotated with the
    raw value (counts as integers).
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a confusion matrix must be square (C×C), got shape {m.shape}")
    n = m.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}×{n} matrix")
    row_sums = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, row_sums, out=np.zeros_like(m), where=row_sums > 0)
    integer = bool(np.all(np.isfinite(m)) and np.all(m == np.round(m)))

    size = max(5.0, 0.55 * n + 2.5)
    fig = Figure(figsize=(size + 1.0, size))  # fixed margins: see learning_curves
    long_names = max(map(len, names), default=0) > 2
    fig.subplots_adjust(
        left=0.1 + 0.012 * max(0, max(map(len, names), default=0) - 2),
        right=0.98,
        bottom=0.16 if long_names else 0.1,
        top=0.92,
    )
    ax = fig.subplots()
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="fraction of the true class", shrink=0.8)
    for i in range(n):
        for j in range(n):
            text = f"{int(m[i, j])}" if integer else f"{m[i, j]:.2f}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize="small" if n <= 12 else "x-small",
                color="white" if frac[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(n), names, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix")
    return _save(fig, path)


def curve_grid(
    panels: Mapping[str, Sequence[Curves]],
    path: PathLike,
    metrics: Sequence[str] = (VAL_NLL, TRAIN_EVAL_NLL),
    title: str = "",
    ncols: int = 3,
    marks: Mapping[str, Sequence[tuple[int | None, int | None]]] | None = None,
    seeds: Mapping[str, Sequence[str]] | None = None,
    ylabel: str = "NLL",
) -> Path:
    """One small panel per group (e.g. loss × optimizer), its runs (seeds) overlaid: :func:`curve_grid_figure` as a PNG."""
    return _save(curve_grid_figure(panels, metrics, title, ncols, marks, seeds, ylabel), path)


def _grid_margins(fig: Figure, rows: int, cols: int, title: str, legend_rows: int) -> None:
    """Fixed margins in inches for a grid of panels (titles on top, tick labels left and below, "epoch" below
    the lowest panels, the legend below everything): the constrained layout engine lays a figure out by drawing
    it, which doubled the cost of the report's largest figure (~2 s for 10 panels here)."""
    width, height = fig.get_size_inches()
    left, right, top = 0.75, 0.15, 0.35 + (0.3 if title else 0.0)
    bottom = 0.55 + 0.22 * legend_rows
    gap_w, gap_h = 0.75, 0.7  # the next panel's tick labels; a panel's title above, tick labels and label below
    axes_w = (width - left - right - gap_w * (cols - 1)) / cols
    axes_h = (height - top - bottom - gap_h * (rows - 1)) / rows
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=gap_w / axes_w,
        hspace=gap_h / axes_h,
    )


_METRIC_STYLES = ("-", "--", ":", "-.")


def curve_grid_figure(
    panels: Mapping[str, Sequence[Curves]],
    metrics: Sequence[str] = (VAL_NLL, TRAIN_EVAL_NLL),
    title: str = "",
    ncols: int = 3,
    marks: Mapping[str, Sequence[tuple[int | None, int | None]]] | None = None,
    seeds: Mapping[str, Sequence[str]] | None = None,
    ylabel: str = "NLL",
) -> Figure:
    """One small panel per group (e.g. loss × optimizer), its runs (seeds) overlaid.

    Each metric keeps one line style across panels (solid, dashed, ...); each seed one colour across panels
    (``seeds[group]`` names each run's seed; without it, runs are numbered). Panels share the epoch axis but not
    the value axis (a diverged loss would flatten the others); the leftmost carry ``ylabel``. The lowest panel
    of every column carries the epoch ticks and label, also when the last row is not full. ``marks[group]``
    gives each run's ``(selected epoch, onset epoch)``, drawn as in :func:`learning_curves`. The legend sits
    below the panels, off the data.
    """
    if not panels:
        raise ValueError("curve_grid needs at least one panel")
    n = len(panels)
    cols = max(1, min(ncols, n))
    rows = math.ceil(n / cols)
    named = {g: list((seeds or {}).get(g) or [f"run {i + 1}" for i in range(len(r))]) for g, r in panels.items()}
    palette = {
        seed: f"C{i % 10}" for i, seed in enumerate(sorted({s for v in named.values() for s in v}, key=seed_order))
    }
    entries = len(metrics) + len(palette) + 2
    legend_rows = math.ceil(entries / max(1, 2 * cols))
    fig = Figure(figsize=(4.6 * cols, 3.3 * rows + 0.6 + 0.22 * legend_rows))
    _grid_margins(fig, rows, cols, title, legend_rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, squeeze=False)).ravel()
    for ax, (name, runs) in zip(axes, panels.items()):
        for m_index, metric in enumerate(metrics):
            for seed, curves in zip(named[name], runs):
                _plot_curve(
                    ax,
                    curves.get(metric, ()),
                    color=palette[seed],
                    linestyle=_METRIC_STYLES[m_index % 4],
                    linewidth=1.2,
                )
        for selected, onset in (marks or {}).get(name, ()):
            _mark_epochs(ax, selected, onset, label=False, per_run=True)
        ax.set_title(f"{name}  (n={len(runs)})", fontsize="medium")
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    for index, ax in enumerate(axes[:n]):
        lowest = index + cols >= n  # no panel below it in its column
        ax.tick_params(axis="x", labelbottom=lowest)
        _epoch_axis(ax, label=lowest)
        if index % cols == 0:
            ax.set_ylabel(ylabel)
    handles = [Line2D([], [], color="0.3", linestyle=_METRIC_STYLES[i % 4], label=m) for i, m in enumerate(metrics)]
    handles += [
        Line2D([], [], color=colour, label=f"seed {seed}" if not str(seed).startswith("run") else seed)
        for seed, colour in palette.items()
    ]
    handles += [
        Line2D([], [], **SELECTED_STYLE, label=selected_label()),
        Line2D([], [], **ONSET_STYLE, label=onset_label()),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 2 * cols), fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def _group_mean(runs: Sequence[Sequence[float]], scale: float) -> np.ndarray:
    width = max((len(r) for r in runs), default=0)
    matrix = np.full((len(runs), width), np.nan)
    for i, run in enumerate(runs):
        matrix[i, : len(run)] = np.asarray(run, dtype=float) * scale
    with np.errstate(all="ignore"):
        return np.nanmean(matrix, axis=0) if width else np.array([])


OVERVIEW_CAPTION = (
    "Smoothed val NLL above its lowest, as the verdict reads it at each epoch: left while train_eval NLL fell "
    "(overfitting once past the dashed margin), right while it rose too (calibration drift, not overfitting)."
)
"""What the overview chart shows, in one sentence, printed under it (and the report's alternative text)."""


def overfit_overview(
    overfit: Mapping[str, Sequence[Sequence[float]]],
    drift: Mapping[str, Sequence[Sequence[float]]],
    path: PathLike,
    margin: float = 0.10,
    scale: float = 100.0,
    title: str = "",
) -> Path:
    """Overfitting and drift for every group at once, side by side on one scale: per epoch, the mean over a group's
    runs of :func:`lossbench.analysis.overfit_curves`'s two NLL rises (``overfit[group]`` and ``drift[group]``, one
    list per run), with the verdict's ``margin`` dashed, so the loss the verdicts call overfitting is the one that
    stands out on the left. The y axis starts at 0 and reaches at least twice the margin: a wobble of 0.01 % stays
    flat. One colour per group (``tab10``, distinct for up to 10). 540 px wide, so it fits MLflow's description pane
    at a 1280-px window."""
    rows = math.ceil(len(overfit) / 3)
    fig = Figure(figsize=(5.4, 3.4 + 0.2 * rows))
    fig.subplots_adjust(left=0.12, right=0.98, top=0.83 if title else 0.9, bottom=0.22 + 0.05 * rows, wspace=0.08)
    axes = fig.subplots(1, 2, sharey=True)
    top = 2 * margin * scale
    for ax, series, what in ((axes[0], overfit, "overfitting"), (axes[1], drift, "drift")):
        for index, name in enumerate(overfit):
            mean = _group_mean(series.get(name, ()), scale)
            ax.plot(np.arange(len(mean)) + FIRST_EPOCH, mean, color=f"C{index % 10}", linewidth=1.6, label=name)
            if np.isfinite(mean).any():
                top = max(top, float(np.nanmax(mean)) * 1.08)
        ax.axhline(margin * scale, color="0.4", linestyle="--", linewidth=0.9)
        _epoch_axis(ax, label=False)
        ax.set_xlabel("epoch", fontsize="small")
        ax.set_title(what, fontsize="small")
        ax.tick_params(labelsize="small")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, top)
    axes[0].set_ylabel("val NLL above its lowest (%)", fontsize="small")
    handles = axes[0].get_legend_handles_labels()
    fig.legend(
        *handles,
        loc="upper center",
        ncol=3,
        fontsize="x-small",
        frameon=False,
        bbox_to_anchor=(0.5, 0.12 + 0.05 * rows),
    )
    fig.text(0.5, 0.005, OVERVIEW_CAPTION, ha="center", va="bottom", fontsize=6.5, wrap=True)
    if title:
        fig.suptitle(title, fontsize="medium")
    return _save(fig, path)


def budget_curves(
    budgets: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: PathLike, title: str = ""
) -> Path:
    """Expected best validation accuracy (%) against the number of settings tried, one line per group with a band
    of ± one standard deviation (lossbench.stats.expected_best)."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for index, (name, (expected, spread)) in enumerate(budgets.items()):
        k = np.arange(1, len(expected) + 1)
        mean, std = np.asarray(expected) * 100, np.asarray(spread) * 100
        ax.plot(k, mean, color=f"C{index % 10}", marker="o", markersize=3, label=name)
        ax.fill_between(k, mean - std, mean + std, color=f"C{index % 10}", alpha=0.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("settings tried")
    ax.set_ylabel("expected best val acc (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def grouped_bars(
    values: Mapping[str, Mapping[str, Sequence[float]]], path: PathLike, ylabel: str = "", title: str = ""
) -> Path:
    """Bars of mean ± sample std (error bars), one group per outer key, one bar per inner key.

    ``values[group][series]`` holds one number per run (e.g. the accuracy gap of each seed); the runs
    themselves are drawn as dots over their bar. Use it for the generalisation gap per loss, with one
    bar per optimizer. A dashed line marks zero.
    """
    if not values:
        raise ValueError("grouped_bars needs at least one group")
    groups = list(values)
    series = list(dict.fromkeys(s for g in groups for s in values[g]))
    width = 0.8 / max(1, len(series))
    fig = Figure(figsize=(max(6.0, 1.1 * len(groups) * max(1, len(series)) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    for s_index, name in enumerate(series):
        xs = np.arange(len(groups)) + (s_index - (len(series) - 1) / 2) * width
        stats = [_mean_std(values[g].get(name, ())) for g in groups]
        ax.bar(
            xs,
            [m for m, _ in stats],
            width=width * 0.9,
            yerr=[s for _, s in stats],
            capsize=4,
            color=f"C{s_index}",
            alpha=0.75,
            label=name if len(series) > 1 else None,
        )
        for x, g in zip(xs, groups):
            points = [p for p in values[g].get(name, ()) if p is not None and math.isfinite(p)]
            ax.scatter([x] * len(points), points, color="black", s=10, zorder=3)
    ax.axhline(0.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(groups)), groups, rotation=20 if len(groups) > 4 else 0)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def noise_chart(
    best: Mapping[str, Mapping[float, Sequence[float]]],
    last: Mapping[str, Mapping[float, Sequence[float]]],
    path: PathLike,
    ylabel: str = "test accuracy",
    title: str = "",
) -> Path:
    """Test accuracy against label-noise rate, one colour per loss: best epoch solid, last epoch dashed.

    ``best[loss][rate]`` and ``last[loss][rate]`` hold one value per run; points are mean ± sample std.
    The vertical distance between a loss's two lines is its memorisation drop.
    """
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    for index, loss in enumerate(dict.fromkeys([*best, *last])):
        for data, style, which in ((best, "-", "best epoch"), (last, "--", "last epoch")):
            by_rate = data.get(loss, {})
            rates = sorted(by_rate)
            if not rates:
                continue
            stats = [_mean_std(by_rate[r]) for r in rates]
            ax.errorbar(
                rates,
                [m for m, _ in stats],
                yerr=[s for _, s in stats],
                color=f"C{index}",
                linestyle=style,
                marker="o",
                markersize=4,
                capsize=3,
                label=f"{loss} ({which})",
            )
    ax.set_xlabel("label-noise rate")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def memorisation_curves(
    panels: Mapping[str, Mapping[str, Sequence[Sequence[float]]]], path: PathLike, title: str = ""
) -> Path:
    """The memorised fraction of flipped training labels against epoch: one panel per label-noise rate,
    one colour per loss; thin lines are runs, the thick line their mean."""
    if not panels:
        raise ValueError("memorisation_curves needs at least one panel")
    fig = Figure(figsize=(5.2 * len(panels), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    for ax, (name, by_loss) in zip(axes, panels.items()):
        for index, (loss, runs) in enumerate(by_loss.items()):
            width = max((len(r) for r in runs), default=0)
            matrix = np.full((len(runs), width), np.nan)
            for i, run in enumerate(runs):
                matrix[i, : len(run)] = np.asarray(run, dtype=float)
                ax.plot(
                    np.arange(len(run)) + FIRST_EPOCH,
                    matrix[i, : len(run)],
                    color=f"C{index}",
                    linewidth=0.8,
                    alpha=0.4,
                )
            with np.errstate(all="ignore"):
                mean = np.nanmean(matrix, axis=0) if width else np.array([])
            ax.plot(np.arange(width) + FIRST_EPOCH, mean, color=f"C{index}", linewidth=2, label=loss)
        ax.set_title(name)
        _epoch_axis(ax)
        ax.set_ylabel("flipped labels predicted as labelled")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
