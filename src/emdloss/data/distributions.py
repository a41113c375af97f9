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

import itertools
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
    "level_number",
    "level_positions",
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


def distribution_columns(
    spec: Any, header: Sequence[str], *, source: str, exclude: Sequence[str] | None = None
) -> list[str]:
    """The level columns named by the ``count_columns`` option, in level order.

    ``spec`` is a list of columns (``"votes_1,votes_2,votes_3"`` or a sequence), or one prefix
    (``"votes_"``, also written ``"votes_*"``) that every level column starts with. The columns
    of a prefix are ordered by the number after it when all have one (so ``votes_10`` follows
    ``votes_9``, ``s_-1`` precedes ``s_0``), else kept in file order; columns in ``exclude``
    (the ``ignore`` option; ``None`` where the source has none) are left out first.

    Raises
    ------
    UserError
        For a column that is not in the header, fewer than two levels, a repeated column, or a
        prefix that matches numbered levels and other columns (``votes_total``) at once.

    Examples
    --------
    >>> distribution_columns("votes_", ["id", "votes_10", "votes_2", "votes_1"], source="t.csv")
    ['votes_1', 'votes_2', 'votes_10']
    >>> distribution_columns("a,b", ["a", "b", "c"], source="t.csv")
    ['a', 'b']
    >>> distribution_columns("votes_", ["votes_1", "votes_2", "votes_all"], source="t.csv", exclude=[])
    Traceback (most recent call last):
    ...
    emdloss.errors.UserError: t.csv: count_columns='votes_' matches ['votes_all'] beside the numbered levels ['votes_1', 'votes_2']; name the level columns (count_columns=A,B,C) or leave the others out (ignore=votes_all)
    """
    from ._options import as_str_list

    names = as_str_list("count_columns", spec)
    if len(names) == 1 and names[0] not in header:
        prefix = names[0].removesuffix("*")
        left_out = set(exclude or ())
        names = [h for h in header if h.startswith(prefix) and h != prefix and h not in left_out]
        numbers = [level_number(h[len(prefix) :]) for h in names]
        numbered = [n for n, v in zip(names, numbers, strict=True) if v is not None]
        if numbered and len(numbered) < len(names):
            odd = [n for n in names if n not in numbered]
            hint = "" if exclude is None else f" or leave the others out (ignore={','.join(odd)})"
            raise UserError(
                f"{source}: count_columns={spec!r} matches {odd} beside the numbered levels "
                f"{numbered}; name the level columns (count_columns=A,B,C){hint}"
            )
        if numbered:
            by_number = sorted(zip([v for v in numbers if v is not None], names, strict=True))
            for (a, first), (b, second) in itertools.pairwise(by_number):
                if a == b:
                    raise UserError(
                        f"{source}: count columns {first!r} and {second!r} both name level {a:g}"
                    )
            names = [name for _, name in by_number]
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


#: A level's number as the end of a column name writes it: ``10``, ``-3``, ``0.25``, ``.5``.
_LEVEL_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def level_number(text: str) -> float | None:
    """The number that ``text`` writes, or ``None``.

    Examples
    --------
    >>> level_number("-3"), level_number("0.25"), level_number("total"), level_number("1_0")
    (-3.0, 0.25, None, None)
    """
    return float(text) if _LEVEL_NUMBER.fullmatch(text) else None


def level_names(columns: Sequence[str]) -> list[str]:
    """Names of the levels of ``columns``: what follows their common prefix.

    Where the rests can all be numbers, the prefix is the shortest that leaves numbers without
    splitting one (``votes_1``, ``votes_10`` -> ``1``, ``10``; ``p_0.1`` -> ``0.1``; ``s_-3``
    -> ``-3``; but ``x-1`` -> ``1``: a sign must follow a separator); otherwise the longest
    common prefix, when every rest is non-empty; else the column names themselves.

    Examples
    --------
    >>> level_names(["votes_1", "votes_2", "votes_10"]), level_names(["low", "lower"])
    (['1', '2', '10'], ['low', 'lower'])
    >>> level_names(["p_0.1", "p_0.2"]), level_names(["s_-1", "s_0"]), level_names(["x-1", "x-2"])
    (['0.1', '0.2'], ['-1', '0'], ['1', '2'])
    """
    prefix = columns[0] if columns else ""
    for column in columns[1:]:
        while not column.startswith(prefix):
            prefix = prefix[:-1]
    for cut in range(len(prefix) + 1):
        head = prefix[:cut]
        rests = [c[cut:] for c in columns]
        if head and head[-1].isdigit():
            continue  # the cut would split a number
        signed = any(r[:1] in ("-", "+", ".") for r in rests)
        if signed and head and head[-1].isalnum():
            continue  # "x-1": the "-" separates, it is no sign
        if all(level_number(r) is not None for r in rests):
            return rests
    rests = [c[len(prefix) :] for c in columns]
    return rests if prefix and all(rests) else list(columns)


def level_positions(names: Sequence[str], *, source: str) -> list[float] | None:
    """The numeric positions of levels whose names are all numbers (``None`` otherwise).

    Raises
    ------
    UserError
        For numbered levels that are not in increasing order (their columns listed out of
        order): the position-aware losses and measures would read a wrong order.

    Examples
    --------
    >>> level_positions(["1", "2", "10"], source="f"), level_positions(["low", "high"], source="f")
    ([1.0, 2.0, 10.0], None)
    """
    numbers = [level_number(str(n)) for n in names]
    if any(v is None for v in numbers):
        return None
    positions = [float(v) for v in numbers if v is not None]
    if any(b <= a for a, b in itertools.pairwise(positions)):
        raise UserError(
            f"{source}: the levels {list(names)} are numbers out of increasing order; "
            "list the level columns from the lowest level to the highest"
        )
    return positions


def read_distribution(
    values: Any,
    *,
    rows: Sequence[str],
    columns: Sequence[str],
    source: str,
) -> DistributionTargets:
    r"""Check vote counts or proportions and return them as distributions over the levels.

    Integral cells are vote counts when some row sums to more than 1: they are kept
    (``counts``) and each row is divided by its total, except whole numbers whose rows all sum
    to 99 ... 101, one to exactly 100: those are rounded percentages. Otherwise the cells are
    proportions; a row whose sum is off 1 by more than :data:`SUM_TOLERANCE` (or, for float32
    cells, by more than their precision: percentages, ``1e-6`` placeholders for zeros) is divided
    by its sum, and one :class:`~emdloss.errors.InputWarning` says how many rows, by how much,
    and why cells that looked like counts were not taken as counts.

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
        cell, a row with no votes (all zero), a row whose sum overflows.

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
    raw = np.asarray(values)
    cells = raw.astype(np.float64)
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
            f"{rows[r]}, column {columns[c]!r}: {cells[r, c]:g} is not a finite number; expected "
            "a vote count or a proportion >= 0"
        )
    negative = cells < 0
    if negative.any():
        r, c = (int(i[0]) for i in np.nonzero(negative))
        raise UserError(
            f"{rows[r]}, column {columns[c]!r}: {cells[r, c]:g} is negative; expected a vote "
            "count or a proportion >= 0"
        )
    with np.errstate(over="ignore"):
        totals = cells.sum(axis=1)
    overflow = np.flatnonzero(~np.isfinite(totals))
    if overflow.size:
        r = int(overflow[0])
        raise UserError(
            f"{rows[r]}, columns {columns[0]!r}..{columns[-1]!r}: the cells sum past the largest "
            f"float (largest cell {cells[r].max():g}); expected vote counts or proportions"
        )
    empty = np.flatnonzero(totals <= 0)
    if empty.size:
        r = int(empty[0])
        raise UserError(
            f"{rows[r]}, columns {columns[0]!r}..{columns[-1]!r}: no votes (every level is 0); "
            f"{empty.size} such row(s); remove them"
        )
    whole = cells == np.round(cells)
    integral = bool(whole.all())
    # Whole numbers summing to 99..101 with some row at exactly 100 are rounded percentages,
    # not about 100 votes per item: kept as counts they would give a false noise floor.
    percentages = (
        integral and bool(np.all((totals >= 99) & (totals <= 101))) and bool(np.any(totals == 100))
    )
    if integral and not percentages and bool(np.any(totals > 1)):
        return DistributionTargets(cells / totals[:, None], totals, 0)
    # Float32 sources (a .mat file) sum to 1 only to their own precision.
    precision = float(np.finfo(raw.dtype).eps) if np.issubdtype(raw.dtype, np.floating) else 0.0
    tolerance = max(SUM_TOLERANCE, 4 * cells.shape[1] * precision)
    off = np.abs(totals - 1.0) > tolerance
    if off.any():
        why = ""
        if percentages:
            why = "; whole numbers summing to about 100 were read as percentages, not votes"
        elif totals.max() > 1.5:
            r, c = (int(i[0]) for i in np.nonzero(~whole))
            why = (
                f"; read as proportions, not vote counts, because {rows[r]}, column "
                f"{columns[c]!r} holds {cells[r, c]:g}, not a whole number"
            )
        warnings.warn(
            f"{source}: {int(off.sum())} of {len(totals)} rows of proportions in "
            f"{columns[0]}..{columns[-1]} do not sum to 1 (sums {totals.min():.10g} to "
            f"{totals.max():.10g}, at most {np.abs(totals - 1.0).max():.3g} off); each row was "
            f"divided by its sum{why}",
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
