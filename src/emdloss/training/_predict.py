"""``predict``: encode new inputs (images, CSV rows) as the training inputs were, and decode;
score the rows that carry the run's targets (vote columns or a label column)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from emdloss._atomic import atomic_write, write_json
from emdloss.conformal import format_set
from emdloss.errors import InputWarning, UserError
from emdloss.training._calibrate import load_run_calibrator
from emdloss.training._evaluate import load_task
from emdloss.training.config import TrainConfig
from emdloss.training.rundir import (
    DATA_FILE,
    check_output,
    prediction_column,
    predictions_csv,
    read_config,
)
from emdloss.vocabulary import RULES

__all__ = ["SET_COLUMN", "TARGET_NAME_COLUMN", "measures_path", "predict"]

#: Column of predict's output with the conformal prediction set (runs with ``calibrator.json``).
SET_COLUMN = "conformal_set"
#: Column of predict's output with the true class of a labelled row (a distribution's median
#: level), as in ``predictions_test.csv``.
TARGET_NAME_COLUMN = "target_name"


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _table_inputs(
    path: Path, table: dict[str, Any], options: dict[str, Any]
) -> tuple[list[str], Tensor]:
    """Encode the rows of a CSV exactly as the training rows were encoded, read with the run's
    ``delimiter`` and ``encoding`` options; warn about unseen categories (they encode as all
    zeros, as in training) and imputed cells."""
    from emdloss.data.conform import conform_table

    how = {key: str(options[key]) for key in ("delimiter", "encoding") if key in options}
    ids, x, notes = conform_table(path, table, **how)
    for note in notes:
        warnings.warn(note, InputWarning, stacklevel=3)
    return ids, x


def _image_inputs(paths: Sequence[Path], shape: Sequence[int]) -> tuple[list[str], Tensor]:
    """Load images as the model expects them (channels, size); warn about every conversion."""
    from emdloss.data.conform import conform_images

    images, notes = conform_images(paths, shape)
    for note in notes:
        warnings.warn(note, InputWarning, stacklevel=3)
    return [str(p) for p in paths], images


def _expand_inputs(inputs: Iterable[str | os.PathLike[str]], tabular: bool) -> list[Path]:
    """The files of ``inputs``, a folder standing for its images (image runs) or its CSV files
    (tabular runs)."""
    suffixes, what = ({".csv"}, "CSV files") if tabular else (_IMAGE_SUFFIXES, "image files")
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
            if not found:
                raise UserError(f"no {what} found under {path}")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    if not paths:
        raise UserError("no inputs given")
    return paths


# ---------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class _TargetSpec:
    """Which columns of a CSV hold a run's targets, and how training read them."""

    kind: Literal["distribution", "label"]
    columns: list[str]  # the level columns in level order, or the one label column
    missing: str  # the run's ``missing`` option: "error", "drop" or "impute"


@dataclass
class _FileTargets:
    """The targets of one input file; ``labels`` -1 and ``dists`` NaN on unlabelled rows."""

    labels: NDArray[np.int64]
    dists: NDArray[np.float64] | None


def _table_targets(
    path: Path, spec: _TargetSpec, options: Mapping[str, Any], class_names: Sequence[str]
) -> _FileTargets | None:
    """The targets of a CSV's rows, read as training read them (``None`` without them)."""
    from emdloss.data.conform import conform_targets

    how = {key: str(options[key]) for key in ("delimiter", "encoding") if key in options}
    found = conform_targets(
        path,
        spec.columns,
        class_names=class_names,
        distribution=spec.kind == "distribution",
        missing=spec.missing,
        **how,
    )
    return None if found is None else _FileTargets(*found)


def _target_spec(record: Mapping[str, Any], config: TrainConfig) -> _TargetSpec | None:
    """The target columns of a tabular run: those ``data.json``'s description marks ``target``
    (``csv:``; in level order as ``count_columns`` ordered them in training), or, for a
    distribution run whose source names no columns (``ldl:``), ``target_prob_<level>``; ``None``
    where the run records none or binned a score into its classes."""
    from emdloss.data.distributions import distribution_columns

    names = list(record["class_names"])
    description = record.get("description")
    description = description if isinstance(description, dict) else {}
    columns = description.get("columns")
    recorded = [
        str(c["name"])
        for c in (columns if isinstance(columns, list) else [])
        if isinstance(c, dict) and c.get("kind") == "target" and "name" in c
    ]
    options = config.data_options
    missing = str(options.get("missing", "error"))
    if "count_columns" in options:
        if not recorded:
            return None
        # The recorded columns are in file order; the option orders them as training did.
        levels = distribution_columns(
            options["count_columns"], recorded, source=f"{DATA_FILE} of the run"
        )
        return _TargetSpec("distribution", levels, missing) if len(levels) == len(names) else None
    if "distribution" in description and not recorded:
        return _TargetSpec("distribution", [f"target_prob_{n}" for n in names], missing)
    if len(recorded) == 1 and "bins" not in options and "bin_edges" not in options:
        return _TargetSpec("label", recorded, missing)
    return None  # a binned score: its classes are intervals, not the column's values


def _measures(
    probs: Tensor,
    decoded: Mapping[str, Tensor],
    labels: NDArray[np.int64],
    dists: NDArray[np.float64] | None,
    positions: Sequence[float] | None,
) -> dict[str, Any]:
    """The run's metrics over the labelled rows: per prediction rule (the ordinal metrics of
    ``metrics.json``'s ``test``) and, with distribution targets, the distribution measures
    (``metrics.json``'s ``distribution``)."""
    from emdloss.metrics import OrdinalMetrics, distribution_metrics

    rows = torch.from_numpy(np.flatnonzero(labels >= 0))
    p, y = probs[rows], torch.from_numpy(labels)[rows]
    rules = {}
    for rule, preds in decoded.items():
        metric = OrdinalMetrics(probs.shape[1], positions=positions)
        metric.update(p, y, preds[rows])
        rules[rule] = {key: float(value) for key, value in metric.compute().items()}
    measures: dict[str, Any] = {"labelled_rows": len(rows), "metrics": rules}
    if dists is not None:
        measures["distribution"] = distribution_metrics(
            p, torch.from_numpy(dists[rows.numpy()]), positions=positions
        )
    return measures


def measures_path(output: str | os.PathLike[str]) -> Path:
    """Where :func:`predict` writes the measures of labelled rows beside its ``output`` CSV.

    Examples
    --------
    >>> str(measures_path("out/preds.csv"))
    'out/preds.measures.json'
    """
    return Path(output).with_suffix(".measures.json")


# ---------------------------------------------------------------------------- predict
@overload
def predict(
    run_dir: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    output: str | os.PathLike[str] | None = ...,
    batch_size: int = ...,
    overwrite: bool = ...,
    return_measures: Literal[False] = ...,
) -> list[dict[str, Any]]: ...


@overload
def predict(
    run_dir: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    output: str | os.PathLike[str] | None = ...,
    batch_size: int = ...,
    overwrite: bool = ...,
    return_measures: Literal[True],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]: ...


@overload
def predict(
    run_dir: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    output: str | os.PathLike[str] | None = ...,
    batch_size: int = ...,
    overwrite: bool = ...,
    return_measures: bool,
) -> list[dict[str, Any]] | tuple[list[dict[str, Any]], dict[str, Any] | None]: ...


def predict(
    run_dir: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    output: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
    return_measures: bool = False,
) -> list[dict[str, Any]] | tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Predict the classes of new inputs with the best checkpoint of a run, and score the rows
    that carry the run's targets.

    Parameters
    ----------
    run_dir : path-like
        A run directory.
    inputs : path-like or sequence of path-like
        Image files or folders of images (image runs), or CSV files (or folders of them) of
        rows with the training feature columns (tabular runs; other columns are ignored), read
        with the run's ``delimiter`` and ``encoding`` options. A CSV that also has the run's
        target columns is a labelled hold-out: the vote-count or proportion columns of a
        ``count_columns`` run (an ``ldl:`` run, whose file names no columns:
        ``target_prob_<level>``), or the label column of a run on class labels (not a binned
        score). They are read as training read them: a missing cell is refused under the run's
        ``missing="error"`` (the default) and leaves the row unlabelled under ``"drop"`` and
        ``"impute"``; a text, negative or non-finite vote, a row of no votes or a label outside
        the classes is refused in one line naming the file, line and column.
    output : path-like, optional
        Write the predictions as CSV there (atomically); never inside a run directory, nor over
        an existing file unless ``overwrite`` (:func:`emdloss.training.rundir.check_output`).
        With labelled rows, the measures are written as JSON beside it
        (:func:`~emdloss.training.measures_path`: ``preds.csv`` -> ``preds.measures.json``), under the same rules.
    batch_size : int
        Inference batch size.
    overwrite : bool
        Replace an existing ``output`` file (and its measures file).
    return_measures : bool
        Also return the measures (see Returns).

    Returns
    -------
    list of dict
        One per input: ``id``, ``prob_<class>`` per class, ``pred_<rule>`` (class name) per rule,
        and, when the run has been calibrated (``emdloss calibrate``), ``conformal_set``: the
        contiguous prediction set as ``"first..last"`` class names (one name when it is one
        class). When some input carries the run's targets, every row also has ``target_name``
        (the true class; a distribution's median level) after ``id`` and, with distribution
        targets, ``target_prob_<class>`` (the normalised votes) after the ``prob_<class>``
        columns, as in ``predictions_test.csv``; both ``None`` on unlabelled rows.
    dict or None
        With ``return_measures``: ``None`` when no row is labelled, else ``labelled_rows`` (how
        many rows were scored), ``metrics`` (``{rule: {metric: value}}``: the ordinal metrics of
        ``metrics.json``'s ``test``, against ``target_name``) and, with distribution targets,
        ``distribution`` (:func:`emdloss.metrics.distribution_metrics` of the ``prob_`` against
        the ``target_prob_`` columns: ``chebyshev``, ``clark``, ..., ``mode_accuracy``, the keys
        of ``metrics.json``'s ``distribution``), computed in float64 from the unrounded
        probabilities.

    Warns
    -----
    emdloss.errors.InputWarning
        For every conversion to what the model was trained on (see
        :mod:`emdloss.data.conform`): grey or colour images converted, images resized, category
        values not seen in training.
    """
    if output is not None:  # before the slow part, once the run is known to be one
        read_config(run_dir)
        check_output(output, overwrite=overwrite, run_dir=run_dir)
    task, record = load_task(run_dir)
    calibration = load_run_calibrator(run_dir)
    # One path is one input, not a sequence of one-character paths.
    listed = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths = _expand_inputs(listed, tabular=record["kind"] == "tabular")
    names = record["class_names"]
    targets: list[_FileTargets | None] = []  # per CSV file; none for images
    xs: list[Tensor] = []
    if record["kind"] == "tabular":
        config = read_config(run_dir)
        options = dict(config.data_options)
        bad = [p for p in paths if p.suffix.lower() != ".csv"]
        if bad:
            raise UserError(f"a tabular run predicts from CSV files, got {bad[0]}")
        spec = _target_spec(record, config)
        ids: list[str] = []
        for path in paths:
            file_ids, x = _table_inputs(path, record["table"], options)
            ids.extend(f"{path}:{i}" if len(paths) > 1 else i for i in file_ids)
            xs.append(x)
            targets.append(None if spec is None else _table_targets(path, spec, options, names))
        x_all = torch.cat(xs)
    else:
        bad = [p for p in paths if p.suffix.lower() not in _IMAGE_SUFFIXES]
        if bad:
            raise UserError(
                f"an image run predicts from image files ({', '.join(sorted(_IMAGE_SUFFIXES))}), "
                f"got {bad[0]}"
            )
        ids, x_all = _image_inputs(paths, record["input_shape"])
    expected = tuple(record["input_shape"])
    if tuple(x_all.shape[1:]) != expected:
        raise UserError(f"inputs have shape {tuple(x_all.shape[1:])}, the model expects {expected}")
    labels, dists = _gather(targets, [len(x) for x in xs], len(names))
    measures_file = None
    if output is not None and labels is not None:
        measures_file = check_output(measures_path(output), overwrite=overwrite, run_dir=run_dir)
    with torch.no_grad():
        probs = torch.cat([task.predict_proba(chunk) for chunk in x_all.split(batch_size)])
    decoded = task.decode_all(probs)
    sets = None
    if calibration is not None:
        p64 = probs.to(torch.float64)
        sets = calibration[0].predict_sets(p64 / p64.sum(dim=1, keepdim=True))
    results = []
    for i, sample in enumerate(ids):
        row: dict[str, Any] = {"id": sample}
        if labels is not None:
            row[TARGET_NAME_COLUMN] = names[int(labels[i])] if labels[i] >= 0 else None
        row.update({f"prob_{n}": float(probs[i, k]) for k, n in enumerate(names)})
        if dists is not None:
            labelled = labels is not None and labels[i] >= 0
            row.update(
                {
                    f"target_prob_{n}": float(dists[i, k]) if labelled else None
                    for k, n in enumerate(names)
                }
            )
        row.update({prediction_column(rule): names[int(decoded[rule][i])] for rule in RULES})
        if sets is not None:
            row[SET_COLUMN] = format_set(int(sets[0][i]), int(sets[1][i]), names)
        results.append(row)
    measures = None
    if labels is not None and (labels >= 0).any():
        measures = _measures(probs, decoded, labels, dists, record.get("positions"))
    if output is not None:
        atomic_write(
            output,
            lambda handle: handle.write(predictions_csv(results).encode()),
            overwrite=overwrite,
        )
        if measures_file is not None and measures is not None:
            write_json(measures_file, measures, overwrite=overwrite)
    return (results, measures) if return_measures else results


def _gather(
    targets: Sequence[_FileTargets | None], sizes: Sequence[int], num_classes: int
) -> tuple[NDArray[np.int64] | None, NDArray[np.float64] | None]:
    """The targets of every input row (``None`` when no file carries them); rows of files
    without them unlabelled."""
    if all(t is None for t in targets):
        return None, None
    with_dists = any(t is not None and t.dists is not None for t in targets)
    labels, dists = [], []
    for found, size in zip(targets, sizes, strict=True):
        labels.append(found.labels if found is not None else np.full(size, -1, dtype=np.int64))
        if with_dists:
            given = found.dists if found is not None else None
            dists.append(given if given is not None else np.full((size, num_classes), np.nan))
    return np.concatenate(labels), np.concatenate(dists) if with_dists else None
