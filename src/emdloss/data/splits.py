"""Deterministic stratified splits: hold-out, k-fold and group-exclusive carving.

Every function takes a ``seed`` and returns sorted index arrays, so the same seed gives the same
split on every machine and NumPy version (``numpy.random.default_rng`` with a fixed
``SeedSequence``). Classes with very few members are handled without error: a class never loses
its last member to the held-out part when it has a member to spare.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._options import as_float

# Separate random streams for the test split and the validation carve, so changing
# val_fraction never changes the test set.
_TEST_STREAM = 0
_VAL_STREAM = 1

IndexArray = NDArray[np.int64]


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(e) for e in entropy]))


def _check_labels(labels: ArrayLike) -> NDArray[np.int64]:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {array.shape}")
    if array.size and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise ValueError("labels must be non-negative integer class indices")
    return array.astype(np.int64, copy=False)


def _held_out_count(n: int, fraction: float) -> int:
    if fraction <= 0.0 or n == 0:
        return 0
    # At least one held-out sample whenever a fraction is asked for and there is one to spare.
    return min(max(1, round(fraction * n)), n - 1) if n > 1 else 0


def stratified_split(
    labels: ArrayLike, fraction: float, *, seed: int, stream: int | tuple[int, ...] = _TEST_STREAM
) -> tuple[IndexArray, IndexArray]:
    r"""Split sample indices into a kept part and a held-out part of about ``fraction``.

    Each class :math:`c` with :math:`n_c` members contributes :math:`\lfloor f n_c \rfloor` or
    :math:`\lceil f n_c \rceil` held-out members (largest remainders first), so the held-out part
    has exactly :math:`\max(1, \operatorname{round}(f n))` samples and the class proportions of both
    parts match the whole to within one sample per class.

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        Class index of every sample.
    fraction : float
        Share of the samples to hold out, in ``[0, 1)``.
    seed : int
        Seed of the shuffle inside each class.
    stream : int or tuple of int, optional
        Independent random stream (different uses of one seed get different streams).

    Returns
    -------
    kept, held : numpy.ndarray of int64
        Sorted, disjoint index arrays that together cover ``range(n)``.

    Examples
    --------
    >>> labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    >>> kept, held = stratified_split(labels, 0.5, seed=0)
    >>> np.bincount(labels[held]).tolist(), np.bincount(labels[kept]).tolist()
    ([2, 3], [2, 3])
    """
    y = _check_labels(labels)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    n = y.size
    total = _held_out_count(n, fraction)
    rng = _rng(seed, *((stream,) if isinstance(stream, int) else stream))
    classes = np.unique(y)
    members = [np.flatnonzero(y == c) for c in classes]
    quota = np.array([fraction * m.size for m in members])
    take = np.floor(quota).astype(np.int64)
    # Give the remaining held-out places to the largest remainders, never the last member.
    order = sorted(range(len(members)), key=lambda i: (-(quota[i] - take[i]), i))
    missing = total - int(take.sum())
    for _ in range(2):
        for i in order:
            if missing <= 0:
                break
            if take[i] < members[i].size - 1:
                take[i] += 1
                missing -= 1
    held_parts = []
    for m, k in zip(members, take, strict=True):
        held_parts.append(rng.permutation(m)[:k])
    held = np.sort(np.concatenate(held_parts)) if held_parts else np.zeros(0, np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask).astype(np.int64), held.astype(np.int64)


def stratified_folds(labels: ArrayLike, num_folds: int, *, seed: int) -> IndexArray:
    """Assign every sample to one of ``num_folds`` stratified folds.

    The members of each class are shuffled and dealt round-robin, continuing the count across
    classes, so fold sizes differ by at most one and each class is spread over the folds as
    evenly as possible (per-class counts differ by at most one).

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        Class index of every sample.
    num_folds : int
        Number of folds, at least 2 and at most ``n``.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        Fold index of every sample.

    Examples
    --------
    >>> stratified_folds([0, 0, 0, 1, 1, 1], 3, seed=0).tolist().count(0)
    2
    """
    y = _check_labels(labels)
    if num_folds < 2 or num_folds > max(y.size, 2):
        raise ValueError(f"num_folds must be in [2, {y.size}], got {num_folds}")
    rng = _rng(seed, _TEST_STREAM)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    folds = np.empty(y.size, dtype=np.int64)
    folds[order] = np.arange(y.size) % num_folds
    return folds


def group_split(
    groups: Sequence[str] | NDArray[np.str_],
    fraction: float,
    *,
    seed: int,
    stream: int = _VAL_STREAM,
) -> tuple[IndexArray, IndexArray]:
    """Hold out whole groups (e.g. subjects) until at least ``fraction`` of the samples are held.

    Parameters
    ----------
    groups : sequence of str, length n
        Group of every sample; a group is never split between the two parts.
    fraction : float
        Share of the samples to hold out, in ``[0, 1)``.
    seed : int
        Seed of the group shuffle.
    stream : int, optional
        Independent random stream.

    Returns
    -------
    kept, held : numpy.ndarray of int64
        Sorted, disjoint index arrays that together cover ``range(n)``.

    Examples
    --------
    >>> kept, held = group_split(["a", "a", "b", "b", "c", "c"], 0.3, seed=0)
    >>> len(held)
    2
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    names = np.asarray(groups).astype(str)
    n = names.size
    target = _held_out_count(n, fraction)
    unique = np.unique(names)
    held_mask = np.zeros(n, dtype=bool)
    if target > 0 and unique.size > 1:
        count = 0
        for g in _rng(seed, stream).permutation(unique):
            if count >= target:
                break
            members = names == g
            if count + int(members.sum()) >= n:  # keep at least one group
                continue
            held_mask |= members
            count += int(members.sum())
    return np.flatnonzero(~held_mask).astype(np.int64), np.flatnonzero(held_mask).astype(np.int64)


@dataclass(frozen=True)
class Split:
    """Indices of the train, validation and test parts, and a sentence saying how they were made.

    ``resampled``: the test part is drawn from the seed (a hold-out or a fold), so runs of other
    seeds or folds test on other rows and train on overlapping ones (their differences are
    correlated; compare widens their paired intervals for it).
    """

    train: IndexArray
    val: IndexArray
    test: IndexArray
    protocol: str
    resampled: bool = False


def check_fold(fold: int | None, num_folds: int | None) -> tuple[int, int] | None:
    """Validate ``fold``/``num_folds``; ``None`` means hold-out. A lone ``fold`` implies 5 folds.

    Examples
    --------
    >>> check_fold(None, None) is None, check_fold(2, None)
    (True, (2, 5))
    """
    if fold is None and num_folds is None:
        return None
    if fold is None:
        raise ValueError(f"num_folds={num_folds} needs fold (the test fold, 0..{num_folds}-1)")
    k = 5 if num_folds is None else num_folds
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
        raise ValueError(f"num_folds must be an integer >= 2, got {num_folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int | np.integer) or not 0 <= fold < k:
        raise ValueError(f"fold must be an integer in [0, {k - 1}], got {fold!r}")
    return int(fold), int(k)


def make_split(
    labels: ArrayLike,
    *,
    seed: int,
    fold: int | None = None,
    num_folds: int | None = None,
    val_fraction: float | str = 0.1,
    test_fraction: float | str = 0.3,
) -> Split:
    """Stratified train/val/test indices: a hold-out test part or one fold of k-fold CV.

    Without ``fold`` the test part is a stratified ``test_fraction`` hold-out; with ``fold`` it is
    that fold of a stratified ``num_folds``-fold partition (the same partition for every fold of
    one seed). The validation part is then a stratified ``val_fraction`` of the remaining samples.

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        Class index of every sample.
    seed : int
        Seed of every shuffle.
    fold, num_folds : int or None, optional
        Test fold and number of folds (``fold`` alone means 5 folds).
    val_fraction : float or str, optional
        Share of the non-test samples used for validation, in ``[0, 1)`` (strings, as from a
        command line, are parsed).
    test_fraction : float or str, optional
        Share of the samples held out for testing when not using folds, in ``(0, 1)``.

    Returns
    -------
    Split
        Sorted, disjoint index arrays covering ``range(n)`` and a protocol sentence.

    Examples
    --------
    >>> split = make_split([0] * 10 + [1] * 10, seed=0, fold=1, num_folds=4)
    >>> len(split.test), len(split.train) + len(split.val)
    (5, 15)
    """
    y = _check_labels(labels)
    val_fraction = as_float("val_fraction", val_fraction, low=0.0, high=1.0, high_inclusive=False)
    folds = check_fold(fold, num_folds)
    if folds is None:
        test_fraction = as_float(
            "test_fraction",
            test_fraction,
            low=0.0,
            high=1.0,
            low_inclusive=False,
            high_inclusive=False,
        )
        rest, test = stratified_split(y, test_fraction, seed=seed, stream=_TEST_STREAM)
        protocol = (
            f"stratified hold-out: test {test_fraction:g} of the samples (seed {seed}), "
            f"validation {val_fraction:g} of the rest"
        )
        val_stream: tuple[int, ...] = (_VAL_STREAM,)
    else:
        k_fold, k = folds
        assignment = stratified_folds(y, k, seed=seed)
        test = np.flatnonzero(assignment == k_fold).astype(np.int64)
        rest = np.flatnonzero(assignment != k_fold).astype(np.int64)
        protocol = (
            f"stratified {k}-fold cross-validation: test fold {k_fold} (seed {seed}), "
            f"validation {val_fraction:g} of the other folds"
        )
        val_stream = (_VAL_STREAM, k_fold)
    train_local, val_local = stratified_split(y[rest], val_fraction, seed=seed, stream=val_stream)
    return Split(rest[train_local], rest[val_local], test, protocol, resampled=True)


#: The values of an official split column and the part each names.
OFFICIAL_PARTS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def split_from_column(
    values: Sequence[str], *, rows: Sequence[str], column: str, source: str
) -> tuple[NDArray[np.bool_], Split]:
    """The official split written in a column (``train``/``val``/``test`` per row).

    Rows whose cell is empty belong to no part: they are left out with one
    :class:`~emdloss.errors.InputWarning` that counts them (MEBeauty has 11 such faces).

    Parameters
    ----------
    values : sequence of str
        The column's cells.
    rows : sequence of str
        How to name each row in an error.
    column, source : str
        The column's name and the file, for messages.

    Returns
    -------
    keep : numpy.ndarray of bool
        Rows that belong to a part.
    split : Split
        Indices into the kept rows.

    Raises
    ------
    UserError
        For a value other than train, val (valid, validation), test or empty (names the row),
        or a part without rows.

    Examples
    --------
    >>> keep, s = split_from_column(["train", "test", "val", "train"], rows=list("abcd"),
    ...                             column="split", source="f.csv")
    >>> s.train.tolist(), s.val.tolist(), s.test.tolist()
    ([0, 3], [2], [1])
    """
    import warnings

    from emdloss.errors import InputWarning, UserError

    parts: list[str | None] = []
    for value, row in zip(values, rows, strict=True):
        text = value.strip().lower()
        if text in ("", "na", "nan", "none", "null"):
            parts.append(None)
            continue
        part = OFFICIAL_PARTS.get(text)
        if part is None:
            raise UserError(
                f"{row}, column {column!r}: {value!r} is not a split; expected train, val or "
                f"test (or empty to leave the row out), or split_column=none to ignore the column"
            )
        parts.append(part)
    keep = np.array([p is not None for p in parts], dtype=bool)
    dropped = int((~keep).sum())
    if dropped:
        warnings.warn(
            f"{source}: {dropped} row(s) have no value in the official split column {column!r}; "
            "they are left out",
            InputWarning,
            stacklevel=3,
        )
    kept = np.array([p for p in parts if p is not None], dtype=object)
    indices = {}
    for part in ("train", "val", "test"):
        indices[part] = np.flatnonzero(kept == part).astype(np.int64)
        if indices[part].size == 0:
            raise UserError(f"{source}: the official split column {column!r} has no {part} rows")
    protocol = (
        f"the official split of column {column!r} (train {indices['train'].size}, val "
        f"{indices['val'].size}, test {indices['test'].size}"
        + (f"; {dropped} rows without a split left out" if dropped else "")
        + ")"
    )
    return keep, Split(indices["train"], indices["val"], indices["test"], protocol)


def restrict_split(split: Split, kept: Sequence[int] | NDArray[np.int64]) -> Split:
    """``split`` restricted to the rows ``kept`` (sorted indices), re-indexed into them.

    Examples
    --------
    >>> s = Split(np.array([0, 1, 4]), np.array([2]), np.array([3]), "p")
    >>> r = restrict_split(s, [0, 2, 3, 4])
    >>> r.train.tolist(), r.val.tolist(), r.test.tolist()
    ([0, 3], [1], [2])
    """
    position = {int(r): i for i, r in enumerate(kept)}
    parts = [
        np.array(
            [position[int(r)] for r in getattr(split, part) if int(r) in position], dtype=np.int64
        )
        for part in ("train", "val", "test")
    ]
    return Split(parts[0], parts[1], parts[2], split.protocol, split.resampled)
