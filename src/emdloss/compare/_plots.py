"""Plots of a comparison, drawn with :mod:`emdloss.plots`: each metric per loss with error bars,
the paired difference of every loss to cross-entropy with its interval, and the per-class MAE
per loss."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emdloss._atomic import atomic_path
from emdloss.compare._plan import dataset_slug
from emdloss.compare._records import METRIC_KEYS, VALIDATED_RULE, RunRecord
from emdloss.compare._rows import (
    METRIC_LABELS,
    ORDERLESS,
    DatasetInfo,
    Stat,
    aggregate,
)
from emdloss.compare._stats import Interval, paired_difference, selection_level
from emdloss.compare._verdict import _pairs
from emdloss.training import rundir
from emdloss.vocabulary import HIGHER_IS_BETTER

__all__ = [
    "class_mae_by_loss",
    "paired_to_reference",
    "per_class_mae",
    "plot_metrics",
    "plot_paired",
    "read_predictions",
    "write_plots",
    "write_run_plots",
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
    figure.suptitle(
        f"{title}: test metrics, mean ± 1 sd over runs (argmax rule; highest mean in orange, "
        "not a verdict: see paired_vs_ce.png)"
    )
    figure.tight_layout()
    return _save(figure, path)


def paired_to_reference(
    rows: Sequence[Mapping[str, Any]],
    dataset: str,
    losses: Sequence[str],
    metrics: Sequence[str],
    rules: Sequence[str] = ("argmax", VALIDATED_RULE),
    reference: str = "ce",
) -> dict[tuple[str, str, str], Interval]:
    """``{(loss, rule, metric): Interval}``: each loss minus ``reference``, paired by seed.

    The intervals are Bonferroni-corrected over the losses compared (level
    :func:`~emdloss.compare._stats.selection_level` of their number): the figure asks "which of
    these k losses differ from cross-entropy", one family of k tests.
    """

    others = [loss for loss in losses if loss != reference]
    level = selection_level(len(others))
    out: dict[tuple[str, str, str], Interval] = {}
    for rule in rules:
        for metric in metrics:
            base = _pairs(rows, dataset, reference, rule, metric)
            if not base:
                continue
            for loss in others:
                interval = paired_difference(
                    _pairs(rows, dataset, loss, rule, metric), base, level=level
                )
                if interval.n >= 2:
                    out[(loss, rule, metric)] = interval
    return out


def plot_paired(
    path: Path,
    title: str,
    intervals: Mapping[tuple[str, str, str], Interval],
    reference: str = "ce",
) -> Path | None:
    """Forest plot: per metric, each loss's paired difference to ``reference`` with its interval.

    Green: the interval favours the loss; red: it favours the reference; grey: a tie (the
    interval contains 0). One marker per prediction rule. None when there is nothing to draw.
    """
    from matplotlib.figure import Figure

    if not intervals:
        return None
    losses = list(dict.fromkeys(loss for loss, _, _ in intervals))
    rules = list(dict.fromkeys(rule for _, rule, _ in intervals))
    metrics = list(dict.fromkeys(metric for _, _, metric in intervals))
    level = next(iter(intervals.values())).level
    figure = Figure(figsize=(3.6 * len(metrics), 0.3 * len(losses) * len(rules) + 1.6))
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    offsets = np.linspace(-0.18, 0.18, len(rules)) if len(rules) > 1 else np.zeros(1)
    markers = ["o", "s", "^", "D"]
    for axis, metric in zip(axes, metrics, strict=True):
        higher = metric in HIGHER_IS_BETTER
        for r, rule in enumerate(rules):
            for i, loss in enumerate(losses):
                d = intervals.get((loss, rule, metric))
                if d is None or math.isnan(d.low):
                    continue
                favours_loss = d.mean > 0 if higher else d.mean < 0
                colour = "tab:grey"
                if d.excludes_zero():
                    colour = "tab:green" if favours_loss else "tab:red"
                axis.errorbar(
                    d.mean,
                    i + offsets[r],
                    xerr=[[d.mean - d.low], [d.high - d.mean]],
                    fmt=markers[r % len(markers)],
                    color=colour,
                    capsize=2,
                    markersize=4,
                    label=rule if i == 0 else None,
                )
        axis.axvline(0.0, color="black", linewidth=0.8)
        axis.set_yticks(np.arange(len(losses)), labels=losses, fontsize=8)
        axis.set_ylim(len(losses) - 0.5, -0.5)
        axis.set_title(
            f"{METRIC_LABELS[metric]}: loss - {reference} "
            f"({'right' if higher else 'left'} favours the loss)",
            fontsize=9,
        )
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="x", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, fontsize=7, title="rule", title_fontsize=7)
    figure.suptitle(
        f"{title}: test difference to {reference}, paired by seed, {100 * level:.4g}% intervals "
        f"(Bonferroni over {len(losses)} losses); green/red: the interval excludes 0, grey: tie",
        fontsize=10,
    )
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
    """Write ``plots/<dataset>/metrics.png``, ``paired_vs_ce.png`` and ``per_class_mae.png``.

    ``metrics.png`` draws every metric per loss, mean over runs with a one-standard-deviation
    bar (:func:`plot_metrics`); ``paired_vs_ce.png`` each loss's paired difference to
    cross-entropy with its interval (:func:`plot_paired`), when ce ran with another loss;
    ``per_class_mae.png`` the per-class MAE (argmax rule, mean over
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
        orderless = info.spec.lower() in ORDERLESS
        if "ce" in losses and len(losses) > 1:
            metrics = ("accuracy",) if orderless else ("mae", "qwk", "accuracy")
            paired = paired_to_reference(rows, info.spec, losses, metrics)
            drawn = plot_paired(folder / "paired_vs_ce.png", info.spec, paired)
            if drawn is not None:
                files.append(drawn)
        # Per-class MAE means nothing for classes without order.
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


def write_run_plots(records: Sequence[RunRecord]) -> list[Path]:
    """Draw the plots of each finished run that lacks them (``--plots end``).

    The runs were trained with ``plots=False``; the plots are drawn here from each run's files
    (:func:`emdloss.training.write_run_plots`), so that a rerun draws only the new
    runs'. A run without its config or best checkpoint (not trained by ``emdloss train``) is
    left alone; a plot that cannot be drawn is a warning, never a failed comparison.

    Returns
    -------
    list of pathlib.Path
        The run directories drawn.
    """
    from emdloss.training import write_run_plots as draw

    drawn: list[Path] = []
    for record in records:
        run_dir = record.run_dir
        best = run_dir / rundir.CHECKPOINT_DIR / rundir.BEST_CHECKPOINT
        if (
            record.status == "failed"
            or (run_dir / rundir.PLOT_FILES[0]).is_file()
            or not (run_dir / rundir.CONFIG_FILE).is_file()
            or not best.is_file()
        ):
            continue
        try:
            draw(run_dir)
        except Exception as error:  # the plots are a view: the comparison stands without them
            warnings.warn(f"could not draw the plots of {run_dir}: {error}", stacklevel=2)
            continue
        drawn.append(run_dir)
    return drawn
