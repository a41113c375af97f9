"""What a table's columns became, and warnings about columns and splits that mislead a model.

A CSV file turns every column into a feature unless told otherwise, so an identifier, a score the
target was binned from (a leak), integer-coded categories or a constant column go in silently and
make a model look good (or bad) for the wrong reason. :func:`inspect_columns` looks at the raw
training cells of every column and says what each became and why, with a warning per suspicious
column; :func:`inspect_split` warns about a validation split too small to select a model on.
Every check looks at the training rows only (nothing about validation or test data leaks into
the warnings about features).

Thresholds (module constants, documented with each check):

- an **identifier**: a categorical column, or an integer one, whose training values are all
  distinct (at least :data:`MIN_ROWS_ID` rows);
- a **leak**: a feature from which a simple rule reproduces the training classes with accuracy at
  least :data:`LEAK_ACCURACY` (a monotone step function of a numeric column, or one class per
  value of a column with few values), or a numeric column with :math:`|\\rho_S|` at least
  :data:`LEAK_SPEARMAN`; judged from :data:`MIN_ROWS_LEAK` training rows on;
- **maybe categorical**: an integer column with 3 to :data:`MAX_CODES` distinct values;
- **constant**: one distinct value (or none) in the training rows;
- a **small validation split**: fewer than :data:`MIN_VAL_ROWS` rows, or a class missing.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ColumnInfo",
    "DataReport",
    "DataWarning",
    "describe_dataset",
    "description_lines",
    "inspect_columns",
    "inspect_split",
    "monotone_accuracy",
]

MIN_ROWS_ID = 10
MIN_ROWS_LEAK = 20
LEAK_ACCURACY = 0.98
LEAK_SPEARMAN = 0.98
MAX_CODES = 12
MIN_VAL_ROWS = 30
# Leak checks on large tables use a fixed random subset of the training rows (cost O(n K)).
_MAX_LEAK_ROWS = 5_000
_PART_NAMES = {"train": "training", "val": "validation", "test": "test"}
_VAL_HINT = "raise the data option val_fraction (e.g. --data-option val_fraction=0.2)"


@dataclass(frozen=True)
class ColumnInfo:
    """One column of the table: ``kind`` is numeric, categorical, ignored or target."""

    name: str
    kind: str
    reason: str


@dataclass(frozen=True)
class DataWarning:
    """A suspicious column or split.

    ``kind`` is one of ``"id"``, ``"leak"``, ``"maybe_categorical"``, ``"constant"``,
    ``"small_validation"``, ``"missing_class"``; ``column`` names the column (``None`` for a
    split warning, which names its split in ``split``).
    """

    kind: str
    message: str
    column: str | None = None
    split: str | None = None

    def line(self) -> str:
        """The warning as one line, e.g. for stderr."""
        return f"warning: {self.message}"


@dataclass
class DataReport:
    """What :func:`inspect_columns` / :func:`inspect_split` found."""

    columns: list[ColumnInfo] = field(default_factory=list)
    warnings: list[DataWarning] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[dict[str, str | None]]]:
        """Plain data for ``data.json``."""
        return {
            "columns": [asdict(c) for c in self.columns],
            "warnings": [asdict(w) for w in self.warnings],
        }

    def warned(self, kind: str) -> list[str]:
        """Names of the columns (or splits) with a warning of ``kind``."""
        return [str(w.column or w.split) for w in self.warnings if w.kind == kind]


def _numbers(values: Sequence[str]) -> NDArray[np.float64] | None:
    try:  # one pass at C speed; float() is the judge of what a number is
        out = np.fromiter(map(float, values), dtype=np.float64, count=len(values))
    except ValueError:
        return None
    return out if np.isfinite(out).all() else None


def monotone_accuracy(x: ArrayLike, y: ArrayLike, num_classes: int | None = None) -> float:
    r"""Best accuracy of a non-decreasing step function :math:`f` with :math:`\hat y = f(x)`.

    Equal values of ``x`` must get the same class. Sorting by ``x`` and grouping ties, with
    :math:`n_{gk}` rows of class :math:`k` in group :math:`g`, dynamic programming over
    :math:`D_g(k)` (the most rows right with group :math:`g` assigned a class :math:`\le k`) gives

    .. math:: D_g(k) = \max_{j \le k} \left(D_{g-1}(j) + n_{gj}\right),

    the answer is :math:`D_G(K-1) / n`. A score binned into the target gives 1; a column unrelated
    to it gives about the share of the most common class plus noise. For a non-increasing
    function pass ``K - 1 - y``.

    Examples
    --------
    >>> monotone_accuracy([0.1, 0.5, 0.4, 0.9], [0, 1, 1, 2])
    1.0
    >>> monotone_accuracy([1, 2, 3, 4], [1, 0, 1, 0])
    0.5
    """
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    ys = np.asarray(y, dtype=np.int64).reshape(-1)
    if xs.size != ys.size or xs.size == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {xs.size}, {ys.size}")
    k = int(ys.max()) + 1 if num_classes is None else int(num_classes)
    _, group = np.unique(xs, return_inverse=True)
    groups = int(group.max()) + 1
    counts = np.bincount(group.reshape(-1) * k + ys, minlength=groups * k).reshape(groups, k)
    # The same recursion class by class, vectorised over the groups: with S_k(g) the rows of
    # class k in groups 1..g, D_g(k) = max(D_g(k-1), D_{g-1}(k) + n_gk) unrolls to
    # D_g(k) = S_k(g) + max_{g' <= g} (D_{g'}(k-1) - S_k(g')), a running maximum (O(G K) in
    # numpy instead of G steps in Python: 512 columns of 1,700 rows took 4 s).
    cumulative = np.zeros((groups + 1, k), dtype=np.int64)
    np.cumsum(counts, axis=0, out=cumulative[1:])
    best = cumulative[:, 0]
    for j in range(1, k):
        best = np.maximum.accumulate(best - cumulative[:, j]) + cumulative[:, j]
    return float(best[-1]) / xs.size


def _purity(values: Sequence[str], y: NDArray[np.int64], k: int) -> float:
    # Accuracy of predicting each value's majority class: how well a lookup table of the column
    # reproduces the target (a binning of a score, or a coded copy of the target).
    _, group = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    counts = np.zeros((int(group.max()) + 1, k), dtype=np.int64)
    np.add.at(counts, (group.reshape(-1), y), 1)
    return float(counts.max(axis=1).sum()) / len(values)


def _mid_ranks(x: NDArray[Any]) -> NDArray[np.float64]:
    """1-based ranks, ties sharing their mean rank (as ``scipy.stats.rankdata``)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks: NDArray[np.float64] = (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]
    return ranks


def _spearman(x: NDArray[np.float64], y: NDArray[np.int64]) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``; 0 where a side is constant), in numpy: the
    SciPy import alone cost 2.7 s of loading a table."""
    a, b = _mid_ranks(x), _mid_ranks(y)
    da, db = a - a.mean(), b - b.mean()
    scale = math.sqrt(float(da @ da) * float(db @ db))
    return 0.0 if scale == 0.0 else max(-1.0, min(1.0, float(da @ db) / scale))


def _leak(
    name: str, present: Sequence[str], x: NDArray[np.float64] | None, y: NDArray[np.int64], k: int
) -> DataWarning | None:
    n = len(present)
    if n < MIN_ROWS_LEAK:
        return None
    if n > _MAX_LEAK_ROWS:
        pick = np.random.default_rng(0).choice(n, _MAX_LEAK_ROWS, replace=False)
        present = [present[i] for i in pick]
        x = None if x is None else x[pick]
        y = y[pick]
        n = _MAX_LEAK_ROWS
    found: list[str] = []
    if x is not None:
        mono = max(monotone_accuracy(x, y, k), monotone_accuracy(x, k - 1 - y, k))
        rho = _spearman(x, y)
        if mono >= LEAK_ACCURACY:
            found.append(f"a monotone step function of it gets {mono:.1%} of the classes right")
        if abs(rho) >= LEAK_SPEARMAN:
            found.append(f"Spearman rho {rho:+.3f}")
    distinct = len(set(present))
    if not found and distinct <= n / 5:
        purity = _purity(present, y, k)
        if purity >= LEAK_ACCURACY:
            found.append(
                f"one class per value ({distinct} values) gets {purity:.1%} of the classes right"
            )
    if not found:
        return None
    return DataWarning(
        "leak",
        f"column {name!r} determines the target by itself on the training rows ("
        + "; ".join(found)
        + f"): a leak if it is derived from the target; leave it out with the data option ignore={name}",
        column=name,
    )


def inspect_columns(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    target: ArrayLike,
    *,
    target_column: str | Sequence[str],
    numeric: Collection[str],
    categorical: Collection[str],
    forced: Collection[str] = (),
    ignored: Collection[str] = (),
    missing: Collection[str] = (),
    num_classes: int | None = None,
    split_column: str | None = None,
) -> DataReport:
    """Describe every column of a table and warn about suspicious features.

    Parameters
    ----------
    header : sequence of str
        Column names.
    rows : sequence of sequence of str
        The raw cells of the **training** rows (one list per row, in ``header`` order).
    target : array_like of int, shape (len(rows),)
        Class index of every training row.
    target_column : str or sequence of str
        The target's column name (several: the level columns of a distribution target).
    numeric, categorical : collection of str
        The feature columns used, by the kind they were given.
    forced : collection of str
        Columns made categorical by the ``categorical`` option.
    ignored : collection of str
        Columns left out by the ``ignore`` option (other unused columns are reported as not in
        ``features``).
    missing : collection of str
        Cell values read as missing.
    num_classes : int, optional
        ``K`` (default: the largest training class + 1).
    split_column : str, optional
        The column holding the official split.

    Returns
    -------
    DataReport
        ``columns`` in file order with kind and reason; ``warnings`` naming each column.

    Examples
    --------
    >>> header = ["id", "x", "grade"]
    >>> rows = [[str(i), "1", "abc"[i % 3]] for i in range(12)]
    >>> report = inspect_columns(header, rows, [i % 3 for i in range(12)], target_column="grade",
    ...                          numeric=["id", "x"], categorical=[])
    >>> [(c.name, c.kind) for c in report.columns]
    [('id', 'numeric'), ('x', 'numeric'), ('grade', 'target')]
    >>> report.warned("id"), report.warned("constant")
    (['id'], ['x'])
    """
    y = np.asarray(target, dtype=np.int64).reshape(-1)
    if y.size != len(rows):
        raise ValueError(f"{y.size} target labels for {len(rows)} rows")
    k = int(num_classes) if num_classes is not None else (int(y.max()) + 1 if y.size else 1)
    numeric, categorical = set(numeric), set(categorical)
    forced, ignored, missing = set(forced), set(ignored), set(missing)
    report = DataReport()
    by_column = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    targets = {target_column} if isinstance(target_column, str) else set(target_column)
    for j, name in enumerate(header):
        if name in targets:
            report.columns.append(ColumnInfo(name, "target", "the target column"))
            continue
        if name == split_column:
            report.columns.append(ColumnInfo(name, "ignored", "the official split"))
            continue
        if name not in numeric and name not in categorical:
            why = "ignore option" if name in ignored else "not listed in the features option"
            report.columns.append(ColumnInfo(name, "ignored", why))
            continue
        cells = by_column[j]
        if missing.isdisjoint(cells):  # the common case, without a pass in Python
            present, yk = list(cells), y
        else:
            keep = [i for i, v in enumerate(cells) if v not in missing]
            present, yk = [cells[i] for i in keep], y[keep]
        x = _numbers(present)
        if name in numeric:
            reason = "every value is a number"
        elif name in forced:
            reason = "categorical option"
        else:
            example = next((v for v in present if _numbers([v]) is None), None)
            reason = f"non-numeric values (e.g. {example!r})" if example else "non-numeric values"
        report.columns.append(
            ColumnInfo(name, "numeric" if name in numeric else "categorical", reason)
        )
        distinct = len(set(present)) if x is None else int(np.unique(x).size)
        if distinct <= 1:
            value = f" ({present[0]!r})" if present else ""
            report.warnings.append(
                DataWarning(
                    "constant",
                    f"column {name!r} is constant{value} on the training rows and carries no "
                    f"information; leave it out with the data option ignore={name}",
                    column=name,
                )
            )
            continue
        integer = x is not None and bool(np.all(x == np.round(x)))
        treated_numeric = name in numeric
        if (
            len(present) >= MIN_ROWS_ID
            and distinct == len(present) == len(cells)
            and (integer or x is None)
        ):
            report.warnings.append(
                DataWarning(
                    "id",
                    f"column {name!r} has a different value in every training row: an "
                    f"identifier? leave it out with the data option ignore={name}",
                    column=name,
                )
            )
        elif treated_numeric and integer and 3 <= distinct <= MAX_CODES:
            report.warnings.append(
                DataWarning(
                    "maybe_categorical",
                    f"column {name!r} holds {distinct} distinct integers and is used as a number: "
                    f"if they are codes without order, pass the data option categorical={name}",
                    column=name,
                )
            )
        leak = _leak(name, present, x if treated_numeric else None, yk, k)
        if leak is not None:
            report.warnings.append(leak)
    return report


def inspect_split(
    train: ArrayLike,
    val: ArrayLike,
    test: ArrayLike,
    class_names: Sequence[str],
    *,
    hint: str = _VAL_HINT,
) -> DataReport:
    """Warn about a validation split too small to select a model on, or a split missing a class.

    Parameters
    ----------
    train, val, test : array_like of int
        Class indices of each split.
    class_names : sequence of str
        Names of the classes, in order.
    hint : str
        How the user changes the split (named in the warnings).

    Returns
    -------
    DataReport
        ``warnings`` of kind ``"small_validation"`` (fewer than :data:`MIN_VAL_ROWS` validation
        rows) and ``"missing_class"`` (a split with no row of some class).

    Examples
    --------
    >>> r = inspect_split([0, 1] * 30, [0, 0, 1], [0, 1] * 10, ["a", "b"])
    >>> r.warned("small_validation")
    ['val']
    """
    report = DataReport()
    names = list(class_names)
    parts = {"train": train, "val": val, "test": test}
    val_n = int(np.asarray(val).size)
    if val_n < MIN_VAL_ROWS:
        report.warnings.append(
            DataWarning(
                "small_validation",
                f"the validation split has {val_n} rows (under {MIN_VAL_ROWS}): model selection "
                f"on so few rows is mostly noise; {hint}",
                split="val",
            )
        )
    for part, labels in parts.items():
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        if y.size == 0:
            continue
        counts = np.bincount(y, minlength=len(names))
        absent = [names[c] for c in np.flatnonzero(counts == 0)]
        if absent:
            fix = f"; {hint}" if part == "val" else ""
            report.warnings.append(
                DataWarning(
                    "missing_class",
                    f"the {_PART_NAMES[part]} split has no row of class(es) {absent}{fix}",
                    split=part,
                )
            )
    return report


def describe_dataset(dataset: Any, *, hint: str = _VAL_HINT) -> dict[str, Any]:
    """What a model will be trained on: features, class order, split sizes, warnings.

    Parameters
    ----------
    dataset : emdloss.data.OrdinalDataset
        The dataset as it will be used (after any ``limit`` of its splits).
    hint : str
        How the user changes the validation split (named in the split warnings).

    Returns
    -------
    dict
        ``class_order`` (names), ``split_counts`` (``{split: {class: count}}``), ``inputs`` (a
        sentence on the input), ``columns`` (for CSV tables: name, kind and why, from
        :func:`inspect_columns`) and ``warnings`` (column warnings, then split warnings; each
        ``kind``, ``message``, ``column`` or ``split``).

    Examples
    --------
    >>> from emdloss.data import load_dataset
    >>> d = describe_dataset(load_dataset("swd", seed=0))
    >>> d["class_order"], d["split_counts"]["val"], d["warnings"]
    (['1', '2', '3', '4'], {'1': 2, '2': 25, '3': 28, '4': 15}, [])
    """
    names = [str(n) for n in dataset.class_names]
    parts = {part: np.asarray(getattr(dataset, part).targets) for part in ("train", "val", "test")}
    counts = {
        part: dict(zip(names, np.bincount(y, minlength=len(names)).tolist(), strict=True))
        for part, y in parts.items()
    }
    inspection = (dataset.info or {}).get("inspection") or {}
    columns = list(inspection.get("columns", []))
    if dataset.kind == "image":
        inputs = (
            f"images {'x'.join(str(s) for s in dataset.input_shape)} (channels x height x width)"
        )
    else:
        inputs = f"{int(dataset.input_shape[0])} input features"
        if dataset.feature_names and not columns:
            inputs += ": " + ", ".join(dataset.feature_names)
    split_report = inspect_split(parts["train"], parts["val"], parts["test"], names, hint=hint)
    warnings = list(inspection.get("warnings", [])) + [asdict(w) for w in split_report.warnings]
    description = {
        "class_order": names,
        "split_counts": counts,
        "inputs": inputs,
        "columns": columns,
        "warnings": warnings,
    }
    if getattr(dataset, "distribution_targets", False):
        from .distributions import distribution_summary

        description["distribution"] = distribution_summary(
            dataset.train.dists.numpy(),
            None if dataset.train.votes is None else dataset.train.votes.numpy(),
            names,
        )
    return description


def description_lines(description: Mapping[str, Any]) -> list[str]:
    """:func:`describe_dataset` as lines to print, warnings last (each ``"warning: ..."``).

    Examples
    --------
    >>> d = {"class_order": ["lo", "hi"], "inputs": "2 input features: a, b", "columns": [],
    ...      "split_counts": {"train": {"lo": 5, "hi": 7}, "val": {"lo": 1, "hi": 1},
    ...                       "test": {"lo": 2, "hi": 3}},
    ...      "warnings": [{"message": "the validation split has 2 rows"}]}
    >>> print("\\n".join(description_lines(d)))
    classes in order: lo < hi
    inputs: 2 input features: a, b
    class   train  val  test
    lo          5    1     2
    hi          7    1     3
    total      12    2     5
    warning: the validation split has 2 rows
    """
    lines = [f"classes in order: {' < '.join(description['class_order'])}"]
    lines.append(f"inputs: {description['inputs']}")
    summary = description.get("distribution")
    if summary:
        votes = summary["mean_votes"]
        lines.append(
            f"targets: distributions over the {len(summary['level_order'])} levels "
            f"(training items: {summary['items']}, mean votes per item "
            + ("n/a (proportions)" if votes is None else f"{votes:.1f}")
            + f", mean entropy {summary['mean_entropy']:.3f} nats of at most "
            f"{summary['max_entropy']:.3f}); class counts below are of the median level"
        )
    columns = description.get("columns") or []
    for kind in ("numeric", "categorical", "ignored"):
        groups: dict[str, list[str]] = {}
        for c in columns:
            if c["kind"] == kind:  # one reason per group: "non-numeric values (e.g. 'x')" -> ...
                groups.setdefault(c["reason"].split(" (e.g.")[0], []).append(c["name"])
        if groups:
            shown = "; ".join(f"{', '.join(cols)} ({why})" for why, cols in groups.items())
            lines.append(f"{kind} columns: {shown}")
    counts = description["split_counts"]
    parts = list(counts)
    rows = [[name, *[str(counts[p][name]) for p in parts]] for name in description["class_order"]]
    rows.append(["total", *[str(sum(counts[p].values())) for p in parts]])
    header = ["class", *parts]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0] + 2)] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append((cells[0] + "  ".join(cells[1:])).rstrip())
    lines.extend(f"warning: {w['message']}" for w in description.get("warnings", []))
    return lines
