"""What a comparison runs: argument parsing, name checks and the grid of runs."""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from emdloss.errors import UserError

__all__ = [
    "EMD_LOSSES",
    "PEER_PACKAGES",
    "RunSpec",
    "Setting",
    "dataset_slug",
    "is_emd_variant",
    "parse_grid",
    "parse_names",
    "parse_seeds",
    "plan_runs",
    "setting_label",
]

#: One combination of a ``--grid``: ``(("lr", "0.001"), ("epochs", "2"))``; ``()`` without one.
Setting = tuple[tuple[str, str], ...]


#: Our EMD losses (the "EMD variants" that the summary weighs against cross-entropy).
EMD_LOSSES: frozenset[str] = frozenset({"emd2", "w1", "xemd1", "xemd2", "ground"})

#: Peer losses and the package each needs: loss name -> (module imported, pip distribution), as
#: imported by :mod:`emdloss.training.losses`.
PEER_PACKAGES: Mapping[str, tuple[str, str]] = {
    "dlordinal_emd": ("dlordinal.losses", "dlordinal"),
    "triangular": ("dlordinal.losses", "dlordinal"),
    "sord": ("dlordinal.losses", "dlordinal"),
    "corn": ("dlordinal.losses", "dlordinal"),
    "coral": ("coral_pytorch.losses", "coral-pytorch"),
}

_PEERS_EXTRA = "pip install 'emdloss[peers]'"
_TRAIN_EXTRA = "pip install 'emdloss[train]'"


@dataclass(frozen=True)
class RunSpec:
    """One cell of the comparison grid: a data set, a loss, a seed and (optionally) a fold.

    Parameters
    ----------
    dataset : str
        Data set spec as given to :func:`emdloss.data.load_dataset`.
    loss : str
        Loss name of the training loss registry.
    seed : int
        Seed of the split (where the data set has no official split), the initialisation and the
        batch order.
    fold : int or None
        Fold index for k-fold cross-validation, else ``None``.
    num_folds : int or None
        Number of folds, else ``None``.
    setting : Setting
        The grid combination of this run (``()`` without ``--grid``).

    Examples
    --------
    >>> RunSpec("era", "ce", 1, 2, 5).relative_dir.as_posix()
    'runs/era/ce/seed1_fold2'
    >>> RunSpec("era", "ce", 1, setting=(("lr", "0.01"),)).relative_dir.as_posix()
    'runs/era/ce/lr=0.01/seed1'
    """

    dataset: str
    loss: str
    seed: int
    fold: int | None = None
    num_folds: int | None = None
    setting: Setting = ()

    @property
    def relative_dir(self) -> PurePath:
        """Run directory relative to the comparison output:
        ``runs/<dataset>/<loss>[/<setting>]/seed<k>[_fold<f>]``."""
        leaf = f"seed{self.seed}" + ("" if self.fold is None else f"_fold{self.fold}")
        parts = [dataset_slug(self.dataset), self.loss]
        if self.setting:
            parts.append(setting_slug(self.setting))
        return PurePath("runs", *parts, leaf)

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``era/ce/seed1``."""
        return "/".join(self.relative_dir.parts[1:])


def dataset_slug(spec: str) -> str:
    """A directory name for a data set spec (``csv:/a/b/x.csv`` -> ``csv-x-<hash>``).

    Parameters
    ----------
    spec : str
        Data set spec.

    Returns
    -------
    str
        Only letters, digits, ``.``, ``_`` and ``-``; specs with a path get a short hash of the
        full spec so that two files with the same name do not share a directory.

    Examples
    --------
    >>> dataset_slug("era")
    'era'
    >>> dataset_slug("csv:/data/wine.csv")[:9]
    'csv-wine-'
    """
    if ":" not in spec:
        return re.sub(r"[^A-Za-z0-9._-]", "_", spec)
    kind, _, path = spec.partition(":")
    stem = Path(path.rstrip("/\\")).stem or "data"
    digest = hashlib.sha1(spec.encode("utf-8")).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{kind}-{stem}-{digest}")


def is_emd_variant(loss: str) -> bool:
    """Whether a loss is one of our EMD losses (``emd2``, ``w1``, ``xemd1``, ``xemd2``, ``ground``).

    Parameters
    ----------
    loss : str
        Loss name.

    Returns
    -------
    bool

    Examples
    --------
    >>> is_emd_variant("xemd1"), is_emd_variant("ce"), is_emd_variant("dlordinal_emd")
    (True, False, False)
    """
    return loss in EMD_LOSSES


def parse_names(value: str | Iterable[str], what: str) -> list[str]:
    """Split ``"a,b"`` (or a list of such strings) into unique, non-empty names, in order.

    Parameters
    ----------
    value : str or iterable of str
        Names, comma-separated or as a list.
    what : str
        What the names are (for the error message).

    Returns
    -------
    list of str

    Examples
    --------
    >>> parse_names("ce, emd2,ce", "losses")
    ['ce', 'emd2']
    """
    items = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{what}: expected names as strings, got {item!r}")
        for name in item.split(","):
            name = name.strip()
            if not name:
                raise UserError(f"--{what}: empty name in {value!r}")
            if name not in names:
                names.append(name)
    if not names:
        raise UserError(f"--{what}: expected at least one name, got {value!r}")
    return names


def parse_seeds(value: int | str | Sequence[int]) -> list[int]:
    """Seeds from a count (``3`` -> 0, 1, 2) or an explicit list (``"0,4"`` or ``[0, 4]``).

    Parameters
    ----------
    value : int, str or sequence of int
        A positive count, or a comma-separated / sequence of non-negative seeds. A string with a
        comma is always a list (``"5,"`` is the single seed 5).

    Returns
    -------
    list of int
        Unique seeds in the given order.

    Examples
    --------
    >>> parse_seeds(3), parse_seeds("3"), parse_seeds("0,4"), parse_seeds("5,")
    ([0, 1, 2], [0, 1, 2], [0, 4], [5])
    """
    if isinstance(value, bool):
        raise TypeError(f"seeds: expected a count or a list of integers, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if "," not in text:
            try:
                value = int(text)
            except ValueError:
                raise UserError(
                    f"--seeds: expected a count or comma-separated integers, got {text!r}"
                ) from None
        else:
            try:
                value = [int(part) for part in text.split(",") if part.strip()]
            except ValueError:
                raise UserError(
                    f"--seeds: expected comma-separated integers, got {text!r}"
                ) from None
    if isinstance(value, int):
        if value < 1:
            raise UserError(f"--seeds: expected a count >= 1, got {value}")
        return list(range(value))
    seeds: list[int] = []
    for seed in value:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"--seeds: expected non-negative integers, got {seed!r}")
        if seed not in seeds:
            seeds.append(seed)
    if not seeds:
        raise UserError(f"--seeds: expected at least one seed, got {value!r}")
    return seeds


def plan_runs(
    datasets: Sequence[str],
    losses: Sequence[str],
    seeds: Sequence[int],
    folds: int | None,
    settings: Sequence[Setting] = ((),),
) -> list[RunSpec]:
    """Every data set x loss x setting x seed (x fold), data set outermost.

    Parameters
    ----------
    datasets, losses : sequence of str
        Names (already checked).
    seeds : sequence of int
        Seeds.
    folds : int or None
        Number of cross-validation folds (each seed then runs every fold), or ``None``.
    settings : sequence of Setting
        Grid combinations (:func:`parse_grid`); every loss runs every one.

    Returns
    -------
    list of RunSpec

    Examples
    --------
    >>> [s.label for s in plan_runs(["era"], ["ce", "emd2"], [0], 2)]
    ['era/ce/seed0_fold0', 'era/ce/seed0_fold1', 'era/emd2/seed0_fold0', 'era/emd2/seed0_fold1']
    """
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise UserError(f"--folds: expected an integer >= 2 (or None), got {folds!r}")
    fold_ids: list[int | None] = [None] if folds is None else list(range(folds))
    return [
        RunSpec(dataset, loss, seed, fold, folds, setting)
        for dataset in datasets
        for loss in losses
        for setting in settings
        for seed in seeds
        for fold in fold_ids
    ]


def _import_train_layer(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"emdloss compare needs {module}, which failed to import ({error}); "
            f"install the training extra: {_TRAIN_EXTRA}"
        ) from error


def valid_loss_names() -> tuple[str, ...]:
    """Loss names of the training registry (``emdloss.training.LOSS_NAMES``)."""
    return tuple(_import_train_layer("emdloss.training").LOSS_NAMES)


def check_losses(losses: Sequence[str]) -> None:
    """Raise before any run starts for an unknown loss or a peer loss whose package is missing.

    Parameters
    ----------
    losses : sequence of str
        Loss names.

    Raises
    ------
    UserError
        For a name the training registry does not know (the message lists the valid names).
    ImportError
        For a peer loss whose package is not installed (the message names the extra to install).
    """
    valid = valid_loss_names()
    unknown = [name for name in losses if name not in valid]
    if unknown:
        raise UserError(
            f"unknown loss {', '.join(map(repr, unknown))}; valid losses: {', '.join(valid)}"
        )
    missing: dict[str, list[str]] = {}
    for name in losses:
        if name not in PEER_PACKAGES:
            continue
        module, distribution = PEER_PACKAGES[name]
        try:
            importlib.import_module(module)
        except ImportError:
            missing.setdefault(distribution, []).append(name)
    if missing:
        needs = "; ".join(f"{', '.join(names)} need {dist}" for dist, names in missing.items())
        raise ImportError(
            f"peer loss package not installed ({needs}); install the peers extra: {_PEERS_EXTRA}"
        )


def valid_dataset_names() -> tuple[str, ...]:
    """Named data sets of the data layer (``emdloss.data.DATASET_NAMES``)."""
    return tuple(_import_train_layer("emdloss.data").DATASET_NAMES)


def check_dataset_names(datasets: Sequence[str]) -> None:
    """Raise a UserError listing the valid names for an unknown data set name.

    ``csv:PATH``, ``folder:PATH`` and ``images:PATH`` specs are accepted here; the data layer
    checks the path when the data set is loaded (which :func:`emdloss.compare.compare` does
    before any run).

    Parameters
    ----------
    datasets : sequence of str
        Data set specs.
    """
    valid = valid_dataset_names()
    prefixes = tuple(
        getattr(_import_train_layer("emdloss.data"), "SOURCE_PREFIXES", ("csv:", "folder:"))
    )
    unknown = [
        spec
        for spec in datasets
        if spec.lower() not in valid and spec.partition(":")[0].lower() + ":" not in prefixes
    ]
    if unknown:
        names = [*valid, *(prefix + "PATH" for prefix in prefixes)]
        raise UserError(
            f"unknown dataset {', '.join(map(repr, unknown))}; valid datasets: {', '.join(names)}"
        )


# ---------------------------------------------------------------------------- --grid
# Options a grid may not vary: compare sets them per run, or they change how runs execute.
_GRID_FORBIDDEN = frozenset(
    {"dataset", "loss", "seed", "output", "fold", "num_folds", "resume", "overwrite", "progress"}
)


def parse_grid(items: Iterable[str], fields: Iterable[str] = ()) -> list[Setting]:
    """Every combination of ``KEY=V1,V2,...`` items, in the order given (last key fastest).

    ``KEY`` is a train option (``lr``, ``weight_decay``, ``epochs``, ...) or ``OPTION.KEY`` for a
    key of a mapping option (``loss_options.mu=0.1,0.25``). Values stay text; the run's
    :class:`~emdloss.training.TrainConfig` converts them.

    Parameters
    ----------
    items : iterable of str
        The ``--grid`` arguments.
    fields : iterable of str, optional
        Valid option names; when given, other keys raise.

    Returns
    -------
    list of Setting
        ``[()]`` when ``items`` is empty.

    Examples
    --------
    >>> parse_grid(["lr=0.01,0.001", "epochs=2"])
    [(('lr', '0.01'), ('epochs', '2')), (('lr', '0.001'), ('epochs', '2'))]
    >>> parse_grid([])
    [()]
    """
    axes: list[tuple[str, list[str]]] = []
    valid = set(fields)
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip().replace("-", "_")
        values = [v.strip() for v in text.split(",")]
        if not sep or not key or not text.strip() or any(not v for v in values):
            raise UserError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. lr=0.001,0.003)")
        base, dot, sub = key.partition(".")
        if base in _GRID_FORBIDDEN:
            raise UserError(f"--grid {item!r}: {base} is set by compare itself, not by a grid")
        if valid and base not in valid:
            raise UserError(
                f"--grid {item!r}: unknown train option {base!r}; valid: {', '.join(sorted(valid))}"
            )
        if dot and (not sub or not base.endswith("_options")):
            raise UserError(
                f"--grid {item!r}: a dotted key names a key of a mapping option, e.g. "
                "loss_options.mu"
            )
        if any(key == k for k, _ in axes):
            raise UserError(f"--grid: {key} given twice; give all its values in one --grid")
        if len(set(values)) != len(values):
            raise UserError(f"--grid {item!r}: repeated value")
        axes.append((key, values))
    settings: list[Setting] = [()]
    for key, values in axes:
        settings = [(*s, (key, v)) for s in settings for v in values]
    return settings


def setting_label(setting: Setting) -> str:
    """``lr=0.01, epochs=2`` (``default`` without a grid).

    Examples
    --------
    >>> setting_label((("lr", "0.01"), ("epochs", "2"))), setting_label(())
    ('lr=0.01, epochs=2', 'default')
    """
    return ", ".join(f"{k}={v}" for k, v in setting) or "default"


def setting_slug(setting: Setting) -> str:
    """A directory name for a grid setting (``lr=0.01_epochs=2``).

    Examples
    --------
    >>> setting_slug((("lr", "1e-3"), ("loss_options.mu", "0.5")))
    'lr=1e-3_loss_options.mu=0.5'
    """
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", "_".join(f"{k}={v}" for k, v in setting))


def apply_setting(options: Mapping[str, Any], setting: Setting) -> dict[str, Any]:
    """Train options with a grid setting applied (``OPTION.KEY`` merges into a mapping option).

    Examples
    --------
    >>> apply_setting({"lr": 1.0, "loss_options": {"a": 1}}, (("lr", "2"), ("loss_options.b", "3")))
    {'lr': '2', 'loss_options': {'a': 1, 'b': 3}}
    """
    out = dict(options)
    for key, value in setting:
        base, dot, sub = key.partition(".")
        if dot:
            from emdloss._yaml import load_yaml

            merged = dict(out.get(base) or {})
            merged[sub] = load_yaml(value, f"setting {key}")
            out[base] = merged
        else:
            out[key] = value
    return out
