"""Plots of a comparison, drawn with :mod:`emdloss.plots`: each metric per loss with error bars,
and the per-class MAE per loss."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emdloss._atomic import atomic_path
from emdloss.compare._plan import dataset_slug
from emdloss.compare._report import (
    HIGHER_IS_BETTER,
    METRIC_LABELS,
    ORDERLESS,
    DatasetInfo,
    Stat,
    aggregate,
)
from emdloss.compare._runner import METRIC_KEYS, RunRecord
from emdloss.training import rundir

__all__ = [
    "class_mae_by_loss",
    "per_class_mae",
    "plot_metrics",
    "read_predictions",
    "write_plots",
]


def read_predictions(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """True and argmax-predicted classes of a run's test set (see
    :func:`emdloss.training.rundir.read_predictions`, the one reader of the run format)."""
    return rundir.read_predictions(run_dir, "argmax")


def per_class_mae(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    r"""Mean absolute error in class units per true class (NaN for a class absent from the set).

    .. math:: \mathrm{MAE}_c = \frac{1}{|\{i : y_i = c\}|} \sum_{i : y_i = c} |\hat y_i - c|

    A NumPy view of :func:`emdloss.metrics.functional.per_class_mae` (the one implementation).

    Parameters
    ----------
    targets, predictions : numpy.ndarray of int
        True and predicted class indices.
    num_classes : int
        Number of classes.

    Returns
    -------
    numpy.ndarray, shape (num_classes,)

    Examples
    --------
    >>> per_class_mae(np.array([0, 0, 2]), np.array([1, 0, 0]), 3).tolist()
    [0.5, nan, 2.0]
    """
    import torch

    from emdloss.metrics.functional import per_class_mae as per_class_mae_tensor

    values = per_class_mae_tensor(
        torch.as_tensor(np.asarray(predictions, dtype=np.int64)),
        torch.as_tensor(np.asarray(targets, dtype=np.int64)),
        num_classes=num_classes,
    )
    return values.numpy()


def class_mae_by_loss(
    records: Sequence[RunRecord], dataset: str, losses: Sequence[str], num_classes: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and standard deviation over runs of the per-class MAE, per loss (argmax rule).

    Losses whose runs have no per-sample predictions are left out.
    """
    result: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for loss in losses:
        curves = []
        for record in records:
            if record.spec.dataset != dataset or record.spec.loss != loss or not record.metrics:
                continue
            read = read_predictions(record.run_dir)
            if read is not None:
                curves.append(per_class_mae(read[0], read[1], num_classes))
        if curves:
            stacked = np.vstack(curves)
            with warnings.catch_warnings():  # all-NaN columns: classes absent from a test set
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stacked, axis=0)
                std = np.nanstd(stacked, axis=0, ddof=1) if len(curves) > 1 else mean * np.nan
            result[loss] = (mean, std)
    return result


def plot_metrics(path: Path, title: str, stats: Mapping[str, Mapping[str, Stat]]) -> Path:
    """One panel per metric: the mean over runs per loss with a one-standard-deviation bar.

    A single figure (rather than one file per metric): rendering a PNG costs about as much as
    the training of a small tabular run.

    Parameters
    ----------
    path : pathlib.Path
        PNG file to write (atomically).
    title : str
        Figure title.
    stats : Mapping
        ``{loss: {metric: Stat}}`` in display order.

    Returns
    -------
    pathlib.Path
    """
    from matplotlib.figure import Figure

    losses = list(stats)
    metrics = [m for m in (*METRIC_KEYS, "train_seconds") if all(m in stats[k] for k in losses)]
    cols = 4
    rows = math.ceil(len(metrics) / cols)
    figure = Figure(figsize=(3.0 * cols, 0.32 * len(losses) * rows + 1.3 * rows + 0.6))
    axes = figure.subplots(rows, cols, squeeze=False)
    y = np.arange(len(losses))
    for axis, metric in zip(axes.flat, metrics, strict=False):
        means = np.array([stats[loss][metric].mean for loss in losses])
        stds = np.nan_to_num(np.array([stats[loss][metric].std for loss in losses]))
        higher = metric in HIGHER_IS_BETTER
        finite = np.where(np.isfinite(means), means, np.nan)
        best = int(np.nanargmax(finite) if higher else np.nanargmin(finite))
        colours = ["tab:orange" if i == best else "tab:blue" for i in range(len(losses))]
        axis.barh(y, np.nan_to_num(means), xerr=stds, color=colours, alpha=0.8, capsize=3)
        axis.set_yticks(y, labels=losses, fontsize=8)
        axis.invert_yaxis()
        axis.set_title(
            f"{METRIC_LABELS[metric]} ({'higher' if higher else 'lower'} is better)", fontsize=9
        )
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="x", alpha=0.3)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.set_visible(False)
    figure.suptitle(f"{title}: test metrics, mean ± 1 sd over runs (argmax rule; best in orange)")
    figure.tight_layout()
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def write_plots(
    out: Path,
    records: Sequence[RunRecord],
    rows: Sequence[Mapping[str, Any]],
    infos: Sequence[DatasetInfo],
) -> list[Path]:
    """Write ``plots/<dataset>/metrics.png`` and ``plots/<dataset>/per_class_mae.png``.

    ``metrics.png`` draws every metric per loss, mean over runs with a one-standard-deviation
    bar (:func:`plot_metrics`); ``per_class_mae.png`` the per-class MAE (argmax rule, mean over
    runs) per loss with :func:`emdloss.plots.plot_per_class_mae`, when the runs wrote
    per-sample predictions and the classes are ordered.

    Parameters
    ----------
    out : pathlib.Path
        Comparison directory.
    records : sequence of RunRecord
        Every run.
    rows : sequence of Mapping
        Rows of ``results.csv``.
    infos : sequence of DatasetInfo
        The data sets.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    from emdloss.plots import plot_per_class_mae

    stats = aggregate(rows)
    files: list[Path] = []
    for info in infos:
        losses = [loss for loss in info.losses if (info.spec, loss, "argmax") in stats]
        if not losses:
            continue
        folder = out / "plots" / dataset_slug(info.spec)
        by_loss = {loss: stats[(info.spec, loss, "argmax")] for loss in losses}
        files.append(plot_metrics(folder / "metrics.png", info.spec, by_loss))
        # Per-class MAE means nothing for classes without order.
        orderless = info.spec.lower() in ORDERLESS
        curves = (
            {} if orderless else class_mae_by_loss(records, info.spec, losses, info.num_classes)
        )
        if curves:
            names = info.class_names or tuple(str(k) for k in range(info.num_classes))
            figure = plot_per_class_mae(
                {loss: mean.tolist() for loss, (mean, _) in curves.items()},
                names,
                metric="MAE (classes)",
                title=f"{info.spec}: per-class test MAE, mean over runs (argmax rule)",
            )
            files.append(_save(figure, folder / "per_class_mae.png"))
    return files
