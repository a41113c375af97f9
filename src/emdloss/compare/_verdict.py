"""The verdict sentences of summary.md: the best EMD variant against cross-entropy, the best loss
against the best baseline, and a candidate against a baseline relative to the seed spread."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from emdloss.compare._plan import is_emd_variant
from emdloss.compare._records import METRIC_KEYS, VALIDATED_RULE
from emdloss.compare._rows import (
    METRIC_LABELS,
    ORDERLESS,
    VERDICT_METRICS,
    DatasetInfo,
    Stat,
)
from emdloss.compare._stats import LEVEL, interval_method, paired_difference, selection_level
from emdloss.vocabulary import HIGHER_IS_BETTER

__all__ = ["compare_to_baseline", "verdict_table"]


def compare_to_baseline(metric: str, candidate: Stat, baseline: Stat) -> tuple[str, float, float]:
    """Whether ``candidate`` beats, ties or loses to ``baseline`` relative to the seed spread.

    The spread is the larger of the two sample standard deviations; a difference of the means
    beyond it in the better (worse) direction is a win (loss), anything smaller is a tie.

    Parameters
    ----------
    metric : str
        Metric name (decides the better direction).
    candidate, baseline : Stat
        Statistics over seeds.

    Returns
    -------
    outcome : str
        ``"beats"``, ``"ties with"``, ``"loses to"`` or ``"cannot be judged against"`` (fewer
        than two runs on a side, so no spread).
    improvement : float
        How much better the candidate's mean is (positive is better, in metric units).
    spread : float
        The standard deviation used.

    Examples
    --------
    >>> compare_to_baseline("mae", Stat(1.0, 0.1, 3), Stat(1.5, 0.2, 3))
    ('beats', 0.5, 0.2)
    >>> compare_to_baseline("qwk", Stat(0.50, 0.1, 3), Stat(0.55, 0.05, 3))[0]
    'ties with'
    """
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    improvement = sign * (candidate.mean - baseline.mean)
    spread = max(candidate.std, baseline.std)
    if math.isnan(spread) or math.isnan(improvement):
        return "cannot be judged against", improvement, spread
    if improvement > spread:
        return "beats", improvement, spread
    if improvement < -spread:
        return "loses to", improvement, spread
    return "ties with", improvement, spread


def _pairs(
    rows: Sequence[Mapping[str, Any]], dataset: str, loss: str, rule: str, metric: str
) -> dict[tuple[int, int | None], float]:
    """``{(seed, fold): value}`` of one loss (or baseline) and rule: the pairing key."""
    return {
        (int(row["seed"]), row["fold"]): float(row[metric])
        for row in rows
        if row["dataset"] == dataset and row["loss"] == loss and row["rule"] == rule
    }


def _verdict(
    dataset: str,
    losses: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    rule: str = "argmax",
    *,
    test_train_ratio: float | None = None,
) -> str:
    emd = [loss for loss in losses if is_emd_variant(loss)]
    if "ce" not in losses or not emd:
        missing = "cross-entropy (ce)" if "ce" not in losses else "an EMD variant"
        return f"**Verdict ({dataset}):** none, {missing} was not among the finished losses."
    if not _pairs(rows, dataset, "ce", rule, "mae"):
        return ""
    orderless = dataset.lower() in ORDERLESS
    parts: list[str] = []
    # The best of the EMD variants is chosen by its mean here: test it at 5 % / k (Bonferroni).
    level = selection_level(len(emd))
    for metric in ("accuracy",) if orderless else VERDICT_METRICS:
        reference = _pairs(rows, dataset, "ce", rule, metric)
        intervals = {
            loss: paired_difference(
                _pairs(rows, dataset, loss, rule, metric),
                reference,
                level=level,
                test_train_ratio=test_train_ratio,
            )
            for loss in emd
        }
        sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
        best = max(emd, key=lambda loss: sign * _nan_low(intervals[loss].mean))
        interval = intervals[best]
        parts.append(
            f"{best} {interval.outcome(metric)} cross-entropy on {METRIC_LABELS[metric]} "
            f"(paired difference {best} - ce {interval.format()})"
        )
    joined = parts[0] if len(parts) == 1 else "; ".join(parts[:-1]) + f"; and {parts[-1]}"
    label = (
        f"{dataset}"
        if rule == "argmax"
        else f"{dataset}, each run decoded by the rule best on its validation split"
    )
    text = (
        f"**Verdict ({label}):** the best EMD variant: {joined}. 'beats' or 'loses to' only "
        "when the interval of the mean paired difference excludes 0, else 'ties with' "
        f"({interval_method(test_train_ratio)})."
        + (
            f" The best of {len(emd)} EMD variants is tested at 5%/{len(emd)} (Bonferroni: a "
            f"{100 * level:.4g}% interval), since it was picked for its mean."
            if len(emd) > 1
            else ""
        )
    )
    if orderless:
        text += (
            f" The classes of {dataset} have no order: only accuracy is meaningful; the ordinal "
            "metrics treat the labels as if ordered and are shown for completeness."
        )
    return text


def _nan_low(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _baseline_verdict(
    info: DatasetInfo,
    losses: Sequence[str],
    baselines: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
) -> list[str]:
    """The best loss against the best baseline, each under its validated rule, paired."""
    if not losses or not baselines:
        return []
    metric = info.select if info.select in METRIC_KEYS else "mae"
    if info.spec.lower() in ORDERLESS:
        metric = "accuracy"
    rule = VALIDATED_RULE
    if not any(_pairs(rows, info.spec, loss, rule, metric) for loss in losses):
        rule = "argmax"
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0

    def mean(name: str) -> float:
        values = list(_pairs(rows, info.spec, name, rule, metric).values())
        return sum(values) / len(values) if values else math.nan

    best_loss = max(losses, key=lambda n: _nan_low(sign * mean(n)))
    best_base = max(baselines, key=lambda n: _nan_low(sign * mean(n)))
    # Both sides are the best of several: Bonferroni over every loss-baseline pair.
    interval = paired_difference(
        _pairs(rows, info.spec, best_loss, rule, metric),
        _pairs(rows, info.spec, best_base, rule, metric),
        level=selection_level(len(losses) * len(baselines)),
        test_train_ratio=info.test_train_ratio,
    )
    outcome = interval.outcome(metric)
    return [
        f"**Against the baselines ({info.spec}):** the best loss ({best_loss}, "
        f"{METRIC_LABELS[metric]} {mean(best_loss):.3f}) {outcome} the best "
        f"baseline ({best_base.removeprefix('baseline:')}, {mean(best_base):.3f}); paired "
        f"difference {interval.format()}, {rule} rule, same seeds and splits "
        f"({interval_method(info.test_train_ratio)}).",
        "",
    ]


def _key_metric(info: DatasetInfo) -> str:
    if info.spec.lower() in ORDERLESS:
        return "accuracy"
    return info.select if info.select in METRIC_KEYS else "mae"


def _key_measure(
    info: DatasetInfo,
    rows: Sequence[Mapping[str, Any]],
    rule: str,
    distribution: Sequence[Mapping[str, Any]],
    measures: Mapping[str, str | None] | None,
) -> tuple[str, Sequence[Mapping[str, Any]]]:
    """The key metric of a data set and the rows that hold it: on distribution targets the
    measure its runs were selected on (a distribution does not depend on the prediction rule,
    so its rows stand under ``rule``)."""
    measure = (measures or {}).get(info.spec)
    mine = [row for row in distribution if row["dataset"] == info.spec]
    if measure is not None and mine:
        return measure, [{**row, "rule": rule} for row in mine]
    return _key_metric(info), rows


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def verdict_table(
    infos: Sequence[DatasetInfo],
    rows: Sequence[Mapping[str, Any]],
    rule: str = "argmax",
    *,
    distribution: Sequence[Mapping[str, Any]] = (),
    measures: Mapping[str, str | None] | None = None,
) -> str:
    """The answer of a comparison as one compact table: a line per data set and loss.

    Each line holds the data set's key metric (its ``--select`` metric; accuracy on classes
    without order; on distribution targets the measure its runs were selected on,
    ``measures[spec]``, from the ``distribution`` rows of
    :func:`emdloss.compare._distribution.distribution_rows`) on the test split, mean over runs
    under ``rule``; the paired difference
    loss - cross-entropy over the seeds (and folds) both ran, with its 95% interval; and the
    verdict of that interval (:meth:`emdloss.compare._stats.Interval.outcome`). Everything else
    (every metric and rule, baselines, published rows, the Bonferroni-adjusted verdict of the
    best EMD variant) is in ``summary.md``.

    Examples
    --------
    >>> info = DatasetInfo("lev", 5, "tabular", (1, 1, 1), {}, (0, 1), None, ("ce", "w1"))
    >>> rows = [{"dataset": "lev", "loss": loss, "rule": "argmax", "seed": seed, "fold": None,
    ...          "mae": mae} for loss, seed, mae in
    ...         [("ce", 0, 0.5), ("ce", 1, 0.6), ("w1", 0, 0.4), ("w1", 1, 0.48)]]
    >>> print(verdict_table([info], rows))
    data set  loss  runs  MAE    loss - ce [95% CI]       verdict
    lev       ce    2     0.550  reference
    lev       w1    2     0.440  -0.110 [-0.237, +0.017]  ties with ce
    """
    keyed = {info.spec: _key_measure(info, rows, rule, distribution, measures) for info in infos}
    # One key metric for every data set: its name heads the column; else each cell names it.
    labels = sorted({_label(metric) for metric, _ in keyed.values()})
    one = labels[0] if len(labels) == 1 else None
    lines: list[tuple[str, ...]] = [
        ("data set", "loss", "runs", one or "metric", "loss - ce [95% CI]", "verdict")
    ]
    for info in infos:
        metric, source = keyed[info.spec]
        reference = _pairs(source, info.spec, "ce", rule, metric)
        for loss in info.losses:
            pairs = _pairs(source, info.spec, loss, rule, metric)
            values = [v for v in pairs.values() if not math.isnan(v)]
            mean = (
                f"{sum(values) / len(values):.{3 if metric in METRIC_KEYS else 4}f}"
                if values
                else "–"
            )
            if one is None:
                mean = f"{_label(metric)} {mean}"
            if loss == "ce":
                cells: tuple[str, ...] = ("reference", "")
            elif not reference:
                cells = ("–", "no ce runs to pair with")
            else:
                interval = paired_difference(
                    pairs, reference, level=LEVEL, test_train_ratio=info.test_train_ratio
                )
                cells = (interval.short().rstrip("*"), f"{interval.outcome(metric)} ce")
            lines.append((info.spec, loss, str(len(values)), mean, *cells))
    widths = [max(len(line[k]) for line in lines) for k in range(5)]
    table = "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)).rstrip()
        if not line[5]
        else "  ".join(cell.ljust(width) for cell, width in zip(line[:5], widths, strict=True))
        + "  "
        + line[5]
        for line in lines
    )
    # Resampled test rows widen the intervals: say by which test, once per distinct one.
    corrected = {info.spec: info.test_train_ratio for info in infos if info.resampled}
    if not corrected:
        return table
    tests = sorted({interval_method(ratio) for ratio in corrected.values()})
    return table + "\n" + f"95% CI: {'; '.join(tests)}"
