"""Figures for ordinal-loss experiments: ground distances, confusion, curves, comparisons.

matplotlib (the ``train`` extra) is imported only when a function here is called, so
``import emdloss`` never needs it. Figures are built as plain ``matplotlib.figure.Figure``
objects outside pyplot and rendered by the Agg canvas: no display, no global backend switch,
nothing to close. Every function returns the ``Figure``; with ``path`` it also writes a PNG
atomically (a temporary file in the same directory, then :func:`os.replace`), so a reader
never sees half a file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emdloss._atomic import atomic_write
from emdloss._figure import (
    _as_matrix,
    _check_names,
    _fixed_grid,
    _laid_out,
    _new_figure,
    _text_inches,
)
from emdloss.vocabulary import HIGHER_IS_BETTER

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_confusion_matrices",
    "plot_confusion_matrix",
    "plot_distributions",
    "plot_ground_distance",
    "plot_learning_curves",
    "plot_metric_by_group",
    "plot_per_class_mae",
    "plot_runs_by_group",
    "save_figure",
]


_DPI = 120


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and return the path.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to save.
    path : str or PathLike
        Destination; its directory is created if needed.

    Returns
    -------
    Path
        The destination.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> fig = _new_figure((2.0, 2.0))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     out = save_figure(fig, pathlib.Path(d) / "curve.png")
    ...     out.read_bytes()[:4]
    b'\\x89PNG'
    """
    dest = Path(path)
    # A figure laid out by a layout engine (this module's are) is written as it is: a "tight"
    # bounding box would measure every text again (about a tenth of the cost, issue 20).
    tight = None if _laid_out(fig) else "tight"
    atomic_write(
        dest, lambda handle: fig.savefig(handle, format="png", dpi=_DPI, bbox_inches=tight)
    )
    return dest


def _finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def _annotated_heatmap(
    ax: Axes,
    values: np.ndarray,
    names: list[str],
    fmt: str,
    cmap: str,
    center: bool,
    vmax: float | None = None,
) -> Any:
    if center:
        span = float(np.abs(values).max()) or 1.0
        image = ax.imshow(values, cmap=cmap, vmin=-span, vmax=span)
    elif vmax is not None:  # several panels on one scale
        image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax)
    else:
        image = ax.imshow(values, cmap=cmap)
    c = len(names)
    ax.set_xticks(range(c), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(c), labels=names)
    if c <= 30:  # beyond that the numbers are unreadable
        for i in range(c):
            for j in range(c):
                v = values[i, j]
                # Dark text on light cells and vice versa, from the cell's own colour (in
                # viridis high values are light, in Blues dark).
                r, g, b, _ = image.cmap(image.norm(v))
                light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
                ax.text(
                    j,
                    i,
                    format(v, fmt),
                    ha="center",
                    va="center",
                    fontsize=max(5, 10 - c // 4),
                    color="black" if light else "white",
                )
    return image


def plot_ground_distance(
    matrix: Any,
    class_names: Sequence[str],
    path: str | os.PathLike[str] | None = None,
    ax: Axes | None = None,
    *,
    title: str = "Ground distance",
    fmt: str = ".2f",
    caption: str | None = None,
) -> Figure:
    """Heatmap of a ``(C, C)`` ground-distance (cost) matrix with its values written in.

    A diverging colour map centred at 0 is used when the matrix has negative entries (the
    learned matrix of :class:`emdloss.ground.LearnedGroundDistance`), a sequential one
    otherwise. Rows are the true class, columns the predicted class. A matrix whose diagonal is
    not zero gets a caption under the title saying why: the learned matrix sets it to 1 by the
    paper's convention (it weights the true-class term of the loss), which looks like a bug to
    anyone reading it as a distance.

    Parameters
    ----------
    matrix : Tensor or array-like
        ``(C, C)`` finite matrix.
    class_names : sequence of str
        ``C`` names for the axes.
    path : str or PathLike, optional
        Write a PNG there (atomically).
    ax : matplotlib Axes, optional
        Draw into this axes instead of a new figure.
    title : str
        Axes title.
    fmt : str
        Format of the annotations.
    caption : str, optional
        Second title line; default: explains a non-zero diagonal (none for a zero diagonal).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import torch
    >>> from emdloss.ground import ordinal_ground_distance
    >>> fig = plot_ground_distance(ordinal_ground_distance(3), ["low", "mid", "high"])
    >>> fig.axes[0].get_title()
    'Ground distance'
    >>> learned = torch.tensor([[1.0, -0.2], [-0.2, 1.0]])
    >>> print(plot_ground_distance(learned, ["a", "b"]).axes[0].get_title())
    Ground distance
    diagonal = 1 by the paper's convention
    (it weights the true-class term), not a distance
    """
    values = _as_matrix(matrix, "matrix")
    names = _check_names(class_names, values.shape[0])
    if ax is None:
        size = max(4.0, 0.6 * len(names) + 2.0)
        fig = _new_figure((size + 1.0, size))
        ax = fig.subplots()
    else:
        root = ax.get_figure(root=True)
        if root is None:
            raise ValueError("ax must belong to a figure")
        fig = root
    center = bool((values < 0).any())
    image = _annotated_heatmap(ax, values, names, fmt, "RdBu_r" if center else "viridis", center)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if caption is None:
        diagonal = np.diag(values)
        if np.all(diagonal == 1.0):
            caption = (
                "diagonal = 1 by the paper's convention\n(it weights the true-class term), "
                "not a distance"
            )
        elif np.any(diagonal != 0.0):
            caption = "the diagonal is not zero: a training cost, not a distance"
    ax.set_title(f"{title}\n{caption}" if caption else title, fontsize=10 if caption else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _finish(fig, path)


def plot_confusion_matrix(
    cm: Any,
    class_names: Sequence[str],
    path: str | os.PathLike[str] | None = None,
    *,
    normalize: str | None = "true",
    title: str = "Confusion matrix",
) -> Figure:
    """Heatmap of a confusion matrix (rows: true class, columns: predicted class).

    Parameters
    ----------
    cm : Tensor or array-like
        ``(C, C)`` counts.
    class_names : sequence of str
        ``C`` names.
    path : str or PathLike, optional
        Write a PNG there (atomically).
    normalize : {"true", "pred", "all", None}
        As scikit-learn's ``confusion_matrix``: divide by row sums (recall per class), column
        sums, the total, or show counts. Empty rows/columns stay 0.
    title : str
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_confusion_matrix([[5, 1], [2, 2]], ["a", "b"], normalize=None)
    >>> fig.axes[0].texts[1].get_text()
    '1'
    """
    values, fmt = _normalised(cm, "cm", normalize)
    names = _check_names(class_names, values.shape[0])
    size = max(4.0, 0.6 * len(names) + 2.0)
    fig = _new_figure((size + 1.0, size))
    ax = fig.subplots()
    image = _annotated_heatmap(ax, values, names, fmt, "Blues", center=False)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title if normalize is None else f"{title} (normalised over {normalize})")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _finish(fig, path)


def _normalised(cm: Any, name: str, normalize: str | None) -> tuple[np.ndarray, str]:
    """A confusion matrix normalised as scikit-learn's ``normalize`` and its number format."""
    counts = _as_matrix(cm, name)
    if (counts < 0).any():
        raise ValueError(f"{name} must hold non-negative counts")
    if normalize not in ("true", "pred", "all", None):
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, got {normalize!r}")
    if normalize is None:
        return counts, ".0f" if np.all(counts == np.round(counts)) else ".2f"
    axis = {"true": 1, "pred": 0, "all": None}[normalize]
    total = counts.sum(axis=axis, keepdims=axis is not None)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0), ".2f"


def plot_confusion_matrices(
    matrices: Mapping[str, Any],
    class_names: Sequence[str],
    path: str | os.PathLike[str] | None = None,
    *,
    normalize: str | None = "true",
    title: str = "Confusion matrices",
) -> Figure:
    """Confusion matrices side by side, one panel per group (e.g. a loss), on one colour scale.

    Each panel is drawn as :func:`plot_confusion_matrix` draws one (rows: true class, columns:
    predicted class, values written in), with margins fixed from the lengths of the class
    names rather than measured by a layout engine, so that a comparison can draw one such
    figure per data set cheaply.

    Parameters
    ----------
    matrices : mapping of str to Tensor or array-like
        ``{group: (C, C) counts}`` in display order (e.g. the pooled test predictions of a
        loss's runs).
    class_names : sequence of str
        ``C`` names.
    path : str or PathLike, optional
        Write a PNG there (atomically).
    normalize : {"true", "pred", "all", None}
        As :func:`plot_confusion_matrix`; with ``"true"`` each row is the share of that true
        class predicted as each class.
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_confusion_matrices({"ce": [[5, 1], [2, 2]], "emd2": [[6, 0], [1, 3]]}, ["a", "b"])
    >>> [ax.get_title() for ax in fig.axes[:2]], fig.axes[1].texts[2].get_text()
    (['ce', 'emd2'], '0.25')
    """
    if not matrices:
        raise ValueError("matrices is empty: nothing to plot")
    shown = {str(group): _normalised(cm, f"matrices[{group!r}]", normalize)
             for group, cm in matrices.items()}  # fmt: skip
    sizes = {values.shape[0] for values, _ in shown.values()}
    if len(sizes) != 1:
        raise ValueError(f"matrices must share one shape (C, C), got sizes {sorted(sizes)}")
    names = _check_names(class_names, sizes.pop())
    # Margins from the longest class name: y labels on the left, x labels rotated by 45 degrees.
    label = max(_text_inches(n, 8) for n in names)
    side = min(4.0, max(2.2, 0.38 * len(names) + 0.6))
    fig, axes = _fixed_grid(
        1,
        len(shown),
        (side, side),
        left=label + 0.65,
        right=0.2,
        top=0.75,
        bottom=0.72 * label + 0.6,
        wgap=label + 0.2,
        hgap=0.0,
    )
    fmt_of = {group: fmt for group, (_, fmt) in shown.items()}
    span = max(float(values.max()) for values, _ in shown.values()) or 1.0
    for ax, (group, (values, _)) in zip(axes[0], shown.items(), strict=True):
        _annotated_heatmap(ax, values, names, fmt_of[group], "Blues", center=False, vmax=span)
        ax.tick_params(labelsize=8)
        ax.set_title(group, fontsize=10)
        ax.set_xlabel("predicted class", fontsize=9)
    axes[0, 0].set_ylabel("true class", fontsize=9)
    how = "" if normalize is None else f" (normalised over {normalize})"
    fig.suptitle(title + how, fontsize=11)
    return _finish(fig, path)


def _item_label(item: Any, width: int = 28) -> str:
    """A panel title for an item: a path's file name, shortened in the middle to ``width``.

    The middle goes because image ids often share a long prefix (a folder) and a suffix (the
    extension), and differ in the characters between.
    """
    text = str(item).replace("\\", "/").rsplit("/", 1)[-1] or str(item)
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}\u2026{text[len(text) - (width - 1 - head) :]}"


def plot_distributions(
    probs: Any,
    targets: Any,
    class_names: Sequence[str],
    path: str | os.PathLike[str] | None = None,
    *,
    ids: Sequence[Any] | None = None,
    items: int = 6,
    title: str = "Test items: predicted and true distributions",
) -> Figure:
    """Bar charts of a few items' predicted and true distributions side by side.

    The items shown are spread evenly over the rows (the first, the last and evenly spaced ones
    between), so the picture does not depend on a random draw.

    Parameters
    ----------
    probs : Tensor or array-like, or mapping of str to one
        ``(N, C)`` predicted distributions, or several models' (``{"ce": ..., "emd2": ...}``,
        the same items in the same order), drawn beside each other and the truth.
    targets : Tensor or array-like
        ``(N, C)`` true distributions.
    class_names : sequence of str
        ``C`` level names.
    path : str or PathLike, optional
        Write a PNG there (atomically).
    ids : sequence, optional
        Item names for the panel titles (default the row numbers); a path is shown by its file
        name, and a name longer than 28 characters loses its middle (``…``), not its start.
    items : int
        How many items to show (at most ``N``).
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_distributions([[0.2, 0.8], [0.6, 0.4]], [[0.0, 1.0], [0.5, 0.5]], ["lo", "hi"])
    >>> len(fig.axes)
    2
    >>> fig = plot_distributions({"ce": [[0.2, 0.8]], "emd2": [[0.3, 0.7]]}, [[0.0, 1.0]], ["lo", "hi"])
    >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    ['true', 'ce', 'emd2']
    """

    def array(x: Any) -> np.ndarray:
        return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=float)

    models = (
        {str(k): array(v) for k, v in probs.items()}
        if isinstance(probs, Mapping)
        else {"predicted": array(probs)}
    )
    t = array(targets)
    for label, p in models.items():
        if p.ndim != 2 or p.shape != t.shape or p.shape[0] == 0:
            raise ValueError(
                f"probs {label!r} {p.shape} and targets {t.shape} must have the same shape (N, C)"
            )
    if not models:
        raise ValueError("probs: no model to draw")
    names = _check_names(class_names, t.shape[1])
    count = max(1, min(int(items), t.shape[0]))
    rows = np.unique(np.linspace(0, t.shape[0] - 1, count).round().astype(int))
    columns = min(3, len(rows))
    lines = math.ceil(len(rows) / columns)
    bars = 1 + len(models)
    width = max(0.35 * len(names) * bars / 2, 1.5)
    fig = _new_figure((columns * (width + 1.8), lines * 2.6 + 0.6))
    axes = np.atleast_1d(fig.subplots(lines, columns, squeeze=False).ravel())
    x = np.arange(len(names))
    step = 0.8 / bars
    offsets = (np.arange(bars) - (bars - 1) / 2) * step
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for ax, row in zip(axes, rows, strict=False):
        ax.bar(x + offsets[0], t[row], width=step, label="true", color="0.6")
        for k, (label, p) in enumerate(models.items()):
            ax.bar(
                x + offsets[k + 1], p[row], width=step, label=label, color=colours[k % len(colours)]
            )
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(_item_label(ids[row] if ids is not None else row), fontsize=8)
    for ax in axes[len(rows) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    return _finish(fig, path)


_SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}
_METRIC_NAMES = {
    "mae": "MAE",
    "rmse": "RMSE",
    "amae": "AMAE",
    "qwk": "QWK",
    "rps": "RPS",
    "one_off_accuracy": "1-off accuracy",
    "kl": "KL",
    "emd2": "EMD^2",
}


def _panel_title(panel: str, splits: list[str]) -> str:
    # "validation MAE (lower is better)": the split and the direction, not just "mae".
    name = _METRIC_NAMES.get(panel, panel.replace("_", " "))
    if panel.endswith(tuple(HIGHER_IS_BETTER)):
        name += " (higher is better)"
    elif panel in _METRIC_NAMES or panel == "loss":
        name += " (lower is better)"
    if len(splits) == 1 and splits[0] in _SPLIT_NAMES:
        return f"{_SPLIT_NAMES[splits[0]]} {name}"
    return name


def plot_learning_curves(
    history: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str] | None = None,
    *,
    xlabel: str = "epoch",
    title: str = "Learning curves",
    best_epoch: int | None = None,
    warmup_epochs: int | None = None,
) -> Figure:
    """Line plot of per-epoch series, one panel per metric name, epochs numbered from 1.

    Series named ``train_X`` and ``val_X`` (or ``X/train``, ``X/val``) share one panel ``X``;
    each panel is titled with what it shows ("validation MAE (lower is better)", "loss:
    training and validation"). The selected epoch and the end of a warm-up (where a recipe
    adds its EMD term and the loss jumps) are marked in every panel.

    Parameters
    ----------
    history : mapping of str to sequence of float
        E.g. ``{"train_loss": [...], "val_loss": [...], "val_mae": [...]}``. NaN entries
        (epochs without that value) are left as gaps.
    path : str or PathLike, optional
        Write a PNG there (atomically).
    xlabel, title : str
        Labels.
    best_epoch : int, optional
        The selected epoch (1-based), drawn as a dashed line.
    warmup_epochs : int, optional
        Epochs of warm-up; its end (between epochs ``warmup_epochs`` and ``warmup_epochs + 1``)
        is drawn as a dotted line.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_learning_curves({"train_loss": [1.0, 0.6], "val_loss": [1.1, 0.8]})
    >>> len(fig.axes)
    1
    >>> fig = plot_learning_curves({"val_mae": [0.9, 0.7, 0.8]}, best_epoch=2, warmup_epochs=1)
    >>> fig.axes[0].get_title(), fig.axes[0].get_legend_handles_labels()[1]
    ('validation MAE (lower is better)', ['validation', 'best epoch 2', 'end of warm-up (1 epoch)'])
    """
    if not history:
        raise ValueError("history is empty: nothing to plot")
    panels: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, series in history.items():
        arr = np.asarray(list(series), dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"history[{name!r}] must be a 1-D sequence, got shape {arr.shape}")
        panel, split = name, name
        for prefix in ("train_", "val_", "test_"):
            if name.startswith(prefix):
                panel, split = name[len(prefix) :], prefix[:-1]
        for suffix in ("/train", "/val", "/test"):
            if name.endswith(suffix):
                panel, split = name[: -len(suffix)], suffix[1:]
        panels.setdefault(panel, []).append((split, arr))
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _new_figure((4.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (panel, lines) in zip(axes.flat, panels.items(), strict=False):
        for split, arr in lines:
            epochs = np.arange(1, len(arr) + 1)
            label = _SPLIT_NAMES.get(split, split)
            ax.plot(epochs, arr, marker="o" if len(arr) <= 30 else None, ms=3, label=label)
        ax.set_title(_panel_title(panel, [split for split, _ in lines]), fontsize=10)
        if best_epoch is not None:
            ax.axvline(
                best_epoch, color="tab:green", ls="--", lw=1, label=f"best epoch {best_epoch}"
            )
        if warmup_epochs:
            plural = "s" if warmup_epochs != 1 else ""
            ax.axvline(
                warmup_epochs + 0.5,
                color="tab:gray",
                ls=":",
                lw=1.2,
                label=f"end of warm-up ({warmup_epochs} epoch{plural})",
            )
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(lines) > 1 or best_epoch is not None or warmup_epochs:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.remove()
    fig.suptitle(title)
    return _finish(fig, path)


def plot_runs_by_group(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | os.PathLike[str] | None = None,
    *,
    marks: Mapping[str, Mapping[str, int]] | None = None,
    ylabel: str = "value",
    xlabel: str = "epoch",
    title: str = "Learning curves",
) -> Figure:
    """Per-epoch curves of many runs: one panel per group (e.g. a loss), a line per run.

    The panels share their y axis, so groups compare at a glance; epochs are numbered from 1;
    a run's marked epoch (the one model selection chose) is a larger filled marker on its line.
    Margins are fixed, not measured by a layout engine (a comparison draws one such figure per
    data set).

    Parameters
    ----------
    curves : mapping of str to mapping of str to sequence of float
        ``{group: {run: per-epoch values}}`` in display order; NaN entries are gaps.
    path : str or PathLike, optional
        Write a PNG there (atomically).
    marks : mapping, optional
        ``{group: {run: epoch}}``, 1-based epochs to mark.
    ylabel, xlabel, title : str
        Labels.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_runs_by_group({"ce": {"seed0": [0.9, 0.7], "seed1": [0.8, 0.75]},
    ...                           "emd2": {"seed0": [0.8, 0.6]}}, marks={"ce": {"seed0": 2}})
    >>> [ax.get_title() for ax in fig.axes], [t.get_text() for t in fig.legends[0].get_texts()]
    (['ce', 'emd2'], ['seed0', 'seed1', 'selected epoch'])
    """
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    cols = min(4, len(curves))
    rows = math.ceil(len(curves) / cols)
    names = [str(run) for runs in curves.values() for run in runs] + ["selected epoch"]
    legend = max(_text_inches(name, 7) for name in names) + 0.6  # the legend, right of the panels
    fig, axes = _fixed_grid(
        rows,
        cols,
        (3.0, 2.3),
        left=0.85,
        right=legend,
        top=0.75,
        bottom=0.55,
        wgap=0.2,
        hgap=0.65,
        sharey=True,
    )
    colours = [f"C{k}" for k in range(10)]
    for ax, (group, runs) in zip(axes.flat, curves.items(), strict=False):
        for k, (run, series) in enumerate(runs.items()):
            values = np.asarray(list(series), dtype=np.float64)
            if values.ndim != 1:
                raise ValueError(f"curves[{group!r}][{run!r}] must be 1-D, got {values.shape}")
            epochs = np.arange(1, len(values) + 1)
            colour = colours[k % len(colours)]
            ax.plot(epochs, values, color=colour, lw=1.2, label=str(run))
            epoch = (marks or {}).get(group, {}).get(run)
            if epoch is not None and 1 <= epoch <= len(values):
                ax.plot([epoch], [values[epoch - 1]], "o", color=colour, ms=6, mec="black")
        ax.set_title(str(group), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel, fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=9)
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    # One legend for the figure (the runs' colours are the same in every panel), on the right.
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if marks:
        handles.append(Line2D([], [], marker="o", ls="", color="white", mec="black", ms=6))
        labels.append("selected epoch")
    height = fig.get_size_inches()[1]
    fig.legend(
        handles, labels, fontsize=7, loc="upper right", bbox_to_anchor=(1.0, 1 - 0.7 / height)
    )
    fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


def plot_metric_by_group(
    means: Mapping[str, float],
    stds: Mapping[str, float] | None,
    metric: str,
    path: str | os.PathLike[str] | None = None,
    *,
    lower_is_better: bool | None = None,
    title: str | None = None,
) -> Figure:
    """Compare groups (e.g. losses) on one metric: mean with error bars, best group marked.

    Parameters
    ----------
    means : mapping of str to float
        Mean of the metric per group (e.g. over seeds or folds); plotted in the given order.
    stds : mapping of str to float, optional
        Standard deviation per group (error bars); missing groups get none.
    metric : str
        Metric name, for the axis label.
    path : str or PathLike, optional
        Write a PNG there (atomically).
    lower_is_better : bool, optional
        Which end is best; default guessed from the name (MAE, RMSE, RPS, loss: lower).
    title : str, optional
        Axes title (default: the metric).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_metric_by_group({"ce": 0.61, "emd2": 0.52}, {"ce": 0.02, "emd2": 0.03}, "mae")
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['ce', 'emd2 (best)']
    """
    if not means:
        raise ValueError("means is empty: nothing to plot")
    groups = list(means)
    mu = np.array([float(means[g]) for g in groups])
    sd = np.array([float((stds or {}).get(g, np.nan)) for g in groups])
    if not np.isfinite(mu).all():
        raise ValueError(f"means must be finite, got {dict(zip(groups, mu.tolist(), strict=True))}")
    if (sd[np.isfinite(sd)] < 0).any():
        raise ValueError("stds must be non-negative")
    if lower_is_better is None:
        lowered = metric.lower()
        lower_is_better = any(k in lowered for k in ("mae", "mse", "rps", "loss", "error", "emd"))
    best = int(np.argmin(mu) if lower_is_better else np.argmax(mu))
    labels = [f"{g} (best)" if i == best else g for i, g in enumerate(groups)]
    fig = _new_figure((6.0, 0.45 * len(groups) + 1.6))
    ax = fig.subplots()
    ypos = np.arange(len(groups))
    colours = ["tab:orange" if i == best else "tab:blue" for i in range(len(groups))]
    ax.barh(
        ypos,
        mu,
        xerr=np.where(np.isfinite(sd), sd, 0.0),
        color=colours,
        alpha=0.8,
        capsize=4,
        error_kw={"elinewidth": 1},
    )
    for y, m, s in zip(ypos.tolist(), mu.tolist(), sd.tolist(), strict=True):
        text = f"{m:.3f}" + (f" ± {s:.3f}" if np.isfinite(s) else "")
        # Written past the end of the error bar so the two never overlap.
        ax.text(m + (s if np.isfinite(s) else 0.0), y, "  " + text, va="center", fontsize=8)
    ax.set_yticks(ypos, labels=labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} ({'lower' if lower_is_better else 'higher'} is better)")
    ax.set_title(title or metric)
    ax.grid(axis="x", alpha=0.3)
    lo, hi = min(0.0, float((mu - np.nan_to_num(sd)).min())), float((mu + np.nan_to_num(sd)).max())
    ax.set_xlim(lo, hi + 0.35 * (hi - lo or 1.0))  # room for the value labels
    return _finish(fig, path)


def plot_per_class_mae(
    per_class: Mapping[str, Sequence[float]],
    class_names: Sequence[str],
    path: str | os.PathLike[str] | None = None,
    *,
    metric: str = "MAE",
    title: str = "Per-class error",
) -> Figure:
    """Grouped bars of a per-class error (e.g. MAE by true class) for several models/losses.

    Parameters
    ----------
    per_class : mapping of str to sequence of float
        For each group (loss), ``C`` values, one per true class (NaN for a class absent from
        the test set).
    class_names : sequence of str
        ``C`` names.
    path : str or PathLike, optional
        Write a PNG there (atomically).
    metric, title : str
        Labels.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_per_class_mae({"ce": [0.2, 0.9], "emd2": [0.3, 0.6]}, ["0", "1"])
    >>> len(fig.axes[0].patches)
    4
    """
    if not per_class:
        raise ValueError("per_class is empty: nothing to plot")
    names = [str(n) for n in class_names]
    groups = list(per_class)
    values = []
    for g in groups:
        arr = np.asarray(list(per_class[g]), dtype=np.float64)
        if arr.shape != (len(names),):
            raise ValueError(
                f"per_class[{g!r}] must have {len(names)} values (one per class), got {arr.shape}"
            )
        values.append(arr)
    fig = _new_figure((max(5.0, 0.5 * len(names) * len(groups) + 2.0), 3.6))
    ax = fig.subplots()
    width = 0.8 / len(groups)
    x = np.arange(len(names))
    for k, (g, arr) in enumerate(zip(groups, values, strict=True)):
        ax.bar(x + (k - (len(groups) - 1) / 2) * width, np.nan_to_num(arr), width, label=g)
    ax.set_xticks(x, labels=names)
    ax.set_xlabel("true class")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _finish(fig, path)
