"""``predict``: encode new inputs (images, CSV rows) as the training inputs were, and decode."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emdloss._atomic import atomic_write
from emdloss.decoding import RULES
from emdloss.errors import UserError
from emdloss.training._evaluate import load_task
from emdloss.training.rundir import prediction_column, predictions_csv

__all__ = ["predict", "predictions_csv"]


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _table_inputs(path: Path, table: dict[str, Any]) -> tuple[list[str], Tensor]:
    """Encode the rows of a CSV exactly as the training rows were encoded."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            try:
                header = [cell.strip() for cell in next(reader)]
            except StopIteration:
                raise UserError(f"{path} is empty") from None
            rows = [(n + 2, row) for n, row in enumerate(reader) if any(c.strip() for c in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path} is not a UTF-8 CSV file: {error}") from None
    numeric, categorical = table["numeric_columns"], table["categorical_columns"]
    needed = list(numeric) + list(categorical)
    missing = [name for name in needed if name not in header]
    if missing:
        raise UserError(
            f"{path} lacks the column(s) {', '.join(missing)} the model was trained on; "
            f"expected columns: {', '.join(needed)}"
        )
    mean = np.asarray(table["feature_mean"], dtype=np.float64)
    scale = np.asarray(table["feature_scale"], dtype=np.float64)
    ids, encoded = [], []
    for line, row in rows:
        if len(row) != len(header):
            raise UserError(f"{path}, line {line}: {len(row)} fields, expected {len(header)}")
        values = []
        for name in numeric:
            cell = row[header.index(name)].strip()
            try:
                number = float(cell)
            except ValueError:
                raise UserError(
                    f"{path}, line {line}: column {name!r} holds {cell!r}, expected a number"
                ) from None
            if not math.isfinite(number):
                raise UserError(f"{path}, line {line}: column {name!r} holds {cell!r}")
            values.append(number)
        vector = list((np.asarray(values) - mean) / scale) if numeric else []
        for name in categorical:
            cell = row[header.index(name)].strip()
            vector.extend(1.0 if cell == seen else 0.0 for seen in table["categories"][name])
        ids.append(f"line {line}")
        encoded.append(vector)
    if not encoded:
        raise UserError(f"{path} has no data rows")
    return ids, torch.tensor(np.asarray(encoded), dtype=torch.float32)


def _image_inputs(paths: Sequence[Path], shape: Sequence[int]) -> tuple[list[str], Tensor]:
    from emdloss.data import load_image

    images = torch.stack([load_image(p, int(shape[-1])) for p in paths])
    if shape[0] == 1:  # a model trained on grey images
        images = images.mean(dim=1, keepdim=True)
    return [str(p) for p in paths], images


def _expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"no image files found under {path}")
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
    inputs: Sequence[str | os.PathLike[str]],
    *,
    output: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Predict the classes of new inputs with the best checkpoint of a run.

    Parameters
    ----------
    run_dir : path-like
        A run directory.
    inputs : sequence of path-like
        Image files or folders of images (image runs), or CSV files of rows with the training
        feature columns (tabular runs; other columns are ignored).
    output : path-like, optional
        Write the predictions as CSV there (atomically).
    batch_size : int
        Inference batch size.

    Returns
    -------
    list of dict
        One per input: ``id``, ``prob_<class>`` per class, ``pred_<rule>`` (class name) per rule.
    """
    task, record = load_task(run_dir)
    paths = _expand_inputs(inputs)
    names = record["class_names"]
    if record["kind"] == "tabular":
        bad = [p for p in paths if p.suffix.lower() != ".csv"]
        if bad:
            raise UserError(f"a tabular run predicts from CSV files, got {bad[0]}")
        ids: list[str] = []
        xs: list[Tensor] = []
        for path in paths:
            file_ids, x = _table_inputs(path, record["table"])
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
    results = []
    for i, sample in enumerate(ids):
        row: dict[str, Any] = {"id": sample}
        row.update({f"prob_{n}": float(probs[i, k]) for k, n in enumerate(names)})
        row.update({prediction_column(rule): names[int(decoded[rule][i])] for rule in RULES})
        results.append(row)
    if output is not None:
        atomic_write(output, lambda handle: handle.write(predictions_csv(results).encode()))
    return results
