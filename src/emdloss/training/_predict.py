"""``predict``: encode new inputs (images, CSV rows) as the training inputs were, and decode."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emdloss._atomic import atomic_write
from emdloss.conformal import format_set
from emdloss.errors import InputWarning, UserError
from emdloss.training._calibrate import load_run_calibrator
from emdloss.training._evaluate import load_task
from emdloss.training.rundir import (
    check_output,
    prediction_column,
    predictions_csv,
    read_config,
)
from emdloss.vocabulary import RULES

__all__ = ["SET_COLUMN", "predict"]

#: Column of predict's output with the conformal prediction set (runs with ``calibrator.json``).
SET_COLUMN = "conformal_set"


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


def predict(
    run_dir: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    output: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Predict the classes of new inputs with the best checkpoint of a run.

    Parameters
    ----------
    run_dir : path-like
        A run directory.
    inputs : path-like or sequence of path-like
        Image files or folders of images (image runs), or CSV files (or folders of them) of
        rows with the training feature columns (tabular runs; other columns are ignored), read
        with the run's ``delimiter`` and ``encoding`` options.
    output : path-like, optional
        Write the predictions as CSV there (atomically); never inside a run directory, nor over
        an existing file unless ``overwrite`` (:func:`emdloss.training.rundir.check_output`).
    batch_size : int
        Inference batch size.
    overwrite : bool
        Replace an existing ``output`` file.

    Returns
    -------
    list of dict
        One per input: ``id``, ``prob_<class>`` per class, ``pred_<rule>`` (class name) per rule,
        and, when the run has been calibrated (``emdloss calibrate``), ``conformal_set``: the
        contiguous prediction set as ``"first..last"`` class names (one name when it is one
        class).

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
    if record["kind"] == "tabular":
        options = dict(read_config(run_dir).data_options)
        bad = [p for p in paths if p.suffix.lower() != ".csv"]
        if bad:
            raise UserError(f"a tabular run predicts from CSV files, got {bad[0]}")
        ids: list[str] = []
        xs: list[Tensor] = []
        for path in paths:
            file_ids, x = _table_inputs(path, record["table"], options)
            ids.extend(f"{path}:{i}" if len(paths) > 1 else i for i in file_ids)
            xs.append(x)
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
        row.update({f"prob_{n}": float(probs[i, k]) for k, n in enumerate(names)})
        row.update({prediction_column(rule): names[int(decoded[rule][i])] for rule in RULES})
        if sets is not None:
            row[SET_COLUMN] = format_set(int(sets[0][i]), int(sets[1][i]), names)
        results.append(row)
    if output is not None:
        atomic_write(
            output,
            lambda handle: handle.write(predictions_csv(results).encode()),
            overwrite=overwrite,
        )
    return results
