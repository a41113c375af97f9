"""Label-distribution-learning benchmarks in Geng's ``.mat`` format (``ldl:PATH.mat``).

Geng's LDL package and PyLDL store every benchmark set (Movie, SJAFFE, Natural_Scene, ...) as
a MATLAB file with two variables: ``features`` (N, d) and ``labels`` (N, C), each row of
``labels`` a distribution over the C levels. The format holds no official split or fold file
(PyLDL's own loader returns the two arrays only; its experiments draw their folds at random),
so the splits here are drawn from the seed: a stratified hold-out by default, or one fold of
k-fold cross-validation (the LDL protocol: 10 folds, repeated with seeds).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emdloss.errors import UserError

from ._dataset import OrdinalDataset
from ._options import as_bool, as_str_list
from ._table import encode_table, tabular_dataset
from .distributions import level_positions, median_class, read_distribution
from .splits import make_split


def load_ldl(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int | None = None,
    classes: Any = None,
    val_fraction: Any = 0.1,
    test_fraction: Any = 0.2,
    standardize: Any = True,
) -> OrdinalDataset:
    """Load an LDL benchmark ``.mat`` file: features and a distribution over ordered levels.

    ``labels`` may hold proportions (rows normalised with one warning when they do not sum to
    1) or integral vote counts (kept as counts). The hard class of each item, used to stratify
    the splits and by the ordinal metrics, is the median level of its distribution. Features
    are standardised with the training rows' statistics unless ``standardize`` is false.

    Splits (seeded, stratified on the median level): without ``fold``, a ``test_fraction``
    hold-out (default 0.2) and a ``val_fraction`` of the rest for validation (default 0.1); with
    ``fold``/``num_folds``, that test fold of a k-fold partition and ``val_fraction`` of the
    other folds for validation.

    Parameters
    ----------
    path : str or PathLike
        The ``.mat`` file (MATLAB v5, read with :func:`scipy.io.loadmat`; dense or sparse
        ``features``).
    classes : str or list of str, optional
        Names of the levels in order; default ``"1"`` ... ``"C"``.
    seed, fold, num_folds, val_fraction, test_fraction
        Split settings (:func:`emdloss.data.make_split`).
    standardize : bool or str
        Standardise the features (default); ``False`` (``"false"`` from the command line) keeps
        them as they are (see :func:`emdloss.data._table.encode_table`).

    Returns
    -------
    OrdinalDataset
        ``target_kind="distribution"``; ids are ``"row i"`` (0-based row of the file).

    Raises
    ------
    UserError
        For a file that is not a MATLAB file or lacks ``features`` or ``labels``, shapes that do
        not agree, a bad label cell (names the row and the level) or a non-finite feature.

    Examples
    --------
    >>> import tempfile, scipy.io
    >>> rng = np.random.default_rng(0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     scipy.io.savemat(d + "/toy.mat", {"features": rng.normal(size=(40, 3)),
    ...                                       "labels": rng.dirichlet(np.ones(4), size=40)})
    ...     ds = load_ldl(d + "/toy.mat", seed=0)
    >>> ds.class_names, ds.input_shape, ds.target_kind, len(ds.test)
    (['1', '2', '3', '4'], (3,), 'distribution', 8)
    """
    import scipy.io

    standardize = as_bool("standardize", standardize)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LDL file {path} not found")
    try:
        content = scipy.io.loadmat(str(path))
    except (
        ValueError,
        TypeError,
        OSError,
        NotImplementedError,
        IndexError,  # SciPy < 1.11 on a file shorter than a .mat header
        scipy.io.matlab.MatReadError,
    ) as error:
        # SciPy reads the MATLAB header of a v7.3 (HDF5) file, then refuses the rest.
        if isinstance(error, NotImplementedError) and scipy.io.matlab.matfile_version(
            str(path)
        ) == (2, 0):
            raise UserError(
                f"{path} is a MATLAB v7.3 (HDF5) file, which SciPy does not read; save it in the "
                "v7 format (MATLAB: save(file, 'features', 'labels', '-v7'))"
            ) from None
        raise UserError(f"cannot read {path} as a MATLAB .mat file: {error}") from None
    absent = [name for name in ("features", "labels") if name not in content]
    if absent:
        found = sorted(k for k in content if not k.startswith("__"))
        raise UserError(
            f"{path} has no variable(s) {absent}; an LDL .mat file holds 'features' and "
            f"'labels' (found {found})"
        )
    x = _real_matrix(content["features"], "features", path).astype(np.float64)
    t = _real_matrix(content["labels"], "labels", path)  # float32 labels sum to 1 less exactly
    if x.ndim != 2 or t.ndim != 2 or x.shape[0] != t.shape[0]:
        raise UserError(
            f"{path}: features {x.shape} and labels {t.shape} must be 2-D with one row per item"
        )
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = (int(i[0]) for i in np.nonzero(bad))
        raise UserError(f"{path}, row {r}, feature {c}: {x[r, c]:g} is not a finite number")
    num_levels = t.shape[1]
    class_names = (
        as_str_list("classes", classes)
        if classes is not None
        else [str(k + 1) for k in range(num_levels)]
    )
    if len(class_names) != num_levels:
        raise UserError(f"{path}: {len(class_names)} classes for {num_levels} label columns")
    target = read_distribution(
        t,
        rows=[f"{path}, row {i}" for i in range(t.shape[0])],
        columns=[f"labels[:, {k}] (level {class_names[k]})" for k in range(num_levels)],
        source=str(path),
    )
    hard = median_class(target.proportions)
    split = make_split(
        hard,
        seed=seed,
        fold=fold,
        num_folds=num_folds,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    names = [f"f{j}" for j in range(x.shape[1])]
    table = encode_table(
        x,
        names,
        [],
        [],
        split,
        row_names=[f"{path}, row {i}" for i in range(len(x))],
        standardize=standardize,
    )
    dataset = tabular_dataset(
        name=f"ldl:{path}",
        class_names=class_names,
        positions=level_positions(class_names, source=str(path)),
        labels=hard,
        ids=[f"row {i}" for i in range(len(x))],
        table=table,
        split=split,
        info={
            "file": str(path),
            "format": "LDL .mat (features, labels); no official folds in the format",
            "normalised_rows": target.normalised,
        },
        dists=target.proportions,
        votes=target.counts,
        target_kind="distribution",
    )
    return dataset


def _real_matrix(value: Any, name: str, path: Path) -> NDArray[Any]:
    """A .mat variable as a dense array of real numbers, refusing anything else (cells,
    structs, strings, complex numbers) with the variable named."""
    import scipy.sparse

    if scipy.sparse.issparse(value):
        value = value.toarray()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        what = "complex numbers" if array.dtype.kind == "c" else f"MATLAB type {array.dtype}"
        raise UserError(
            f"{path}: the variable {name!r} holds {what}; expected a real numeric (N, "
            f"{'d' if name == 'features' else 'C'}) matrix"
        )
    return array
