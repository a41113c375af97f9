"""Datasets with ordered classes: RetinaMNIST, the skordinal tables, CSV files, image folders,
image CSVs with scores, Adience and LDL ``.mat`` files; with deterministic splits.

``load_dataset(spec, ...)`` is the single entry point (see ``docs/architecture.md``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from emdloss.errors import UserError

from ._dataset import (
    ImageFileSplit,
    OrdinalDataset,
    OrdinalSplit,
    SubsetSplit,
    TensorSplit,
    UInt8ImageSplit,
    load_image,
)
from ._download import DownloadError, download_file, md5_file, resolve_data_dir
from ._options import as_int
from .adience import load_adience
from .csv_table import bin_scores, load_csv
from .images import gaussian_targets, load_image_csv, load_image_folder
from .ldl import load_ldl
from .retinamnist import load_retinamnist, retinamnist_path
from .splits import group_split, make_split, stratified_folds, stratified_split
from .tabular import load_tabular

#: Built-in dataset names; files are given as ``csv:PATH``, ``folder:PATH``, ``images:PATH`` or
#: ``ldl:PATH``.
DATASET_NAMES: tuple[str, ...] = (
    "retinamnist",
    "era",
    "esl",
    "esl6",
    "lev",
    "swd",
    "adience",
    "digits",
)
SOURCE_PREFIXES: tuple[str, ...] = ("csv:", "folder:", "images:", "ldl:")

__all__ = [
    "DATASET_NAMES",
    "SOURCE_PREFIXES",
    "DownloadError",
    "ImageFileSplit",
    "OrdinalDataset",
    "OrdinalSplit",
    "SubsetSplit",
    "TensorSplit",
    "UInt8ImageSplit",
    "bin_scores",
    "download_file",
    "gaussian_targets",
    "group_split",
    "limit_split",
    "load_adience",
    "load_csv",
    "load_dataset",
    "load_image",
    "load_image_csv",
    "load_image_folder",
    "load_ldl",
    "load_retinamnist",
    "load_tabular",
    "make_split",
    "md5_file",
    "resolve_data_dir",
    "retinamnist_path",
    "stratified_folds",
    "stratified_split",
]


def _check_options(
    loader: Callable[..., OrdinalDataset], spec: str, options: dict[str, Any]
) -> None:
    parameters = inspect.signature(loader).parameters
    valid = [
        name
        for name, p in parameters.items()
        if p.kind == inspect.Parameter.KEYWORD_ONLY
        and name not in ("seed", "fold", "num_folds", "data_dir")
    ]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(
            f"unknown option(s) {unknown} for dataset {spec!r}; valid options: "
            f"{', '.join(sorted([*valid, 'limit']))}"
        )


def limit_split(split: OrdinalSplit, limit: int | None, *, seed: int, stream: int) -> OrdinalSplit:
    """A stratified, seeded subset of at most ``limit`` samples of ``split`` (all when ``None``).

    Stratified so that small slices still hold every class; ``stream`` separates the random
    draws of different callers and splits. The one subset limiter of emdloss (the ``limit``
    data option and the trainer's ``limit_train/val/test`` both use it).

    Examples
    --------
    >>> import torch
    >>> split = TensorSplit(torch.zeros(10, 1), [0, 1] * 5, [str(i) for i in range(10)])
    >>> small = limit_split(split, 4, seed=0, stream=0)
    >>> len(small), sorted(int(t) for t in small.targets)
    (4, [0, 0, 1, 1])
    """
    if limit is None or limit >= len(split):
        return split
    _, chosen = stratified_split(split.targets, limit / len(split), seed=seed, stream=stream)
    return SubsetSplit(split, chosen)


def _limit(dataset: OrdinalDataset, limit: int, seed: int) -> OrdinalDataset:
    # Small slices for quick runs and tests.
    for part in ("train", "val", "test"):
        setattr(dataset, part, limit_split(getattr(dataset, part), limit, seed=seed, stream=2))
    dataset.protocol += f"; each split limited to {limit} samples (stratified, seed {seed})"
    dataset.resampled = True  # the test subset changes with the seed
    return dataset


def load_dataset(
    spec: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int | None = None,
    **options: Any,
) -> OrdinalDataset:
    """Load a dataset with ordered classes and its train/validation/test splits.

    Parameters
    ----------
    spec : str
        A name from :data:`DATASET_NAMES` (``retinamnist``; the skordinal tables ``era``,
        ``esl``, ``esl6``, ``lev``, ``swd``; ``adience``; the orderless control ``digits``), or ``csv:PATH`` (a table with an
        ordinal ``target`` column), ``folder:PATH`` (one sub-folder of images per class) or
        ``images:PATH`` (a CSV of image paths with labels, scores or rating counts) or
        ``ldl:PATH`` (a label-distribution ``.mat`` file, :func:`load_ldl`).
    data_dir : str or PathLike, optional
        Directory of downloaded/official files (``retinamnist``, ``adience``); default
        ``$EMDLOSS_DATA``, else the per-user cache directory.
    seed : int, optional
        Seed of the splits (same seed, same split).
    fold, num_folds : int, optional
        k-fold cross-validation: ``fold`` is the test fold (sources with an official split
        refuse these, except Adience whose official 5 folds they select).
    **options
        Source options, e.g. ``size`` (retinamnist), ``target``/``classes``/``bins``/``missing``
        (csv), ``classes``/``image_size`` (folder), ``soft`` (images), ``val_fraction``,
        ``test_fraction``; ``limit=N`` keeps a stratified subset of at most N samples per split.
        Values may be strings, as from a command line.

    Returns
    -------
    OrdinalDataset

    Raises
    ------
    ValueError
        For an unknown dataset name (lists the valid ones) or bad data.
    TypeError
        For an option the source does not take (lists the valid ones).

    Examples
    --------
    >>> ds = load_dataset("swd", seed=1, limit=50)
    >>> ds.num_classes, ds.input_shape, len(ds.train) <= 50
    (4, (10,), True)
    >>> load_dataset("mnist")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown dataset 'mnist'; valid: retinamnist, era, esl, esl6, lev, swd, adience, ...
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"dataset spec must be a non-empty string, got {spec!r}")
    seed = as_int("seed", seed)
    # Command lines and YAML configs may hand these over as strings.
    fold = None if fold is None else as_int("fold", fold, minimum=0)
    num_folds = None if num_folds is None else as_int("num_folds", num_folds, minimum=2)
    limit = options.pop("limit", None)
    text = spec.strip()
    loader: Callable[..., OrdinalDataset]
    kind, _, argument = text.partition(":")
    kind = kind.lower()
    if argument and f"{kind}:" in SOURCE_PREFIXES:
        loaders: dict[str, Callable[..., OrdinalDataset]] = {
            "csv": load_csv,
            "folder": load_image_folder,
            "images": load_image_csv,
            "ldl": load_ldl,
        }
        loader = loaders[kind]
        _check_options(loader, text, options)
        dataset = loader(argument, seed=seed, fold=fold, num_folds=num_folds, **options)
    elif text.lower() in DATASET_NAMES:
        name = text.lower()
        if name == "retinamnist":
            _check_options(load_retinamnist, name, options)
            dataset = load_retinamnist(
                data_dir, seed=seed, fold=fold, num_folds=num_folds, **options
            )
        elif name == "adience":
            _check_options(load_adience, name, options)
            dataset = load_adience(data_dir, seed=seed, fold=fold, num_folds=num_folds, **options)
        else:
            _check_options(load_tabular, name, options)
            dataset = load_tabular(name, seed=seed, fold=fold, num_folds=num_folds, **options)
    else:
        raise ValueError(
            f"unknown dataset {spec!r}; valid: {', '.join(DATASET_NAMES)}, "
            f"or {', '.join(p + 'PATH' for p in SOURCE_PREFIXES)}"
        )
    if limit is not None:
        dataset = _limit(dataset, as_int("limit", limit, minimum=1), seed)
    return dataset
