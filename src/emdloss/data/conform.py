"""New inputs checked against what a model was trained on, for ``predict``.

A grayscale image given to a model trained on colour images, or a category value the model never
saw, still produces a prediction, and nothing says it may be meaningless (a grey fundus image
turned a p = 0.66 prediction into 0.11). These functions convert what can be converted and
return one note per kind of mismatch, naming the files or values, for the caller to warn with;
what cannot be converted (a missing column, a non-number in a numeric column) is an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from emdloss.errors import UserError

__all__ = ["conform_images", "conform_table", "conform_targets"]


def _first(items: Sequence[str], count: int = 3) -> str:
    shown = ", ".join(items[:count])
    return shown + (f" and {len(items) - count} more" if len(items) > count else "")


def conform_images(
    paths: Sequence[str | Path], input_shape: Sequence[int]
) -> tuple[Tensor, list[str]]:
    """Load image files as a model trained on ``input_shape`` = ``(C, S, S)`` expects them.

    Colour images for a grey model (``C = 1``) are averaged over their channels; grey images for
    a colour model (``C = 3``) get their one channel repeated; every image is resized (bilinear,
    aspect ratio not kept) to ``S x S``. Each kind of conversion gives one note naming the files.

    Parameters
    ----------
    paths : sequence of path-like
        Image files.
    input_shape : sequence of int
        The model's input shape ``(C, S, S)``, ``C`` 1 or 3.

    Returns
    -------
    (Tensor, list of str)
        Images ``(N, C, S, S)`` float32 in [0, 1], and the notes (empty when nothing was
        converted).

    Examples
    --------
    >>> import tempfile, PIL.Image
    >>> with tempfile.TemporaryDirectory() as d:
    ...     PIL.Image.new("L", (28, 28), 128).save(d + "/grey.png")
    ...     x, notes = conform_images([d + "/grey.png"], (3, 28, 28))
    >>> tuple(x.shape), notes[0].split(":")[0]
    ((1, 3, 28, 28), '1 of 1 images are grayscale but the model was trained on colour (RGB) images')
    """
    from emdloss.data._dataset import read_rgb, resize_rgb

    channels, size = int(input_shape[0]), int(input_shape[-1])
    if channels not in (1, 3):
        raise UserError(f"an image model takes 1 or 3 channels, the run records {channels}")
    grey: list[str] = []
    colour: list[str] = []
    resized: list[str] = []
    images = []
    for path in paths:
        rgb = read_rgb(path)  # the training reader: pixel limit, 16-bit scaled, not clipped
        height, width = rgb.shape[:2]
        is_grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
        if channels == 3 and is_grey:
            grey.append(str(path))
        elif channels == 1 and not is_grey:
            colour.append(str(path))
        if (height, width) != (size, size):
            resized.append(f"{path} ({width}x{height})")
        x = resize_rgb(rgb, size)
        images.append(x.mean(dim=0, keepdim=True) if channels == 1 else x)
    n = len(images)
    notes = []
    if grey:
        notes.append(
            f"{len(grey)} of {n} images are grayscale but the model was trained on colour (RGB) "
            f"images: their channel is repeated, and predictions on them may be meaningless: "
            f"{_first(grey)}"
        )
    if colour:
        notes.append(
            f"{len(colour)} of {n} images are in colour but the model was trained on grayscale "
            f"images: their channels are averaged: {_first(colour)}"
        )
    if resized:
        notes.append(
            f"{len(resized)} of {n} images are not {size}x{size}, the model's input size, and "
            f"were resized to it (aspect ratio not kept): {_first(resized)}"
        )
    return torch.stack(images), notes


def conform_table(
    path: Path,
    table: Mapping[str, Any],
    *,
    delimiter: str = ",",
    encoding: str = "utf-8-sig",
) -> tuple[list[str], Tensor, list[str]]:
    """Encode the rows of a CSV file exactly as a run's training rows were encoded.

    Numeric columns are standardised with the training mean and scale; categorical columns
    become one-hot blocks over the training categories, where an unseen value encodes as all
    zeros, as in training, and is named in a note. Columns the model does not use are ignored.
    Where the run imputed (``missing="impute"``: the record has ``feature_median``), an empty
    numeric cell takes the training median, as in training, and a note counts them.

    Parameters
    ----------
    path : Path
        CSV file with a header row.
    table : mapping
        The ``table`` record of a run's ``data.json``: ``numeric_columns``,
        ``categorical_columns``, ``feature_mean``, ``feature_scale``, ``categories`` (and
        ``feature_median`` where the run imputed).
    delimiter, encoding : str
        How the file is written (the run's own ``delimiter`` and ``encoding`` options).

    Returns
    -------
    (list of str, Tensor, list of str)
        Row ids (``"line N"``), encoded rows ``(N, F)`` float32, notes.

    Raises
    ------
    emdloss.errors.UserError
        For a missing column (names it and lists the expected ones), a row with the wrong number
        of cells, a non-number in a numeric column (names line, column and value), no rows.
    """
    from emdloss.data._csv_cells import MISSING_TOKENS, read_csv_rows

    # The training reader: linear in the file, lines and cells bounded, rows of the header's width.
    header, cells, lines = read_csv_rows(path, delimiter=delimiter, encoding=encoding)
    rows = list(zip(lines, cells, strict=True))
    column = {name: j for j, name in enumerate(header)}  # one lookup per cell, not a scan
    numeric, categorical = list(table["numeric_columns"]), list(table["categorical_columns"])
    needed = numeric + categorical
    absent = [name for name in needed if name not in header]
    if absent:
        raise UserError(
            f"{path} lacks the column(s) {', '.join(absent)} the model was trained on; "
            f"expected columns: {', '.join(needed)}"
        )
    mean = np.asarray(table["feature_mean"], dtype=np.float64)
    scale = np.asarray(table["feature_scale"], dtype=np.float64)
    categories: Mapping[str, list[str]] = table["categories"]
    medians = table.get("feature_median")
    unseen: dict[str, list[str]] = {}
    imputed = 0
    ids, encoded = [], []
    for line, row in rows:
        values = []
        for j, name in enumerate(numeric):
            cell = row[column[name]]
            if medians is not None and cell in MISSING_TOKENS:
                values.append(float(medians[j]))
                imputed += 1
                continue
            try:
                number = float(cell)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise UserError(
                    f"{path}, line {line}: column {name!r} holds {cell!r}, expected a number"
                )
            values.append(number)
        with np.errstate(over="ignore"):
            standardised = (np.asarray(values) - mean) / scale
            too_far = ~np.isfinite(standardised.astype(np.float32))
        if numeric and too_far.any():
            # 1e308 minus a negative mean overflows; the network would see inf.
            j = int(np.flatnonzero(too_far)[0])
            raise UserError(
                f"{path}, line {line}: column {numeric[j]!r} holds {values[j]:g}, too far outside "
                "the range of the training rows to be standardised in float32"
            )
        vector = list(standardised) if numeric else []
        for name in categorical:
            cell = row[column[name]]
            seen = categories[name]
            if cell not in seen and cell not in unseen.setdefault(name, []):
                unseen[name].append(cell)
            vector.extend(1.0 if cell == value else 0.0 for value in seen)
        ids.append(f"line {line}")
        encoded.append(vector)
    if not encoded:
        raise UserError(f"{path} has no data rows")
    notes = [
        f"{path}: column {name!r} has value(s) {values} not seen in training "
        f"(encoded as all zeros; known: {categories[name]})"
        for name, values in unseen.items()
        if values
    ]
    if imputed:
        notes.append(f"{path}: {imputed} empty numeric cell(s) filled with the training median")
    return ids, torch.tensor(np.asarray(encoded), dtype=torch.float32), notes


def conform_targets(
    path: Path,
    columns: Sequence[str],
    *,
    class_names: Sequence[str],
    distribution: bool,
    missing: str = "error",
    delimiter: str = ",",
    encoding: str = "utf-8-sig",
) -> tuple[NDArray[np.int64], NDArray[np.float64] | None] | None:
    """The targets of a CSV file's rows, read as a run's training rows were, where the file has
    the run's target columns (a labelled hold-out for ``predict``).

    Parameters
    ----------
    path : Path
        CSV file with a header row.
    columns : sequence of str
        The run's target columns: its vote-count or proportion columns in level order
        (``distribution``), or its one label column.
    class_names : sequence of str
        The run's classes (levels).
    distribution : bool
        Whether ``columns`` hold a distribution (read by
        :func:`~emdloss.data.csv_table.read_count_columns`: counts or proportions, normalised)
        or a label (read by :func:`~emdloss.data.csv_table.class_indices`).
    missing : {"error", "drop", "impute"}
        The run's option: a row with a missing target cell is refused (``"error"``, the
        training message) or left unlabelled.
    delimiter, encoding : str
        How the file is written (the run's own options).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray or None) or None
        ``None`` when the file has none of ``columns``. Else the class of every row (``-1`` on
        an unlabelled row; a distribution's median level) and, with ``distribution``, the
        ``(N, C)`` normalised distributions (NaN rows where unlabelled), in the file's row order
        (that of :func:`conform_table`).

    Raises
    ------
    emdloss.errors.UserError
        For a file with some but not all of ``columns``, and the training readers' one-line
        errors naming the line and column: a missing cell under ``missing="error"``, a cell that
        is not a finite number, a negative vote, a row of no votes, a label outside the classes.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d, "new.csv")
    ...     _ = p.write_text("x,v_1,v_2,v_3\\n0.5,1,3,0\\n0.1,0,0,2\\n")
    ...     labels, dists = conform_targets(p, ["v_1", "v_2", "v_3"], class_names=["1", "2", "3"],
    ...                                     distribution=True)
    >>> labels.tolist(), dists.tolist()
    ([1, 2], [[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]])
    """
    from emdloss.data._csv_cells import MISSING_TOKENS, read_csv_rows
    from emdloss.data.csv_table import class_indices, missing_target_error, read_count_columns

    header, rows, lines = read_csv_rows(path, delimiter=delimiter, encoding=encoding)
    present = [name for name in columns if name in header]
    if not present:
        return None
    if len(present) < len(columns):
        absent = [name for name in columns if name not in header]
        raise UserError(
            f"{path} has the run's target column(s) {', '.join(present)} but lacks "
            f"{', '.join(absent)}; give all of them (to score the rows) or none"
        )
    cols = [header.index(name) for name in columns]
    kept: list[int] = []
    for r, cells in enumerate(rows):
        gaps = [header[c] for c in cols if cells[c] in MISSING_TOKENS]
        if gaps:
            if missing == "error":
                # The run's missing="error" is fixed: predict's user fills the cell instead.
                hint = "fill it, or leave out the target columns to predict without scoring"
                raise missing_target_error(path, lines[r], gaps[0], hint)
            continue  # "drop" and "impute": unlabelled, as training dropped the row
        kept.append(r)
    labels = np.full(len(rows), -1, dtype=np.int64)
    dists = np.full((len(rows), len(class_names)), np.nan) if distribution else None
    if kept:
        some_rows, some_lines = [rows[r] for r in kept], [lines[r] for r in kept]
        if dists is not None:
            target, encoded = read_count_columns(
                some_rows, some_lines, header, cols, path=path, classes=list(class_names)
            )
            dists[kept] = target.proportions
            labels[kept] = encoded.labels
        else:
            values = [cells[cols[0]] for cells in some_rows]
            labels[kept] = class_indices(
                values, some_lines, path=path, column=columns[0], class_names=class_names
            )
    return labels, dists
