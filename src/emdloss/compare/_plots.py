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
from emdloss._figure import _fixed_grid, _text_inches
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
    "draw_figures",
    "paired_to_reference",
    "per_class_mae",
    "plot_metrics",
    "plot_paired",
    "read_predictions",
    "warm_up",
    "write_overview",
    "write_plots",
    "write_run_plots",
]

#: The overview figures of each data set (``plots/<dataset>/``), drawn by ``--plots end``.
OVERVIEW_FILES = ("confusion_matrices.png", "learning_curves.png", "distributions_test.png")


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

    A single figure (rather than one file per metric), its margins fixed from the lengths of the
    loss names (no layout engine measures the text: about half the cost, issue 20).

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
    losses = list(stats)
    metrics = [m for m in (*METRIC_KEYS, "train_seconds") if all(m in stats[k] for k in losses)]
    cols = 4
    rows = math.ceil(len(metrics) / cols)
    label = max(_text_inches(loss, 8) for loss in losses) + 0.15
    figure, axes = _fixed_grid(
        rows,
        cols,
        (2.45, 0.32 * len(losses) + 0.5),
        left=label + 0.1,
        right=0.25,
        top=0.75,
        bottom=0.35,
        wgap=label + 0.35,
        hgap=0.6,
    )
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
        axis.xaxis.set_major_locator(_few_ticks())
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="x", alpha=0.3)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.set_visible(False)
    figure.suptitle(
        f"{title}: test metrics, mean ± 1 sd over runs (argmax rule)\nhighest mean in orange, "
        "not a verdict: see paired_vs_ce.png",
        fontsize=10,
    )
    return _save(figure, path)


def paired_to_reference(
    rows: Sequence[Mapping[str, Any]],
    dataset: str,
    losses: Sequence[str],
    metrics: Sequence[str],
    rules: Sequence[str] = ("argmax", VALIDATED_RULE),
    reference: str = "ce",
    *,
    test_train_ratio: float | None = None,
) -> dict[tuple[str, str, str], Interval]:
    """``{(loss, rule, metric): Interval}``: each loss minus ``reference``, paired by seed.

    The intervals are Bonferroni-corrected over the losses compared (level
    :func:`~emdloss.compare._stats.selection_level` of their number): the figure asks "which of
    these k losses differ from cross-entropy", one family of k tests. ``test_train_ratio``:
    where the test rows are resampled, the overlap correction of ``paired_difference``.
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
                    _pairs(rows, dataset, loss, rule, metric),
                    base,
                    level=level,
                    test_train_ratio=test_train_ratio,
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
    if not intervals:
        return None
    losses = list(dict.fromkeys(loss for loss, _, _ in intervals))
    rules = list(dict.fromkeys(rule for _, rule, _ in intervals))
    metrics = list(dict.fromkeys(metric for _, _, metric in intervals))
    level = next(iter(intervals.values())).level
    label = max(_text_inches(loss, 8) for loss in losses) + 0.15
    grid, axes_grid = _fixed_grid(
        1,
        len(metrics),
        (3.4, 0.3 * len(losses) * len(rules) + 0.6),
        left=label + 0.1,
        right=0.25,
        top=0.85,
        bottom=0.35,
        wgap=label + 0.35,
        hgap=0.0,
    )
    figure, axes = grid, axes_grid[0]
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
        axis.xaxis.set_major_locator(_few_ticks())
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="x", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, fontsize=7, title="rule", title_fontsize=7)
    figure.suptitle(
        f"{title}: test difference to {reference}, paired by seed, {100 * level:.4g}% intervals "
        f"(Bonferroni over {len(losses)} losses)\ngreen/red: the interval excludes 0, grey: tie",
        fontsize=10,
    )
    return _save(figure, path)


def _few_ticks() -> Any:
    """At most five ticks on a value axis: each tick is a handful of artists to build and lay
    out (the largest part of these small panels' cost)."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10])


def _save(figure: Any, path: Path) -> Path:
    # The figures are laid out (fixed margins or a layout engine): written as they are.
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
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
            paired = paired_to_reference(
                rows, info.spec, losses, metrics, test_train_ratio=info.test_train_ratio
            )
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


def _run_label(record: RunRecord) -> str:
    spec = record.spec
    return f"seed{spec.seed}" + ("" if spec.fold is None else f" fold{spec.fold}")


def write_overview(
    out: Path, records: Sequence[RunRecord], infos: Sequence[DatasetInfo]
) -> list[Path]:
    """Per data set, the runs at a glance: ``plots/<dataset>/confusion_matrices.png`` and
    ``learning_curves.png`` (``--plots end``, the default, in place of every run's own PNGs),
    and on distribution targets ``distributions_test.png``.

    ``confusion_matrices.png`` has a panel per loss: the test predictions (argmax rule) of the
    loss's reported runs pooled into one confusion matrix, normalised over the true class
    (:func:`emdloss.plots.plot_confusion_matrices`). ``learning_curves.png`` has a panel per
    loss and a line per run: the validation metric that model selection monitored, per epoch,
    the selected epoch marked (:func:`emdloss.plots.plot_runs_by_group`).
    ``distributions_test.png`` shows a few test items of the first seed (and fold) that every
    loss ran: their true distribution beside each loss's prediction
    (:func:`emdloss.plots.plot_distributions`). A run's own figures are ``emdloss plot
    RUN_DIR`` (or ``--plots runs``).

    Parameters
    ----------
    out : pathlib.Path
        Comparison directory.
    records : sequence of RunRecord
        The reported runs (failed and untested ones are left out).
    infos : sequence of DatasetInfo
        The data sets.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    import torch

    from emdloss.metrics import confusion_matrix
    from emdloss.plots import plot_confusion_matrices, plot_runs_by_group

    files: list[Path] = []
    for info in infos:
        folder = out / "plots" / dataset_slug(info.spec)
        pooled: dict[str, Any] = {}
        curves: dict[str, dict[str, list[float]]] = {}
        marks: dict[str, dict[str, int]] = {}
        monitors: set[str] = set()
        for loss in info.losses:
            for record in records:
                spec = record.spec
                if spec.dataset != info.spec or spec.loss != loss or record.status == "failed":
                    continue
                read = rundir.read_predictions(record.run_dir, "argmax") if record.tested else None
                if read is not None:
                    counts = confusion_matrix(
                        torch.as_tensor(read[1]),
                        torch.as_tensor(read[0]),
                        num_classes=info.num_classes,
                    ).numpy()
                    pooled[loss] = pooled[loss] + counts if loss in pooled else counts
                content = rundir.read_metrics(record.run_dir) or {}
                monitor = str(content.get("monitor", ""))
                history = rundir.read_history(record.run_dir)
                if not monitor or not history or monitor not in history[0]:
                    continue
                monitors.add(monitor)
                label = _run_label(record)
                curves.setdefault(loss, {})[label] = [row[monitor] for row in history]
                if "best_epoch" in content:
                    marks.setdefault(loss, {})[label] = int(content["best_epoch"])
        names = info.class_names or tuple(str(k) for k in range(info.num_classes))
        if pooled:
            path = folder / OVERVIEW_FILES[0]
            plot_confusion_matrices(
                pooled,
                names,
                path,
                title=f"{info.spec}: test predictions (argmax rule) of each loss's runs, pooled",
            )
            files.append(path)
        if curves and len(monitors) == 1:  # one monitored metric, one y axis
            metric = monitors.pop().removeprefix("val_")
            higher = metric in HIGHER_IS_BETTER
            label = METRIC_LABELS.get(metric, metric)
            path = folder / OVERVIEW_FILES[1]
            plot_runs_by_group(
                curves,
                path,
                marks=marks,
                ylabel=f"validation {label} ({'higher' if higher else 'lower'} is better)",
                title=f"{info.spec}: the monitored validation metric per epoch, each run "
                "(selected epoch marked)",
            )
            files.append(path)
        drawn = _draw_distributions(folder, records, info)
        if drawn is not None:
            files.append(drawn)
    return files


def _draw_distributions(
    folder: Path, records: Sequence[RunRecord], info: DatasetInfo
) -> Path | None:
    """``distributions_test.png`` of one data set: the first (seed, fold) whose test
    predictions every loss has, read from the runs' ``predictions_test.csv``; ``None`` when the
    data has no distribution targets."""
    from emdloss.plots import plot_distributions

    by_split: dict[tuple[int, int], dict[str, Path]] = {}
    for record in records:
        spec = record.spec
        if spec.dataset == info.spec and record.tested and record.status != "failed":
            key = (spec.seed, -1 if spec.fold is None else spec.fold)
            by_split.setdefault(key, {}).setdefault(spec.loss, record.run_dir)
    complete = [key for key in sorted(by_split) if set(info.losses) <= set(by_split[key])]
    if not complete:
        return None
    seed, fold = complete[0]
    probs: dict[str, Any] = {}
    for loss in info.losses:
        read = rundir.read_distributions(by_split[seed, fold][loss])
        if read is None:  # hard labels (or an unreadable file): nothing to draw
            return None
        names, ids, probs[loss], targets = read
    path = folder / OVERVIEW_FILES[2]
    plot_distributions(
        probs,
        targets,
        names,
        path,
        ids=ids,
        title=f"{info.spec}: test items of seed {seed}"
        + ("" if fold < 0 else f" fold {fold}")
        + ", true and predicted distributions",
    )
    return path


def draw_figures(
    out: Path,
    records: Sequence[RunRecord],
    rows: Sequence[Mapping[str, Any]],
    infos: Sequence[DatasetInfo],
    overview: bool,
) -> tuple[list[Path], list[Path]]:
    """The figures of the data sets ``infos``: :func:`write_plots`'s and, with ``overview``,
    :func:`write_overview`'s (the files of each, in that order)."""
    drawn = write_plots(out, records, rows, infos)
    return drawn, write_overview(out, records, infos) if overview else []


def warm_up() -> None:
    """Import matplotlib and load its fonts (a process that will draw figures, before)."""
    import io

    from emdloss._figure import _new_figure

    figure = _new_figure((1.0, 1.0))
    figure.suptitle("0.5")
    figure.savefig(io.BytesIO(), format="png")


def write_run_plots(records: Sequence[RunRecord]) -> list[Path]:
    """Draw the plots of each finished run that lacks them (``--plots runs``).

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
