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
from emdloss.compare._stats import paired_difference, selection_level
from emdloss.vocabulary import HIGHER_IS_BETTER

__all__ = ["compare_to_baseline"]


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
                _pairs(rows, dataset, loss, rule, metric), reference, level=level
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
        f"**Verdict ({label}):** the best EMD variant: {joined}. Paired t-test over seeds: "
        "'beats' or 'loses to' only when the interval of the mean paired difference "
        "excludes 0, else 'ties with'."
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
    )
    outcome = interval.outcome(metric)
    return [
        f"**Against the baselines ({info.spec}):** the best loss ({best_loss}, "
        f"{METRIC_LABELS[metric]} {mean(best_loss):.3f}) {outcome} the best "
        f"baseline ({best_base.removeprefix('baseline:')}, {mean(best_base):.3f}); paired "
        f"difference {interval.format()}, {rule} rule, same seeds and splits.",
        "",
    ]
