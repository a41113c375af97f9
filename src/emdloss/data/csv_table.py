"""Any CSV file with an ordinal target column (``csv:PATH``)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emdloss.errors import UserError

from ._csv_cells import (
    INVALID_POLICIES,
    MISSING_POLICIES,
    MISSING_TOKENS,
    _classify_columns,
    _number,
    read_csv_rows,
)
from ._dataset import OrdinalDataset
from ._options import as_bool, as_float_list, as_int, as_str_list
from ._table import encode_table, tabular_dataset
from .distributions import (
    DistributionTargets,
    distribution_columns,
    level_names,
    level_positions,
    median_class,
    read_distribution,
)
from .inspection import inspect_columns
from .splits import Split, make_split, restrict_split, split_from_column


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def bin_scores(
    scores: NDArray[np.float64],
    *,
    bins: int | None = None,
    bin_edges: list[float] | None = None,
    binning: str = "uniform",
) -> tuple[NDArray[np.int64], list[str], list[float], NDArray[np.float64]]:
    r"""Bin continuous scores into ordered classes.

    With ``bins=K`` and ``binning="uniform"`` the range :math:`[\min, \max]` is cut into K equal
    widths; with ``"quantile"`` the cuts are the :math:`k/K` quantiles. ``bin_edges`` gives the
    K-1 inner cut points :math:`e_1 < \dots < e_{K-1}` directly. A score :math:`s` falls into
    class :math:`k = \#\{i : e_i \le s\}`, i.e. bins are closed on the left
    (:math:`[e_k, e_{k+1})`), the last one closed on both sides, as in ``numpy.histogram``.

    Returns
    -------
    labels : numpy.ndarray of int64
    class_names : list of str
        ``"[a, b)"`` intervals (the first and last bounded by the data's min and max).
    positions : list of float
        Bin midpoints.
    inner_edges : numpy.ndarray
        The K-1 inner edges used.

    Examples
    --------
    >>> labels, names, pos, _ = bin_scores(np.array([0.0, 1.0, 2.0, 3.0]), bins=2)
    >>> labels.tolist(), names, pos
    ([0, 0, 1, 1], ['[0, 1.5)', '[1.5, 3]'], [0.75, 2.25])
    """
    lo, hi = float(np.min(scores)), float(np.max(scores))
    if bin_edges is not None:
        inner = np.asarray(bin_edges, dtype=np.float64)
        if inner.size < 1 or np.any(np.diff(inner) <= 0):
            raise UserError(
                f"bin_edges must be strictly increasing inner cut points, got {bin_edges}"
            )
    else:
        if bins is None or bins < 2:
            raise UserError(f"bins must be an integer >= 2, got {bins!r}")
        if hi <= lo:
            raise UserError(f"cannot bin a constant score ({lo:g}) into {bins} classes")
        if binning == "uniform":
            inner = np.linspace(lo, hi, bins + 1)[1:-1]
        elif binning == "quantile":
            inner = np.quantile(scores, np.arange(1, bins) / bins)
            if np.any(np.diff(inner) <= 0) or inner[0] <= lo:
                raise UserError(
                    f"quantile binning into {bins} classes gives repeated edges {inner.tolist()}; "
                    "use fewer bins or binning='uniform'"
                )
        else:
            raise UserError(f"binning must be 'uniform' or 'quantile', got {binning!r}")
    labels = np.searchsorted(inner, scores, side="right").astype(np.int64)
    bounds = [min(lo, float(inner[0])), *inner.tolist(), max(hi, float(inner[-1]))]
    names = [
        f"[{_fmt(a)}, {_fmt(b)}" + ("]" if k == len(bounds) - 2 else ")")
        for k, (a, b) in enumerate(itertools.pairwise(bounds))
    ]
    positions = [(a + b) / 2 for a, b in itertools.pairwise(bounds)]
    return labels, names, positions, inner


@dataclass
class TargetEncoding:
    """Class indices of a target column, the class names in order and their positions."""

    labels: NDArray[np.int64]
    class_names: list[str]
    positions: list[float] | None
    scores: NDArray[np.float64] | None  # the numeric values, when the target is numeric


def class_indices(
    values: Sequence[str],
    lines: Sequence[int],
    *,
    path: Path,
    column: str,
    class_names: Sequence[str],
) -> NDArray[np.int64]:
    """The class index of each label cell: the class of that name, or of the numerically equal
    name (``"1.0"`` is class ``"1"``).

    Raises
    ------
    UserError
        Naming the file, line, value and column of a label outside ``class_names``.

    Examples
    --------
    >>> class_indices(["2.0", "1"], [2, 3], path=Path("f.csv"), column="y",
    ...               class_names=["1", "2"]).tolist()
    [1, 0]
    """
    names = list(class_names)
    lookup = {name: k for k, name in enumerate(names)}
    numeric_lookup = {v: k for k, n in enumerate(names) if (v := _number(n)) is not None}
    labels = []
    for value, line in zip(values, lines, strict=True):
        k = lookup.get(value)
        if k is None and (number := _number(value)) is not None:
            k = numeric_lookup.get(number)
        if k is None:
            raise UserError(
                f"{path}, line {line}: label {value!r} in column {column!r} is not one of "
                f"the declared classes {names}"
            )
        labels.append(k)
    return np.asarray(labels, dtype=np.int64)


def missing_target_error(
    path: Path, line: int, column: str, hint: str = "use missing='drop' to drop such rows"
) -> UserError:
    """The error of a row whose target (or count) cell is missing, under ``missing="error"``;
    ``hint`` says what the reader can do about it.

    Examples
    --------
    >>> str(missing_target_error(Path("f.csv"), 7, "votes_2"))
    "f.csv, line 7: missing target value in column 'votes_2' (use missing='drop' to drop such rows)"
    """
    return UserError(f"{path}, line {line}: missing target value in column {column!r} ({hint})")


def encode_target(
    values: list[str],
    lines: list[int],
    *,
    path: Path,
    column: str,
    classes: Any = None,
    bins: Any = None,
    bin_edges: Any = None,
    binning: str = "uniform",
    note: str = "",
) -> TargetEncoding:
    """Turn the cells of a target column into class indices (see :func:`load_csv`).

    Raises
    ------
    ValueError
        Naming the file, line and value of a label outside ``classes`` or a non-numeric target
        without ``classes``, and naming every empty class.

    Examples
    --------
    >>> encode_target(["b", "a", "b"], [2, 3, 4], path=Path("f.csv"), column="y",
    ...               classes="b,a").labels.tolist()
    [0, 1, 0]
    """
    positions: list[float] | None
    scores: NDArray[np.float64] | None = None
    if classes is not None:
        if bins is not None or bin_edges is not None:
            raise UserError("give either classes or bins/bin_edges, not both")
        class_names = as_str_list("classes", classes)
        if len(set(class_names)) != len(class_names):
            raise UserError(f"classes has repeated names: {class_names}")
        labels = class_indices(values, lines, path=path, column=column, class_names=class_names)
        numeric_names = [_number(n) for n in class_names]
        positions = (
            [float(v) for v in numeric_names if v is not None]
            if all(v is not None for v in numeric_names)
            else None
        )
    else:
        numbers = []
        for value, line in zip(values, lines, strict=True):
            number = _number(value)
            if number is None:
                raise UserError(
                    f"{path}, line {line}: target {value!r} in column {column!r} is not a number; "
                    "give the class order with classes='a,b,c' (or bins for a continuous score)"
                )
            numbers.append(number)
        scores = np.asarray(numbers, dtype=np.float64)
        if bins is not None or bin_edges is not None:
            labels, class_names, positions, _ = bin_scores(
                scores,
                bins=None if bins is None else as_int("bins", bins, minimum=2),
                bin_edges=None if bin_edges is None else as_float_list("bin_edges", bin_edges),
                binning=binning,
            )
        else:
            levels = np.unique(scores)
            if levels.size < 2:
                raise UserError(f"{path}: the target column {column!r} has a single value")
            labels = np.searchsorted(levels, scores).astype(np.int64)
            class_names = [_fmt(v) for v in levels]
            positions = [float(v) for v in levels]
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [class_names[k] for k in np.flatnonzero(counts == 0)]
    if empty:
        raise UserError(f"{path}: class(es) {empty} of column {column!r} have no rows{note}")
    return TargetEncoding(labels, class_names, positions, scores)


def read_count_columns(
    rows: Sequence[Sequence[str]],
    lines: Sequence[int],
    header: Sequence[str],
    columns: Sequence[int],
    *,
    path: Path,
    classes: Any = None,
) -> tuple[DistributionTargets, TargetEncoding]:
    """Distribution targets from a CSV's vote-count or proportion ``columns`` (``csv:`` and
    ``images:``), and their class encoding: the median level of each row, the level names
    (``classes``, else :func:`~emdloss.data.distributions.level_names` of the columns) and
    their numeric positions.

    Raises
    ------
    UserError
        For a cell that is not a finite number (its text named), the checks of
        :func:`~emdloss.data.distributions.read_distribution`, numbered levels out of order, or
        ``classes`` of another length than ``columns``.
    """
    levels = [header[c] for c in columns]
    values = np.empty((len(rows), len(columns)), dtype=np.float64)
    for r, cells in enumerate(rows):
        for j, c in enumerate(columns):
            number = _number(cells[c])
            if number is None:
                shown = "an empty cell" if cells[c] == "" else repr(cells[c])
                raise UserError(
                    f"{path}, line {lines[r]}, column {header[c]!r}: {shown} is not a finite "
                    "number; expected a vote count or a proportion >= 0"
                )
            values[r, j] = number
    target = read_distribution(
        values, rows=[f"{path}, line {n}" for n in lines], columns=levels, source=str(path)
    )
    names = level_names(levels)
    positions = level_positions(names, source=str(path))
    if classes is not None:
        given = as_str_list("classes", classes)
        if len(given) != len(levels):
            raise UserError(
                f"{path}: classes names {len(given)} levels for {len(levels)} count columns "
                f"{levels}"
            )
        names = given
        positions = level_positions(names, source=str(path)) or positions
    return target, TargetEncoding(median_class(target.proportions), names, positions, None)


def official_split(
    header: list[str],
    rows: list[list[str]],
    lines: list[int],
    split_column: str | None,
    path: Path,
    fold: int | None,
    num_folds: int | None,
) -> tuple[Split | None, list[list[str]], list[int]]:
    """The official split of a CSV's ``split_column`` when it has one, and the rows in it.

    ``split_column`` ``None`` or ``"none"`` ignores the column. Rows without a split are left
    out (one warning); asking for folds of a file with an official split is refused.
    """
    if split_column is None or str(split_column).lower() == "none" or split_column not in header:
        return None, rows, lines
    if fold is not None or num_folds is not None:
        raise UserError(
            f"{path} has the official split column {split_column!r}: folds do not apply "
            "(use split_column=none to ignore the column and draw folds)"
        )
    c = header.index(split_column)
    keep, split = split_from_column(
        [cells[c] for cells in rows],
        rows=[f"{path}, line {n}" for n in lines],
        column=split_column,
        source=str(path),
    )
    kept = np.flatnonzero(keep)
    return split, [rows[r] for r in kept], [lines[r] for r in kept]


def load_csv(
    path: str | os.PathLike[str],
    *,
    target: str | None = None,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int | None = None,
    classes: Any = None,
    bins: Any = None,
    bin_edges: Any = None,
    binning: str = "uniform",
    missing: str = "error",
    invalid: str = "error",
    features: Any = None,
    ignore: Any = None,
    categorical: Any = None,
    delimiter: str = ",",
    encoding: str = "utf-8-sig",
    val_fraction: Any = 0.1,
    test_fraction: Any = 0.3,
    count_columns: Any = None,
    split_column: str = "split",
    standardize: Any = True,
) -> OrdinalDataset:
    """Load a CSV file whose column ``target`` holds an ordinal class, or whose
    ``count_columns`` hold a distribution over ordered levels (vote counts or proportions).

    Class order: ``classes`` (explicit, e.g. ``"low,medium,high"``), else the sorted numeric
    values of the target, else (continuous targets) ``bins``/``bin_edges`` (see
    :func:`bin_scores`). Every other column (or those in ``features``, minus ``ignore``) is a
    feature: numeric when all its present cells are finite numbers (unless listed in
    ``categorical``), categorical when none is (one-hot over the categories of the training
    rows). A column of numbers with a few other cells (``x``, ``inf``, ``1e309``, a NUL byte) is
    refused with the file, line, column and value named, never silently re-encoded: declare it
    ``categorical``, or set ``invalid="missing"``. Numeric features are standardised with
    training statistics (exactly rescaled by a power of two first, so that values up to the
    float64 limit never overflow into NaN), unless ``standardize`` is false. Splits as in
    :func:`emdloss.data.make_split`.

    Parameters
    ----------
    path : str or PathLike
        CSV file with a header row.
    target : str
        Name of the target column (required).
    classes : str or list of str, optional
        Class names in order; target cells must equal one of them (numerically equal numbers
        also match, so ``"1.0"`` matches class ``"1"``).
    bins : int, optional
        Bin a continuous target into this many classes.
    bin_edges : str or list of float, optional
        Inner cut points of the bins instead of ``bins``.
    binning : {"uniform", "quantile"}
        How ``bins`` places the cuts.
    missing : {"error", "drop", "impute"}
        Missing cells (empty, ``NA``, ``N/A``, ``NaN``, ``nan``, ``NULL``, ``null`` or ``?``;
        ``emdloss.data._csv_cells.MISSING_TOKENS``): refuse with the line and column named, drop
        the rows, or impute features (numeric: training median; categorical: all-zero code).
        Rows with a missing target (or count cell) are dropped under ``"drop"`` and ``"impute"``.
    invalid : {"error", "missing"}
        Cells that are not finite numbers in a column whose other cells are (mostly) numbers:
        refuse them with the cell named, or read them as missing values (then ``missing``
        applies).
    features, ignore, categorical : str or list of str, optional
        Feature columns to use, columns to leave out, columns to treat as categorical.
    delimiter : str
        Field separator.
    encoding : str
        Text encoding of the file (default UTF-8, with or without a byte-order mark), e.g.
        ``"latin-1"``.
    val_fraction, test_fraction, seed, fold, num_folds
        Split settings.
    count_columns : str or list of str, optional
        Distribution targets instead of ``target``: the level columns in order
        (``"votes_1,votes_2,votes_3"``) or their common prefix (``"votes_"``), holding vote
        counts or proportions (see :mod:`emdloss.data.distributions`; the checks name the line
        and column of a bad cell). Level names are what follows the prefix (``1`` ... ``10``),
        or ``classes``; ``ignore`` leaves columns out of a prefix.
    split_column : str
        A column holding the official split (``train``/``val``/``test`` per row; rows left
        empty are dropped with one warning), used when the file has it (default ``split``);
        ``none`` ignores it. It is never a feature.
    standardize : bool or str
        Standardise the numeric features (default); ``False`` (``"false"`` from the command
        line) keeps them as they are (see :func:`emdloss.data._table.encode_table`).

    Returns
    -------
    OrdinalDataset
        ``ids`` are ``"line N"`` (1-based line of the file); ``info`` counts dropped rows.

    Raises
    ------
    UserError
        For a missing column (lists the columns), a label outside the classes (names the line
        and value), an empty class, a missing value under ``missing="error"``, a cell that is
        not a finite number in a numeric column, a value too large to standardise, text not in
        ``encoding``. :class:`~emdloss.errors.UserError` is a ValueError.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d, "t.csv")
    ...     _ = p.write_text("x,grade\\n" + "".join(f"{i},{'abc'[i % 3]}\\n" for i in range(30)))
    ...     ds = load_csv(p, target="grade", classes="a,b,c")
    >>> ds.class_names, ds.input_shape, len(ds.test)
    (['a', 'b', 'c'], (1,), 9)
    """
    path = Path(path)
    if count_columns is not None and target:
        raise UserError(
            f"csv:{path}: give target=COLUMN (a class) or count_columns=... (a distribution), "
            "not both"
        )
    if not target and count_columns is None:
        raise UserError(
            f"csv:{path} needs the option target=COLUMN (the ordinal target column) or "
            "count_columns=PREFIX_ (vote-count or proportion columns)"
        )
    if missing not in MISSING_POLICIES:
        raise UserError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    if invalid not in INVALID_POLICIES:
        raise UserError(f"invalid must be one of {INVALID_POLICIES}, got {invalid!r}")
    standardize = as_bool("standardize", standardize)
    header, rows, lines = read_csv_rows(path, delimiter=delimiter, encoding=encoding)

    def column_index(name: str, role: str) -> int:
        if name not in header:
            raise UserError(f"{role} column {name!r} not found in {path}; columns: {header}")
        return header.index(name)

    official, rows, lines = official_split(header, rows, lines, split_column, path, fold, num_folds)
    ignored = set(as_str_list("ignore", ignore)) if ignore is not None else set()
    for name in ignored:
        column_index(name, "ignored")
    if count_columns is not None:
        levels = distribution_columns(
            count_columns, header, source=f"csv:{path}", exclude=sorted(ignored)
        )
        target_cols = [header.index(n) for n in levels]
    else:
        assert target is not None
        target_cols = [column_index(target, "target")]
    not_features = set(target_cols)
    if official is not None:
        not_features.add(header.index(split_column))
    if features is not None:
        feature_cols = [column_index(n, "feature") for n in as_str_list("features", features)]
    else:
        feature_cols = [
            i for i, n in enumerate(header) if i not in not_features and n not in ignored
        ]
    clash = [header[c] for c in feature_cols if c in not_features]
    if clash:
        raise UserError(f"the target or split column {clash[0]!r} cannot also be a feature")
    forced = set(as_str_list("categorical", categorical)) if categorical is not None else set()
    for name in forced:
        column_index(name, "categorical")
    # Before the missing-value pass: under invalid="missing" odd cells become missing ones.
    numeric_cols, categorical_cols, numeric_values = _classify_columns(
        header, rows, lines, feature_cols, path=path, forced=forced, invalid=invalid
    )

    # Rows with missing cells.
    dropped_target = dropped_features = 0
    kept: list[int] = []
    for r, cells in enumerate(rows):
        absent = [header[c] for c in target_cols if cells[c] in MISSING_TOKENS]
        if absent:
            if missing == "error":
                raise missing_target_error(path, lines[r], absent[0])
            dropped_target += 1
            continue
        gaps = [header[c] for c in feature_cols if cells[c] in MISSING_TOKENS]
        if gaps and missing == "error":
            raise UserError(
                f"{path}, line {lines[r]}: missing value in column {gaps[0]!r} "
                "(use missing='drop' or missing='impute')"
            )
        if gaps and missing == "drop":
            dropped_features += 1
            continue
        kept.append(r)
    rows = [rows[r] for r in kept]
    lines = [lines[r] for r in kept]
    if not rows:
        raise UserError(f"{path} has no usable data rows")

    distribution: DistributionTargets | None = None
    if count_columns is not None:
        if bins is not None or bin_edges is not None:
            raise UserError("count_columns name the levels; bins and bin_edges do not apply")
        distribution, target_encoding = read_count_columns(
            rows, lines, header, target_cols, path=path, classes=classes
        )
        target = ",".join(levels)
    else:
        target_encoding = encode_target(
            [cells[target_cols[0]] for cells in rows],
            lines,
            path=path,
            column=str(target),
            classes=classes,
            bins=bins,
            bin_edges=bin_edges,
            binning=binning,
            note=" (after dropping rows with missing values)" if dropped_features else "",
        )
    labels, class_names = target_encoding.labels, target_encoding.class_names

    numeric = np.empty((len(rows), len(numeric_cols)), dtype=np.float64)
    for j, c in enumerate(numeric_cols):
        numeric[:, j] = numeric_values[c][kept]
    categorical_values = [
        [None if cells[c] in MISSING_TOKENS else cells[c] for cells in rows]
        for c in categorical_cols
    ]
    if official is not None:
        split = restrict_split(official, kept)
    else:
        split = make_split(
            labels,
            seed=seed,
            fold=fold,
            num_folds=num_folds,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
        )
    table = encode_table(
        numeric,
        [header[c] for c in numeric_cols],
        categorical_values,
        [header[c] for c in categorical_cols],
        split,
        row_names=[f"{path}, line {n}" for n in lines],
        standardize=standardize,
    )
    if not table.feature_names:
        raise UserError(f"{path}: no feature columns left besides the target {target!r}")
    if official is not None:
        info_split = {"split_column": split_column}
    else:
        info_split = {}
    info: dict[str, object] = {
        "file": str(path),
        "target": target,
        "rows_read": len(kept) + dropped_target + dropped_features,
        "dropped_missing_target": dropped_target,
        "dropped_missing_features": dropped_features,
        **info_split,
        "numeric_columns": [header[c] for c in numeric_cols],
        "categorical_columns": [header[c] for c in categorical_cols],
        # What predict fills an empty numeric cell with, as training did (missing="impute").
        **({"feature_median": table.medians.tolist()} if missing == "impute" else {}),
        # What each column became and warnings about suspicious ones (training rows only).
        "inspection": inspect_columns(
            header,
            [rows[r] for r in split.train],
            labels[split.train],
            target_column=str(target) if count_columns is None else levels,
            split_column=None if official is None else split_column,
            numeric=[header[c] for c in numeric_cols],
            categorical=[header[c] for c in categorical_cols],
            forced=forced,
            ignored=ignored,
            missing=MISSING_TOKENS,
            num_classes=len(class_names),
        ).to_dict(),
    }
    return tabular_dataset(
        name=f"csv:{path}",
        class_names=class_names,
        positions=target_encoding.positions,
        labels=labels,
        ids=[f"line {n}" for n in lines],
        table=table,
        split=split,
        info=info,
        dists=None if distribution is None else distribution.proportions,
        votes=None if distribution is None else distribution.counts,
        target_kind="label" if distribution is None else "distribution",
    )
