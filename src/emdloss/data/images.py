"""Image sources: a folder with one sub-folder per class, and a CSV of image paths with labels
or scores (optionally soft target distributions)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from ._dataset import IMAGE_CACHE_BYTES, ImageFileSplit, OrdinalDataset
from ._options import as_bool, as_float, as_int, as_str_list
from .csv_table import (
    MISSING_TOKENS,
    _number,
    encode_target,
    official_split,
    read_count_columns,
    read_csv_rows,
)
from .distributions import distribution_columns
from .splits import Split, make_split

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
DEFAULT_IMAGE_SIZE = 64
#: The columns an ``images:`` CSV's image paths are looked for in, in order, without
#: ``path_column=`` (MEBeauty's ``ratings.csv`` names it ``image``).
PATH_COLUMNS = ("path", "image")


def image_dataset(
    *,
    name: str,
    paths: list[Path],
    ids: list[str],
    labels: NDArray[np.int64],
    class_names: list[str],
    positions: list[float] | None,
    split: Split,
    image_size: int,
    info: dict[str, Any],
    dists: NDArray[np.float64] | None = None,
    votes: NDArray[np.float64] | None = None,
    target_kind: Literal["label", "distribution"] = "label",
    verify: bool = False,
) -> OrdinalDataset:
    """Assemble an :class:`~emdloss.data.OrdinalDataset` of lazily loaded image files from a split."""
    parts = {}
    cache = len(paths) * 3 * image_size**2 <= IMAGE_CACHE_BYTES
    for part in ("train", "val", "test"):
        rows = getattr(split, part)
        parts[part] = ImageFileSplit(
            [paths[i] for i in rows],
            labels[rows],
            image_size=image_size,
            ids=[ids[i] for i in rows],
            dists=None if dists is None else dists[rows],
            cache=cache,
        )
        if votes is not None:
            parts[part].votes = torch.as_tensor(np.asarray(votes, dtype=np.float32)[rows])
        if verify:
            parts[part].verify()
    info = dict(info)
    info["split_indices"] = {p: getattr(split, p).tolist() for p in ("train", "val", "test")}
    return OrdinalDataset(
        name=name,
        class_names=class_names,
        kind="image",
        input_shape=(3, image_size, image_size),
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        positions=positions,
        protocol=split.protocol,
        resampled=split.resampled,
        info=info,
        target_kind=target_kind,
    )


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int | None = None,
    classes: Any = None,
    image_size: Any = DEFAULT_IMAGE_SIZE,
    val_fraction: Any = 0.1,
    test_fraction: Any = 0.2,
    verify: Any = False,
) -> OrdinalDataset:
    """Load a folder holding one sub-folder of images per class.

    The class order is ``classes`` (names of the sub-folders, in order); without it the
    sub-folder names must all be integers and are sorted numerically. Images (files with the
    extensions in :data:`IMAGE_EXTENSIONS`, searched recursively, sorted by path) are read lazily
    as RGB and resized to ``image_size``; the splits are stratified per seed (hold-out
    ``test_fraction`` or k-fold).

    Parameters
    ----------
    root : str or PathLike
        The folder.
    classes : str or list of str, optional
        Sub-folder names in class order.
    image_size : int, optional
        Side of the square inputs (default 64).
    verify : bool, optional
        Decode every image now rather than when it is first read.
    seed, fold, num_folds, val_fraction, test_fraction
        Split settings.

    Returns
    -------
    OrdinalDataset
        ``ids`` are the paths relative to ``root``.

    Raises
    ------
    ValueError
        Without ``classes`` when the sub-folders are not integers, for a sub-folder not in
        ``classes`` or a class without a sub-folder, for an empty class.

    Examples
    --------
    >>> import tempfile, PIL.Image
    >>> with tempfile.TemporaryDirectory() as d:
    ...     for c in ("mild", "severe"):
    ...         Path(d, c).mkdir()
    ...         for i in range(5):
    ...             PIL.Image.new("RGB", (8, 8)).save(Path(d, c, f"{i}.png"))
    ...     ds = load_image_folder(d, classes="mild,severe", image_size=8)
    ...     tuple(ds.train[0][0].shape), len(ds.test)
    ((3, 8, 8), 2)
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is not None:
        class_names = as_str_list("classes", classes)
        absent = [c for c in class_names if c not in folders]
        if absent:
            raise ValueError(
                f"{root}: no sub-folder for class(es) {absent}; sub-folders: {folders}"
            )
        extra = [f for f in folders if f not in class_names]
        if extra:
            raise ValueError(
                f"{root}: sub-folder(s) {extra} are not in classes {class_names}; "
                "list every class in order or move the other folders out"
            )
    else:
        if len(folders) < 2 or any(
            _number(f) is None or not float(f).is_integer() for f in folders
        ):
            raise ValueError(
                f"{root}: give the class order with classes='a,b,c'; sub-folders {folders} "
                "are not all integers, so their order cannot be inferred"
            )
        class_names = sorted(folders, key=float)
    paths: list[Path] = []
    labels_list: list[int] = []
    for k, name in enumerate(class_names):
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise ValueError(f"class {name!r} is empty: no image files under {root / name}")
        paths.extend(files)
        labels_list.extend([k] * len(files))
    labels = np.asarray(labels_list, dtype=np.int64)
    split = make_split(
        labels,
        seed=seed,
        fold=fold,
        num_folds=num_folds,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    numeric = [_number(c) for c in class_names]
    return image_dataset(
        name=f"folder:{root}",
        paths=paths,
        ids=[p.relative_to(root).as_posix() for p in paths],
        labels=labels,
        class_names=class_names,
        positions=[float(v) for v in numeric if v is not None] if None not in numeric else None,
        split=split,
        image_size=as_int("image_size", image_size, minimum=1),
        info={"root": str(root)},
        verify=as_bool("verify", verify),
    )


def gaussian_targets(
    centres: NDArray[np.float64], positions: NDArray[np.float64], sigma: float
) -> NDArray[np.float64]:
    r"""Soft targets: a Gaussian around each centre, discretised on the class positions.

    .. math::

        q_{ik} = \frac{\exp(-(p_k - c_i)^2 / 2\sigma^2)}{\sum_j \exp(-(p_j - c_i)^2 / 2\sigma^2)}

    Examples
    --------
    >>> q = gaussian_targets(np.array([1.0]), np.array([0.0, 1.0, 2.0]), 1.0)
    >>> q.round(3).tolist()
    [[0.274, 0.452, 0.274]]
    """
    if not sigma > 0:
        raise ValueError(f"soft_sigma must be > 0, got {sigma!r}")
    z = -((positions[None, :] - centres[:, None]) ** 2) / (2.0 * sigma**2)
    z -= z.max(axis=1, keepdims=True)  # stable: the largest term is exp(0)
    weights = np.exp(z)
    result: NDArray[np.float64] = weights / weights.sum(axis=1, keepdims=True)
    return result


def load_image_csv(
    csv_path: str | os.PathLike[str],
    *,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int | None = None,
    path_column: str | None = None,
    label_column: str | None = None,
    score_column: str | None = None,
    count_columns: Any = None,
    classes: Any = None,
    bins: Any = None,
    bin_edges: Any = None,
    binning: str = "uniform",
    soft: Any = False,
    soft_sigma: Any = None,
    image_root: str | os.PathLike[str] | None = None,
    image_size: Any = DEFAULT_IMAGE_SIZE,
    delimiter: str = ",",
    val_fraction: Any = 0.1,
    test_fraction: Any = 0.2,
    verify: Any = False,
    split_column: str = "split",
) -> OrdinalDataset:
    r"""Load images listed in a CSV with a class label, a score, or per-class rating counts.

    Targets come from one of:

    - a label column (default ``label``): class order from ``classes`` or sorted numbers;
    - a score column (default ``score``, e.g. an aesthetics score): binned into ordered classes
      with ``bins``/``bin_edges`` (see :func:`emdloss.data.csv_table.bin_scores`);
    - ``count_columns`` (one column per level, in order, or their common prefix such as
      ``votes_``; vote counts or proportions, checked as in
      :mod:`emdloss.data.distributions`): a distribution target; the class is the label/score
      when present, else the median level of the distribution (first level whose cumulative
      share reaches 1/2).

    A ``split_column`` (default ``split``) holding ``train``/``val``/``test`` is the official
    split and is used when the file has it (rows left empty are dropped with one warning).

    With ``soft=True`` and no counts, the soft target is a discretised Gaussian
    (:func:`gaussian_targets`) centred on the score over the bin midpoints with ``soft_sigma``
    (default: one bin width, in score units), or centred on the class index with ``soft_sigma``
    (default 1) in class units for labels. Items are then ``(x, y, dist)``.

    Parameters
    ----------
    csv_path : str or PathLike
        The CSV (with a header row).
    path_column : str, optional
        Column of image paths, relative to ``image_root`` (default: the CSV's folder); by
        default the first of :data:`PATH_COLUMNS` (``path``, ``image``) that the file has.
    label_column, score_column : str, optional
        Target column; by default ``label`` or ``score``, whichever exists.
    count_columns : str or list of str, optional
        Per-level count or proportion columns, or their prefix (distribution targets).
    split_column : str
        The official split column (``none`` to ignore it).
    classes, bins, bin_edges, binning
        Class order / binning as in :func:`emdloss.data.csv_table.load_csv`.
    soft : bool
        Also return soft target distributions.
    soft_sigma : float, optional
        Width of the Gaussian soft targets.
    image_root : str or PathLike, optional
        Base folder of relative paths.
    image_size : int
        Side of the square inputs.
    delimiter, val_fraction, test_fraction, seed, fold, num_folds, verify
        As for :func:`load_image_folder`.

    Returns
    -------
    OrdinalDataset
        ``ids`` are the paths as written in the CSV.

    Examples
    --------
    >>> import tempfile, PIL.Image
    >>> with tempfile.TemporaryDirectory() as d:
    ...     rows = []
    ...     for i in range(10):
    ...         PIL.Image.new("RGB", (8, 8)).save(Path(d, f"{i}.png"))
    ...         rows.append(f"{i}.png,{i / 2}")
    ...     _ = Path(d, "s.csv").write_text("path,score\n" + "\n".join(rows))
    ...     ds = load_image_csv(Path(d, "s.csv"), bins=3, soft=True, image_size=8)
    ...     x, y, dist = ds.train[0]
    >>> ds.class_names, round(float(dist.sum()), 6)
    (['[0, 1.5)', '[1.5, 3)', '[3, 4.5]'], 1.0)
    """
    csv_path = Path(csv_path)
    header, rows, lines = read_csv_rows(csv_path, delimiter=delimiter)
    official, rows, lines = official_split(
        header, rows, lines, split_column, csv_path, fold, num_folds
    )

    def column_index(name: str, role: str) -> int:
        if name not in header:
            raise ValueError(f"{role} column {name!r} not found in {csv_path}; columns: {header}")
        return header.index(name)

    if not rows:
        raise ValueError(f"{csv_path} has no data rows")
    if path_column is None:
        found = [c for c in PATH_COLUMNS if c in header]
        if not found:
            raise ValueError(
                f"{csv_path} has no image path column {' or '.join(map(repr, PATH_COLUMNS))}; "
                f"name it with path_column=; columns: {header}"
            )
        path_column = found[0]
    p_col = column_index(path_column, "path")
    counts_cols = (
        [
            header.index(c)
            for c in distribution_columns(count_columns, header, source=f"images:{csv_path}")
        ]
        if count_columns is not None
        else None
    )
    if counts_cols is not None and (
        label_column is not None
        or score_column is not None
        or bins is not None
        or bin_edges is not None
    ):
        raise ValueError(
            "count_columns name the levels; label_column, score_column, bins and bin_edges do "
            "not apply"
        )
    if label_column is None and score_column is None and counts_cols is None:
        has_label, has_score = "label" in header, "score" in header
        if has_label and has_score:
            raise ValueError(
                f"{csv_path} has both 'label' and 'score' columns; choose one with "
                "label_column= or score_column="
            )
        label_column = "label" if has_label else None
        score_column = "score" if has_score else None
        if label_column is None and score_column is None:
            raise ValueError(
                f"{csv_path} needs a 'label' or 'score' column (or label_column=, "
                f"score_column=, count_columns=); columns: {header}"
            )
    if label_column is not None and score_column is not None:
        raise ValueError("give label_column or score_column, not both")
    target_column = label_column or score_column
    for r, cells in enumerate(rows):
        if cells[p_col] in MISSING_TOKENS:
            raise ValueError(f"{csv_path}, line {lines[r]}: empty image path")

    base = Path(image_root) if image_root is not None else csv_path.parent
    paths = [
        Path(cells[p_col]) if Path(cells[p_col]).is_absolute() else base / cells[p_col]
        for cells in rows
    ]
    for path, line in zip(paths, lines, strict=True):
        if not path.is_file():
            raise FileNotFoundError(f"{csv_path}, line {line}: image file {path} not found")

    dists: NDArray[np.float64] | None = None
    positions: list[float] | None = None
    encoding = None
    if target_column is not None:
        t_col = column_index(target_column, "label" if label_column else "score")
        values = [cells[t_col] for cells in rows]
        for value, line in zip(values, lines, strict=True):
            if value in MISSING_TOKENS:
                raise ValueError(
                    f"{csv_path}, line {line}: missing value in column {target_column!r}"
                )
        if score_column is not None and bins is None and bin_edges is None and classes is None:
            raise ValueError(
                f"scores in column {score_column!r} need bins=K or bin_edges=... to become classes"
            )
        encoding = encode_target(
            values,
            lines,
            path=csv_path,
            column=target_column,
            classes=classes,
            bins=bins,
            bin_edges=bin_edges,
            binning=binning,
        )
        labels = encoding.labels
        class_names = encoding.class_names
        positions = encoding.positions
    votes: NDArray[np.float64] | None = None
    if counts_cols is not None:
        distribution, level = read_count_columns(
            rows, lines, header, counts_cols, path=csv_path, classes=classes
        )
        dists, votes = distribution.proportions, distribution.counts
        labels, class_names, positions = level.labels, level.class_names, level.positions
    elif as_bool("soft", soft):
        assert encoding is not None
        if encoding.scores is not None and (bins is not None or bin_edges is not None):
            centres = encoding.scores
            grid = np.asarray(encoding.positions, dtype=np.float64)
            default_sigma = float(np.median(np.diff(grid)))
        else:
            centres = encoding.labels.astype(np.float64)
            grid = np.arange(len(class_names), dtype=np.float64)
            default_sigma = 1.0
        sigma = (
            default_sigma
            if soft_sigma is None
            else as_float("soft_sigma", soft_sigma, low=0.0, low_inclusive=False)
        )
        dists = gaussian_targets(centres, grid, sigma)
    split = official or make_split(
        labels,
        seed=seed,
        fold=fold,
        num_folds=num_folds,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    return image_dataset(
        name=f"images:{csv_path}",
        paths=paths,
        ids=[cells[p_col] for cells in rows],
        labels=labels,
        class_names=class_names,
        positions=positions,
        split=split,
        image_size=as_int("image_size", image_size, minimum=1),
        info={"file": str(csv_path), "target_column": target_column, "soft": dists is not None},
        dists=dists,
        votes=votes,
        target_kind="distribution" if counts_cols is not None else "label",
        verify=as_bool("verify", verify),
    )
