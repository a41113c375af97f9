"""The ordinal benchmarks ERA, ESL, LEV and SWD shipped with ``skordinal`` (Ben-David's sets)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._dataset import OrdinalDataset
from ._options import as_bool
from ._table import encode_table, tabular_dataset
from .splits import make_split

SKORDINAL_NAMES = ("era", "esl", "lev", "swd")
#: Orderless control set: scikit-learn's bundled 8x8 ``digits`` (10 classes, no order), used as
#: the paper's ImageNet-style check that an EMD loss loses nothing on classes without order.
ORDERLESS_NAMES = ("digits",)

#: ``esl6``: ESL's 9 fitness scores (1-based 1..9; counts 2, 12, 38, 100, 116, 135, 62, 19, 4)
#: regrouped into 6 classes by merging the sparse ends, {1,2,3} and {8,9}, so every class has at
#: least 23 rows: counts 52, 100, 116, 135, 62, 23. Zero-based skordinal label -> new class.
ESL6_GROUPS: tuple[tuple[int, ...], ...] = ((1, 2, 3), (4,), (5,), (6,), (7,), (8, 9))


def load_tabular(
    name: str,
    *,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int | None = None,
    val_fraction: Any = 0.1,
    test_fraction: Any = 0.3,
    standardize: Any = True,
) -> OrdinalDataset:
    """Load ERA, ESL (or ``esl6``), LEV or SWD from ``skordinal`` with stratified splits.

    The default is a stratified 70/30 train/test hold-out per seed (the TOC-UCO protocol);
    ``fold``/``num_folds`` select stratified k-fold cross-validation instead. A stratified
    ``val_fraction`` of the non-test rows is kept for model selection. Inputs are standardised
    with the mean and standard deviation of the training rows only.

    Parameters
    ----------
    name : {"era", "esl", "esl6", "lev", "swd", "digits"}
        Dataset; ``esl6`` is ESL with its classes regrouped as in :data:`ESL6_GROUPS`;
        ``digits`` is scikit-learn's orderless control set (64 pixel features, 10 classes).
    seed : int, optional
        Seed of the split.
    fold, num_folds : int, optional
        Test fold and number of folds for k-fold cross-validation.
    val_fraction : float, optional
        Share of the non-test rows used for validation.
    test_fraction : float, optional
        Share of the rows held out for testing (hold-out only).
    standardize : bool or str, optional
        ``False`` (``"false"`` from the command line) keeps the inputs as they are.

    Returns
    -------
    OrdinalDataset
        Class names are the original 1-based scores (``"1"`` ... ``"9"``); labels are zero-based.

    Examples
    --------
    >>> ds = load_tabular("lev", seed=0)
    >>> ds.input_shape, ds.class_names, len(ds.test)
    ((4,), ['1', '2', '3', '4', '5'], 300)
    """
    standardize = as_bool("standardize", standardize)
    base = "esl" if name == "esl6" else name
    if base in ORDERLESS_NAMES:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        source = "sklearn.datasets.load_digits (bundled, offline; classes have no order)"
    elif base in SKORDINAL_NAMES:
        import skordinal.datasets as skd

        bunch = getattr(skd, f"load_{base}")()
        source = f"skordinal.datasets.load_{base}"
    else:
        valid = (*SKORDINAL_NAMES, "esl6", *ORDERLESS_NAMES)
        raise ValueError(f"unknown tabular dataset {name!r}; valid: {valid}")
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    class_names = [str(v) for v in bunch.target_names]
    info: dict[str, object] = {"source": source}
    if name == "esl6":
        mapping = np.empty(len(class_names), dtype=np.int64)
        for k, group in enumerate(ESL6_GROUPS):
            for score in group:
                mapping[class_names.index(str(score))] = k
        y = mapping[y]
        class_names = [
            "-".join(str(s) for s in (g[0], g[-1])) if len(g) > 1 else str(g[0])
            for g in ESL6_GROUPS
        ]
        info["regrouping"] = {
            name: list(g) for name, g in zip(class_names, ESL6_GROUPS, strict=True)
        }
    split = make_split(
        y,
        seed=seed,
        fold=fold,
        num_folds=num_folds,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    table = encode_table(x, list(bunch.feature_names), [], [], split, standardize=standardize)
    return tabular_dataset(
        name=name,
        class_names=class_names,
        positions=None,
        labels=y,
        ids=[f"row {i}" for i in range(y.size)],
        table=table,
        split=split,
        info=info,
    )
