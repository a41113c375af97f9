"""Rows of a comparison: results.csv rows, their columns and the mean +- standard deviation per
loss (the tables that summary.md (:mod:`._summary`) and the plots are drawn from)."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emdloss.compare._plan import setting_label
from emdloss.compare._records import METRIC_KEYS, VALIDATED_RULE, RunRecord
from emdloss.vocabulary import HIGHER_IS_BETTER, RULES

__all__ = [
    "CSV_COLUMNS",
    "METRIC_LABELS",
    "OPTIONAL_COLUMNS",
    "ORDERLESS",
    "TIME_KEYS",
    "DatasetInfo",
    "Stat",
    "aggregate",
    "baseline_rows",
    "result_rows",
    "results_csv",
]

CSV_COLUMNS: tuple[str, ...] = (
    "dataset",
    "loss",
    "setting",
    "seed",
    "fold",
    "rule",
    *METRIC_KEYS,
    "train_seconds",
    "first_epoch_seconds",
    "epoch_seconds",
)
#: Columns of ``results.csv`` after :data:`CSV_COLUMNS` when the rows have them
#: (``compare --conformal``: test coverage and mean size of the conformal sets).
OPTIONAL_COLUMNS: tuple[str, ...] = ("coverage", "mean_set_size")
#: Timing columns: the whole training, the first epoch (with the start-up) and the mean later
#: epoch (the same measure for every loss).
TIME_KEYS: tuple[str, ...] = ("train_seconds", "first_epoch_seconds", "epoch_seconds")
METRIC_LABELS: Mapping[str, str] = {
    "accuracy": "accuracy",
    "one_off_accuracy": "1-off acc.",
    "mae": "MAE",
    "rmse": "RMSE",
    "qwk": "QWK",
    "rps": "RPS",
    "amae": "AMAE",
    "train_seconds": "train s",
    "first_epoch_seconds": "1st epoch s",
    "epoch_seconds": "s/epoch",
}
# The metrics the verdict sentence weighs (the paper's and the targets' headline metrics).
VERDICT_METRICS: tuple[str, ...] = ("mae", "qwk", "accuracy")
# Data sets whose split is the official one (the same test set as the published rows).
OFFICIAL_SPLITS: frozenset[str] = frozenset({"retinamnist"})
#: Peer losses whose native prediction is a threshold count (the median rule), not an argmax.
THRESHOLD_LOSSES: frozenset[str] = frozenset({"coral", "corn"})
#: Data sets whose classes have no order: only accuracy is meaningful there.
ORDERLESS: frozenset[str] = frozenset({"digits"})
_RULE_ORDER = (*RULES, VALIDATED_RULE)


@dataclass(frozen=True)
class DatasetInfo:
    """What the summary says about a data set and the protocol its runs shared.

    Attributes
    ----------
    spec : str
        Data set spec.
    num_classes : int
        Number of classes.
    kind : str
        ``"image"`` or ``"tabular"``.
    sizes : tuple of int
        Train, validation and test sizes (of seed 0's split).
    options : Mapping
        The train options every run of this data set used.
    seeds : tuple of int
        Seeds.
    folds : int or None
        Number of folds.
    losses : tuple of str
        Losses in plan order.
    class_names : tuple of str
        Class names in order.
    protocol : str
        The data layer's description of its split (official split, hold-out, fold, ...).
    targets : str
        What the losses were trained on: ``"hard labels"`` or a note on soft targets.
    select : str
        Validation metric that chose grid settings and validated rules.
    resampled : bool
        Whether the test rows change from run to run (folds, or a hold-out drawn from each seed):
        the paired intervals are then corrected for the overlap of the runs' training sets.
    """

    spec: str
    num_classes: int
    kind: str
    sizes: tuple[int, int, int]
    options: Mapping[str, Any]
    seeds: tuple[int, ...]
    folds: int | None
    losses: tuple[str, ...]
    class_names: tuple[str, ...] = field(default=())
    protocol: str = ""
    targets: str = ""
    select: str = "mae"
    resampled: bool = False

    @property
    def test_train_ratio(self) -> float | None:
        """A run's test rows over the rows it trained and selected on, where the test rows are
        resampled (``None`` on one fixed split), for ``paired_difference``'s correction.

        Examples
        --------
        >>> DatasetInfo("era", 9, "tabular", (630, 70, 300), {}, (0,), None, ("ce",),
        ...             resampled=True).test_train_ratio
        0.42857142857142855
        """
        if not self.resampled:
            return None
        train, val, test = self.sizes
        return test / (train + val) if train + val > 0 else None


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (``ddof=1``; NaN for a single value) of ``n`` values.

    Examples
    --------
    >>> s = Stat.of([1.0, 2.0, 3.0])
    >>> (s.mean, s.std, s.n)
    (2.0, 1.0, 3)
    >>> math.isnan(Stat.of([4.0]).std)
    True
    """

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        """Statistics of finite-or-NaN values (NaN values are left out)."""
        kept = [float(v) for v in values if not math.isnan(float(v))]
        if not kept:
            return cls(math.nan, math.nan, 0)
        std = statistics.stdev(kept) if len(kept) > 1 else math.nan
        return cls(statistics.fmean(kept), std, len(kept))

    def format(self, digits: int = 3) -> str:
        """``mean ± std`` (``mean`` alone for one value, ``–`` for none)."""
        if self.n == 0:
            return "–"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def result_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per finished run and prediction rule, in plan order, ``argmax`` first.

    Parameters
    ----------
    records : sequence of RunRecord
        Outcomes; failed runs give no row.

    Returns
    -------
    list of dict
        Keys :data:`CSV_COLUMNS`; ``fold`` is ``None`` without cross-validation.
    """
    rows: list[dict[str, Any]] = []
    for record in records:
        if not record.metrics:
            continue
        for rule in _sorted_rules(record.metrics):
            row: dict[str, Any] = {
                "dataset": record.spec.dataset,
                "loss": record.spec.loss,
                "setting": setting_label(record.spec.setting) if record.spec.setting else None,
                "seed": record.spec.seed,
                "fold": record.spec.fold,
                "rule": rule,
            }
            row.update({key: record.metrics[rule][key] for key in METRIC_KEYS})
            row["train_seconds"] = record.train_seconds
            row["first_epoch_seconds"] = record.first_epoch_seconds
            row["epoch_seconds"] = record.epoch_seconds
            rows.append(row)
    return rows


def baseline_rows(
    dataset: str,
    seed: int,
    fold: int | None,
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]],
) -> list[dict[str, Any]]:
    """Rows of :func:`results_csv` for the baselines of one seed (and fold).

    Parameters
    ----------
    dataset : str
        Data set spec.
    seed, fold : int, int or None
        Which split.
    metrics : Mapping
        ``{baseline name: {rule: {metric: value}}}``
        (:func:`emdloss.compare._baselines.baseline_metrics`).
    """
    rows: list[dict[str, Any]] = []
    for name, per_rule in metrics.items():
        for rule in _sorted_rules(per_rule):
            row: dict[str, Any] = {
                "dataset": dataset,
                "loss": name,
                "setting": None,
                "seed": seed,
                "fold": fold,
                "rule": rule,
            }
            row.update({key: per_rule[rule][key] for key in METRIC_KEYS})
            row.update(dict.fromkeys(TIME_KEYS, math.nan))
            rows.append(row)
    return rows


def _sorted_rules(rules: Iterable[str]) -> list[str]:
    known = [rule for rule in _RULE_ORDER if rule in rules]
    return known + sorted(rule for rule in rules if rule not in _RULE_ORDER)


def results_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The text of ``results.csv`` (header :data:`CSV_COLUMNS`; floats with full precision).

    Examples
    --------
    >>> results_csv([]).split(",")[:6]
    ['dataset', 'loss', 'setting', 'seed', 'fold', 'rule']
    """
    # Optional columns (compare --conformal) follow the fixed ones when any row has them.
    columns = list(CSV_COLUMNS)
    columns += [k for k in OPTIONAL_COLUMNS if any(k in row for row in rows)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    return buffer.getvalue()


def aggregate(
    rows: Sequence[Mapping[str, Any]],
) -> dict[tuple[str, str, str], dict[str, Stat]]:
    """Mean and standard deviation over seeds and folds per (dataset, loss, rule).

    Parameters
    ----------
    rows : sequence of Mapping
        Rows of :func:`result_rows`.

    Returns
    -------
    dict
        ``{(dataset, loss, rule): {metric: Stat}}`` for every metric and ``train_seconds``.

    Examples
    --------
    >>> rows = [dict(dataset="d", loss="ce", rule="argmax", mae=m, train_seconds=1.0)
    ...         for m in (1.0, 3.0)]
    >>> aggregate(rows)[("d", "ce", "argmax")]["mae"]
    Stat(mean=2.0, std=1.4142135623730951, n=2)
    """
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["loss"], row["rule"]), []).append(row)
    return {
        key: {
            metric: Stat.of(row[metric] for row in group)
            for metric in (*METRIC_KEYS, *TIME_KEYS)
            if all(metric in row for row in group)
        }
        for key, group in groups.items()
    }


def _better(metric: str, a: float, b: float) -> bool:
    return a > b if metric in HIGHER_IS_BETTER else a < b
