r"""Distribution targets: vote counts or proportions over the ordered levels, read and checked.

A *distribution target* is what label-distribution learning (LDL) and NIMA-style aesthetics
train on: for every item, how its raters' votes (or a proportion of them) fall over the
:math:`C` ordered levels. The loaders keep it simple so that every trainer can use it:

- ``proportions``: a float (N, C) array whose rows sum to 1, the target of the losses and
  of the distribution measures;
- ``counts``: the (N,) number of votes behind each row when the cells were integral vote
  counts (``None`` for proportions): a run can weight items by it, and the noise floor of the
  measures needs it.

Every source (``ldl:``, ``csv:`` and ``images:`` with ``count_columns``) reads its cells
through :func:`read_distribution`, so the checks and the one warning are the same everywhere.
The hard class of an item (for stratified splits and the ordinal metrics) is the median level
of its distribution (:func:`median_class`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emdloss.errors import InputWarning, UserError

__all__ = [
    "SUM_TOLERANCE",
    "DistributionTargets",
    "distribution_columns",
    "distribution_summary",
    "level_names",
    "median_class",
    "read_distribution",
]

#: A row of proportions whose sum is within this of 1 is taken as it is; a row further off
#: (percentages, 1e-6 placeholders for zeros, rounding) is normalised with one warning.
SUM_TOLERANCE = 1e-9


@dataclass
class DistributionTargets:
    """The checked target of a data set with distribution targets.

    Attributes
    ----------
    proportions : numpy.ndarray of float64, shape (N, C)
        Rows sum to 1.
    counts : numpy.ndarray of float64, shape (N,), or None
        Votes per row when the cells were integral counts, else ``None``.
    normalised : int
        How many rows of proportions were rescaled to sum to 1 (0 for counts).
    """

    proportions: NDArray[np.float64]
    counts: NDArray[np.float64] | None
    normalised: int = 0


def distribution_columns(spec: Any, header: Sequence[str], *, source: str) -> list[str]:
    """The level columns named by the ``count_columns`` option, in level order.

    ``spec`` is a list of columns (``"votes_1,votes_2,votes_3"`` or a sequence), or one prefix
    (``"votes_"``, also written ``"votes_*"``) that every level column starts with and no
    other column does; the columns of a prefix are ordered by the number after it when all have
    one (so ``votes_10`` follows ``votes_9``), else kept in file order.

    Raises
    ------
    UserError
        For a column that is not in the header, fewer than two levels or a repeated column.

    Examples
    --------
    >>> distribution_columns("votes_", ["id", "votes_10", "votes_2", "votes_1"], source="t.csv")
    ['votes_1', 'votes_2', 'votes_10']
    >>> distribution_columns("a,b", ["a", "b", "c"], source="t.csv")
    ['a', 'b']
    """
    from ._options import as_str_list

    names = as_str_list("count_columns", spec)
    if len(names) == 1 and names[0] not in header:
        prefix = names[0].removesuffix("*")
        names = [h for h in header if h.startswith(prefix) and h != prefix]
        suffixes = [h[len(prefix) :] for h in names]
        if names and all(re.fullmatch(r"\d+(\.\d+)?", s) for s in suffixes):
            names = [n for _, n in sorted(zip((float(s) for s in suffixes), names, strict=True))]
        if not names:
            raise UserError(
                f"{source}: count_columns={spec!r} is neither a column nor the prefix of one; "
                f"columns: {list(header)}"
            )
    missing = [n for n in names if n not in header]
    if missing:
        raise UserError(f"{source}: count column(s) {missing} not found; columns: {list(header)}")
    if len(set(names)) != len(names):
        raise UserError(f"{source}: count_columns repeats a column: {names}")
    if len(names) < 2:
        raise UserError(
            f"{source}: count_columns names {names}; a distribution needs at least 2 levels"
        )
    return names


def level_names(columns: Sequence[str]) -> list[str]:
    """Names of the levels of ``columns``: what follows their common prefix when each has a
    non-empty rest (``votes_1`` -> ``1``), else the column names.

    Examples
    --------
    >>> level_names(["votes_1", "votes_2", "votes_10"]), level_names(["low", "lower"])
    (['1', '2', '10'], ['low', 'lower'])
    """
    prefix = columns[0] if columns else ""
    for column in columns[1:]:
        while not column.startswith(prefix):
            prefix = prefix[:-1]
    rests = [c[len(prefix) :] for c in columns]
    # A prefix ending inside a number (votes_1, votes_10 share "votes_1") is cut back to it.
    while prefix and prefix[-1].isdigit():
        prefix = prefix[:-1]
        rests = [c[len(prefix) :] for c in columns]
    return rests if prefix and all(rests) else list(columns)


def read_distribution(
    values: Any,
    *,
    rows: Sequence[str],
    columns: Sequence[str],
    source: str,
) -> DistributionTargets:
    r"""Check vote counts or proportions and return them as distributions over the levels.

    Integral cells are vote counts when some row sums to more than 1: they are kept
    (``counts``) and each row is divided by its total. Otherwise the cells are proportions; a
    row whose sum is off 1 by more than :data:`SUM_TOLERANCE` (percentages, ``1e-6``
    placeholders for zeros) is divided by its sum, and one :class:`~emdloss.errors.InputWarning`
    says how many rows and by how much.

    Parameters
    ----------
    values : array_like, shape (N, C)
        The cells as numbers (NaN for a cell that is not a number).
    rows : sequence of str
        How to name each row in an error (``"data.csv, line 7"``, ``"Movie.mat, row 12"``).
    columns : sequence of str
        The name of each level column.
    source : str
        The file, for the warning.

    Raises
    ------
    UserError
        One line naming the row and the column: a cell that is not a finite number, a negative
        cell, a row with no votes (all zero).

    Examples
    --------
    >>> t = read_distribution([[1, 3], [2, 2]], rows=["r0", "r1"], columns=["a", "b"], source="f")
    >>> t.proportions.tolist(), t.counts.tolist()
    ([[0.25, 0.75], [0.5, 0.5]], [4.0, 4.0])
    >>> read_distribution([[1, -1]], rows=["r0"], columns=["a", "b"], source="f")
    Traceback (most recent call last):
    ...
    emdloss.errors.UserError: r0, column 'b': -1 is negative; expected a vote count or a proportion >= 0
    """
    cells = np.asarray(values, dtype=np.float64)
    if cells.ndim != 2 or cells.shape[1] != len(columns) or cells.shape[0] != len(rows):
        raise ValueError(
            f"values of shape {cells.shape} for {len(rows)} rows, {len(columns)} columns"
        )
    if cells.shape[0] == 0:
        raise UserError(f"{source}: no rows with a distribution target")
    bad = ~np.isfinite(cells)
    if bad.any():
        r, c = (int(i[0]) for i in np.nonzero(bad))
        raise UserError(
            f"{rows[r]}, column {columns[c]!r}: {cells[r, c]!r} is not a finite number; expected "
            "a vote count or a proportion >= 0"
        )
    negative = cells < 0
    if negative.any():
        r, c = (int(i[0]) for i in np.nonzero(negative))
        raise UserError(
            f"{rows[r]}, column {columns[c]!r}: {cells[r, c]:g} is negative; expected a vote "
            "count or a proportion >= 0"
        )
    totals = cells.sum(axis=1)
    empty = np.flatnonzero(totals <= 0)
    if empty.size:
        r = int(empty[0])
        raise UserError(
            f"{rows[r]}, columns {columns[0]!r}..{columns[-1]!r}: no votes (every level is 0); "
            f"{empty.size} such row(s); remove them"
        )
    integral = bool(np.all(cells == np.round(cells)))
    if integral and bool(np.any(totals > 1)):
        return DistributionTargets(cells / totals[:, None], totals, 0)
    off = np.abs(totals - 1.0) > SUM_TOLERANCE
    if off.any():
        warnings.warn(
            f"{source}: {int(off.sum())} of {len(totals)} rows of proportions in "
            f"{columns[0]}..{columns[-1]} do not sum to 1 (sums {totals.min():.6g} to "
            f"{totals.max():.6g}, at most {np.abs(totals - 1.0).max():.3g} off); each row was "
            "divided by its sum",
            InputWarning,
            stacklevel=3,
        )
    return DistributionTargets(cells / totals[:, None], None, int(off.sum()))


def median_class(proportions: NDArray[np.float64]) -> NDArray[np.int64]:
    """The median level of each distribution: the first whose cumulative share reaches 1/2.

    The hard class of an item with a distribution target (stratified splits, the ordinal
    metrics per prediction rule).

    Examples
    --------
    >>> median_class(np.array([[0.2, 0.3, 0.5], [0.5, 0.0, 0.5]])).tolist()
    [1, 0]
    """
    cdf = np.cumsum(np.asarray(proportions, dtype=np.float64), axis=1)
    labels: NDArray[np.int64] = np.argmax(cdf >= 0.5 - 1e-12, axis=1).astype(np.int64)
    return labels


def distribution_summary(
    proportions: Any, counts: Any | None, class_names: Sequence[str]
) -> dict[str, Any]:
    r"""What ``train`` prints about distribution targets before training.

    ``level_order``, ``mean_votes`` (votes per item, ``None`` for proportions), the
    ``mean_entropy`` :math:`-\frac1N \sum_i \sum_k t_{ik} \ln t_{ik}` in nats (0 for one-hot
    targets, :math:`\ln C` for uniform ones) and ``max_entropy`` :math:`\ln C`.

    Examples
    --------
    >>> s = distribution_summary(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([2.0, 4.0]), ["lo", "hi"])
    >>> s["level_order"], s["mean_votes"], round(s["mean_entropy"], 4)
    (['lo', 'hi'], 3.0, 0.3466)
    """
    p = np.asarray(proportions, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return {
        "level_order": [str(n) for n in class_names],
        "items": int(p.shape[0]),
        "mean_votes": None if counts is None else float(np.mean(np.asarray(counts))),
        "mean_entropy": float(terms.sum(axis=1).mean()) if p.size else float("nan"),
        "max_entropy": float(np.log(p.shape[1])),
    }
