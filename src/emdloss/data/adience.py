"""Adience age groups in the official 5-fold format (Eidinger, Enbar & Hassner 2014)."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ._dataset import OrdinalDataset
from ._download import resolve_data_dir
from ._options import as_bool, as_float, as_int
from .images import DEFAULT_IMAGE_SIZE, image_dataset
from .splits import Split, group_split

#: The 8 age groups (closed intervals in years; the last is open).
AGE_GROUPS: tuple[tuple[float, float], ...] = (
    (0, 2),
    (4, 6),
    (8, 13),
    (15, 20),
    (25, 32),
    (38, 43),
    (48, 53),
    (60, float("inf")),
)
CLASS_NAMES = ["0-2", "4-6", "8-13", "15-20", "25-32", "38-43", "48-53", "60+"]
#: Group midpoints in years; the open 60+ group is placed at 65. The files write it as
#: "(60, 100)", but its midpoint 80 would overstate the ages of most people in it.
POSITIONS = [1.0, 5.0, 10.5, 17.5, 28.5, 40.5, 50.5, 65.0]
NUM_FOLDS = 5
FOLD_FILE = "fold_{k}_data.txt"
# How the fold files write the 8 groups (the third as "(8, 12)", the last as "(60, 100)").
_STANDARD_TUPLES = frozenset(
    {(0, 2), (4, 6), (8, 12), (8, 13), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100)}
)
_TUPLE = re.compile(r"^\(\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*\)$")


def age_group(age: str) -> tuple[int, bool] | None:
    """Age group of an Adience ``age`` cell, and whether the cell was non-standard.

    ``"(a, b)"`` maps to the group containing its midpoint (so the files' ``"(8, 12)"`` and
    ``"(60, 100)"`` are standard); a single number, or the midpoint of a non-standard range such
    as ``"(38, 48)"``, maps to the group containing it, else to the nearest group by distance to
    the group's interval, ties going to the younger group (``"35"`` -> 25-32). ``"None"`` (or empty) gives None.

    Examples
    --------
    >>> age_group("(25, 32)"), age_group("(60, 100)"), age_group("35"), age_group("None")
    ((4, False), (7, False), (4, True), None)
    """
    text = age.strip()
    if text in ("", "None"):
        return None
    match = _TUPLE.match(text)
    if match:
        low, high = float(match.group(1)), float(match.group(2))
        value = (low + high) / 2.0
        standard = (low, high) in _STANDARD_TUPLES
    else:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"unreadable Adience age {age!r}") from None
        standard = False
    distances = [max(lo - value, value - hi, 0.0) for lo, hi in AGE_GROUPS]
    group = int(np.argmin(distances))  # first minimum: ties go to the younger group
    return group, not standard


def load_adience(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int | None = None,
    root: str | os.PathLike[str] | None = None,
    faces: str = "faces",
    prefix: str = "coarse_tilt_aligned_face",
    nonstandard: str = "map",
    image_size: Any = DEFAULT_IMAGE_SIZE,
    val_fraction: Any = 0.1,
    verify: Any = False,
) -> OrdinalDataset:
    """Load Adience with the official 5-fold protocol: fold ``k`` is the test set.

    Reads ``fold_0_data.txt`` .. ``fold_4_data.txt`` (tab-separated, Adience header) under
    ``root`` (default ``<data_dir>/adience``) and the images
    ``<root>/<faces>/<user_id>/<prefix>.<face_id>.<original_image>``. Rows whose age is
    ``None`` are dropped; non-standard ages are mapped with :func:`age_group` (or dropped with
    ``nonstandard="drop"``); the counts are in ``info`` and the protocol sentence. The
    validation set is a random ``val_fraction`` of the training folds' subjects (``user_id``),
    so no subject is in two of train, validation and test.

    Parameters
    ----------
    data_dir : str or PathLike, optional
        Data directory (see :func:`emdloss.data.resolve_data_dir`).
    seed : int
        Seed of the validation carve.
    fold : int, optional
        Test fold, 0-4 (default 0).
    num_folds : int, optional
        Must be None or 5.
    root, faces, prefix : optional
        Where the fold files and images are.
    nonstandard : {"map", "drop"}
        What to do with ages that are not one of the 8 groups.
    image_size : int
        Side of the square inputs.
    val_fraction : float
        Share of the training rows (by subject) used for validation.
    verify : bool
        Decode every image now.

    Returns
    -------
    OrdinalDataset
        8 classes with ``positions`` the group midpoints in years (:data:`POSITIONS`).

    Examples
    --------
    >>> load_adience(root="/nowhere")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: Adience fold file /nowhere/fold_0_data.txt not found...
    """
    if nonstandard not in ("map", "drop"):
        raise ValueError(f"nonstandard must be 'map' or 'drop', got {nonstandard!r}")
    if num_folds is not None and num_folds != NUM_FOLDS:
        raise ValueError(
            f"Adience has the official {NUM_FOLDS}-fold protocol; got num_folds={num_folds}"
        )
    test_fold = 0 if fold is None else as_int("fold", fold)
    if not 0 <= test_fold < NUM_FOLDS:
        raise ValueError(f"Adience fold must be in 0..{NUM_FOLDS - 1}, got {fold!r}")
    base = Path(root) if root is not None else resolve_data_dir(data_dir) / "adience"
    paths: list[Path] = []
    ids: list[str] = []
    labels: list[int] = []
    folds: list[int] = []
    users: list[str] = []
    dropped_none = dropped_nonstandard = mapped = 0
    for k in range(NUM_FOLDS):
        fold_file = base / FOLD_FILE.format(k=k)
        if not fold_file.is_file():
            raise FileNotFoundError(
                f"Adience fold file {fold_file} not found; Adience needs the official "
                f"fold_0_data.txt .. fold_4_data.txt and faces/ under {base} "
                "(set root=PATH or put them in <data-dir>/adience)"
            )
        with open(fold_file, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = [h.strip() for h in next(reader, [])]
            missing = [
                c for c in ("user_id", "original_image", "face_id", "age") if c not in header
            ]
            if missing:
                raise ValueError(f"{fold_file}: missing column(s) {missing}; header is {header}")
            col = {
                name: header.index(name) for name in ("user_id", "original_image", "face_id", "age")
            }
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) < len(header) - 1:  # tolerate an absent trailing empty cell
                    raise ValueError(
                        f"{fold_file}, line {reader.line_num}: {len(row)} fields, expected {len(header)}"
                    )
                age = row[col["age"]]
                try:
                    group = age_group(age)
                except ValueError as exc:
                    raise ValueError(f"{fold_file}, line {reader.line_num}: {exc}") from None
                if group is None:
                    dropped_none += 1
                    continue
                index, unusual = group
                if unusual:
                    if nonstandard == "drop":
                        dropped_nonstandard += 1
                        continue
                    mapped += 1
                user = row[col["user_id"]].strip()
                relative = (
                    Path(faces)
                    / user
                    / f"{prefix}.{row[col['face_id']].strip()}.{row[col['original_image']].strip()}"
                )
                paths.append(base / relative)
                ids.append(relative.as_posix())
                labels.append(index)
                folds.append(k)
                users.append(user)
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} Adience image(s) listed in the fold files are missing, e.g. {absent[0]}"
        )
    label_array = np.asarray(labels, dtype=np.int64)
    fold_array = np.asarray(folds)
    test = np.flatnonzero(fold_array == test_fold).astype(np.int64)
    rest = np.flatnonzero(fold_array != test_fold).astype(np.int64)
    val_share = as_float("val_fraction", val_fraction, low=0.0, high=1.0, high_inclusive=False)
    train_local, val_local = group_split([users[i] for i in rest], val_share, seed=seed, stream=1)
    drops = f"{dropped_none} rows without an age dropped"
    drops += (
        f", {dropped_nonstandard} non-standard ages dropped"
        if nonstandard == "drop"
        else f", {mapped} non-standard ages mapped to the nearest group"
    )
    split = Split(
        rest[train_local],
        rest[val_local],
        test,
        f"official Adience 5-fold protocol: test fold {test_fold}, validation {val_share:g} of "
        f"the other folds' subjects (seed {seed}); {drops}",
    )
    return image_dataset(
        name="adience",
        paths=paths,
        ids=ids,
        labels=label_array,
        class_names=list(CLASS_NAMES),
        positions=list(POSITIONS),
        split=split,
        image_size=as_int("image_size", image_size, minimum=1),
        info={
            "root": str(base),
            "test_fold": test_fold,
            "dropped_none": dropped_none,
            "dropped_nonstandard": dropped_nonstandard,
            "mapped_nonstandard": mapped,
            "fold_sizes": np.bincount(fold_array, minlength=NUM_FOLDS).tolist(),
        },
        verify=as_bool("verify", verify),
    )
