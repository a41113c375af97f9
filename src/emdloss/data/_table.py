"""Shared encoding of tables: standardisation and one-hot codes fitted on the training part only."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from emdloss.errors import InputWarning, UserError

from ._dataset import OrdinalDataset, TensorSplit
from .splits import Split

#: A standardised 0/1 column above this holds a rare 1 blown up (a 1 in 101 rows becomes 10).
INDICATOR_PEAK = 10.0


def _warn_inflated_indicators(
    train: NDArray[np.float64], standardised: NDArray[np.float64], columns: int
) -> None:
    """One :class:`~emdloss.errors.InputWarning` when most numeric columns are 0/1 indicators
    and standardising turned a rare 1 into an input above :data:`INDICATOR_PEAK` (Movie's
    features: 1,866 of 1,869, a 1 in 5,000 rows becomes about 70, and the networks fitted
    better on the raw values, docs/results.md). The text does not depend on the split, so the
    runs of a comparison repeat one line, not one per fold."""
    indicator = np.all((train == 0) | (train == 1), axis=0)
    if 2 * int(indicator.sum()) <= columns:
        return
    if float(np.abs(standardised[:, indicator]).max(initial=0.0)) <= INDICATOR_PEAK:
        return
    warnings.warn(
        f"{int(indicator.sum())} of {columns} numeric columns hold only 0 and 1, and "
        f"standardising turns a 1 that is rare in the training rows into an input above "
        f"{INDICATOR_PEAK:g}; --data-option standardize=false keeps them as they are",
        InputWarning,
        stacklevel=4,
    )


@dataclass
class EncodedTable:
    """Inputs of the three splits and what the encoding learned from the training part."""

    inputs: dict[str, Tensor]
    feature_names: list[str]
    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    medians: NDArray[np.float64]
    categories: dict[str, list[str]]


def encode_table(
    numeric: NDArray[np.float64],
    numeric_names: Sequence[str],
    categorical: Sequence[Sequence[str | None]],
    categorical_names: Sequence[str],
    split: Split,
    *,
    row_names: Sequence[str] | None = None,
    standardize: bool = True,
) -> EncodedTable:
    r"""Encode a table with statistics of the training rows only.

    Numeric column :math:`j` becomes :math:`(x_j - \bar x_j) / s_j` with the mean and the
    population standard deviation (``ddof=0``, as scikit-learn's ``StandardScaler``) of the
    training rows (:math:`s_j = 1` for a constant column); missing numeric cells (NaN) are first
    filled with the training median. Categorical columns become one-hot blocks over the
    categories seen in the training rows; a missing or unseen category encodes as all zeros.

    The statistics are computed on the column divided by :math:`2^e`, the power of two nearest
    below its largest training magnitude, and scaled back: dividing by a power of two is exact,
    so the result is bit for bit the plain formula's wherever that one is finite, and values up
    to the float64 limit (``1e308``) no longer overflow the sum or the squares into inf/NaN.

    Parameters
    ----------
    row_names : sequence of str, optional
        How to name each row in an error (e.g. ``"data.csv, line 7"``); default ``"row i"``.
    standardize : bool
        ``False`` keeps the numeric values as they are (mean 0 and scale 1 are recorded, so
        prediction applies the same identity). Sparse 0/1 indicator columns are the case for it:
        standardising a column with one 1 in 5,000 training rows turns that 1 into about 70.

    Raises
    ------
    UserError
        For a numeric column with no value in the training rows, or a value so far outside the
        training rows' range that its standardised value does not fit in float32.
    """
    train = split.train
    numeric = np.asarray(numeric, dtype=np.float64).reshape(len(numeric), -1)
    medians = np.zeros(numeric.shape[1])
    if numeric.shape[1]:
        train_block = numeric[train]
        gaps = np.isnan(train_block)
        empty = np.flatnonzero(gaps.all(axis=0))
        if empty.size:
            raise UserError(
                f"column {numeric_names[int(empty[0])]!r} has no value in the training rows; "
                "cannot impute or standardise it"
            )
        # Every column at once (a loop over Movie's 1,869 columns took 7 s of a 10 s load).
        medians = np.nanmedian(train_block, axis=0) if gaps.any() else np.median(train_block, 0)
        numeric = np.where(np.isnan(numeric), medians, numeric)
    if numeric.shape[1] and not standardize:
        mean = np.zeros(numeric.shape[1])
        scale = np.ones(numeric.shape[1])
        _check_float32(numeric, numeric, numeric_names, row_names, scaled=False)
    elif numeric.shape[1]:
        # Exact power-of-two prescaling (see above): a column of 1e308s stays finite.
        peak = np.abs(numeric[train]).max(axis=0)
        # frexp: peak = m * 2**e with 0.5 <= m < 1, so 2**(e - 1) <= peak, never inf.
        power = np.ldexp(1.0, np.frexp(np.where(peak > 0, peak, 1.0))[1] - 1)
        scaled = numeric / power
        mean = scaled[train].mean(axis=0)
        scale = scaled[train].std(axis=0)
        # A constant column keeps scale 1 (its value maps to 0, others to their difference).
        scale = np.where(scale > 0, scale, 1.0 / power)
        with np.errstate(over="ignore"):
            standardised = (scaled - mean) / scale
            mean, scale = mean * power, scale * power
        _check_float32(standardised, numeric, numeric_names, row_names)
        _warn_inflated_indicators(numeric[train], standardised[train], len(numeric_names))
        numeric = standardised
    else:
        mean = np.zeros(0)
        scale = np.ones(0)
    blocks = [numeric]
    names = list(numeric_names)
    categories: dict[str, list[str]] = {}
    for name, column in zip(categorical_names, categorical, strict=True):
        values = np.asarray(column, dtype=object)
        seen = sorted({v for v in values[train] if v is not None})
        categories[name] = seen
        index = {v: k for k, v in enumerate(seen)}
        onehot = np.zeros((values.size, len(seen)))
        for row, value in enumerate(values):
            k = index.get(value)
            if k is not None:
                onehot[row, k] = 1.0
        blocks.append(onehot)
        names.extend(f"{name}={v}" for v in seen)
    matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(numeric), 0))
    inputs = {
        part: torch.from_numpy(matrix[getattr(split, part)].astype(np.float32))
        for part in ("train", "val", "test")
    }
    return EncodedTable(inputs, names, mean, scale, medians, categories)


def _check_float32(
    standardised: NDArray[np.float64],
    raw: NDArray[np.float64],
    names: Sequence[str],
    row_names: Sequence[str] | None,
    *,
    scaled: bool = True,
) -> None:
    # A value 1e38 times beyond the training range standardises past float32's largest number:
    # refuse it by name rather than feed the network an inf.
    with np.errstate(over="ignore"):
        bad = ~np.isfinite(standardised.astype(np.float32))
    if not bad.any():
        return
    row, col = (int(i[0]) for i in np.nonzero(bad))
    where = row_names[row] if row_names is not None else f"row {row}"
    if not scaled:
        raise UserError(
            f"{where}, column {names[col]!r}: value {raw[row, col]:g} does not fit in float32 "
            "(largest 3.4e38); rescale it, or standardise the features (standardize=true)"
        )
    raise UserError(
        f"{where}, column {names[col]!r}: value {raw[row, col]:g} lies too far outside the range "
        "of the training rows to be standardised in float32; fix or rescale it"
    )


def tabular_dataset(
    *,
    name: str,
    class_names: list[str],
    positions: list[float] | None,
    labels: NDArray[np.int64],
    ids: Sequence[str],
    table: EncodedTable,
    split: Split,
    info: dict[str, object],
    dists: NDArray[np.float64] | None = None,
    votes: NDArray[np.float64] | None = None,
    target_kind: Literal["label", "distribution"] = "label",
) -> OrdinalDataset:
    """Assemble an :class:`OrdinalDataset` from an encoded table and its split.

    ``dists`` (N, C) are soft or distribution targets, ``votes`` (N,) the votes behind each
    distribution (see :mod:`emdloss.data.distributions`)."""
    parts = {}
    for part in ("train", "val", "test"):
        rows = getattr(split, part)
        parts[part] = TensorSplit(
            table.inputs[part],
            labels[rows],
            [ids[i] for i in rows],
            None if dists is None else dists[rows],
        )
        if votes is not None:
            parts[part].votes = torch.as_tensor(np.asarray(votes, dtype=np.float32)[rows])
    info = dict(info)
    info.update(
        {
            "split_indices": {p: getattr(split, p).tolist() for p in ("train", "val", "test")},
            "feature_mean": table.mean.tolist(),
            "feature_scale": table.scale.tolist(),
            "categories": table.categories,
        }
    )
    return OrdinalDataset(
        name=name,
        class_names=class_names,
        kind="tabular",
        input_shape=(len(table.feature_names),),
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        positions=positions,
        protocol=split.protocol,
        resampled=split.resampled,
        feature_names=table.feature_names,
        info=info,
        target_kind=target_kind,
    )
