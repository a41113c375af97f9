"""What a finished run left behind: its record (test and validation metrics per prediction rule,
timings) read back from the run directory, for the report and for resuming a comparison."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emdloss.compare._plan import RunSpec
from emdloss.training.rundir import METRICS_FILE, read_history
from emdloss.vocabulary import DISTRIBUTION_METRIC_MODES, HIGHER_IS_BETTER, REPORTED_METRICS

#: The test metrics every run reports, per prediction rule.
METRIC_KEYS: tuple[str, ...] = REPORTED_METRICS
#: A derived rule: per run, the prediction rule that did best on the validation split for the
#: run's model-selection metric, evaluated on test. Choosing the rule by its test score would
#: peek at the test split; this is the fair way to credit a loss with its best decoding.
VALIDATED_RULE = "validated"

# Written by compare next to the training's own files; holds what metrics.json may not.
RECORD_FILE = "compare_run.json"


@dataclass
class RunRecord:
    """The outcome of one run of the grid.

    Attributes
    ----------
    spec : RunSpec
        Which run.
    run_dir : pathlib.Path
        Its directory.
    status : str
        ``"done"`` (trained now), ``"skipped"`` (finished earlier) or ``"failed"``.
    metrics : dict
        Test metrics per prediction rule (``{"argmax": {"accuracy": ..., ...}, ...}``); empty when
        the run failed.
    train_seconds : float
        Training wall time (NaN when unknown).
    error : str or None
        The error of a failed run (the full traceback is in ``<run_dir>/error.txt``).
    val : dict
        Validation metrics of the selected checkpoint per prediction rule: all that choosing a
        grid setting may read.
    first_epoch_seconds : float
        Wall time of the first epoch, which holds the start-up (data loaders, kernel and
        Lightning set-up); NaN when unknown.
    epoch_seconds : float
        Mean wall time of the later epochs: the same measure for every loss (NaN with one epoch).
    tested : bool
        Whether the run's test split has been evaluated. A grid run is trained without it
        (``evaluate_test=False``) and tested only if its setting is chosen on validation data;
        until then ``metrics`` is empty.
    val_distribution : dict
        On distribution targets, the validation measures of the predicted distribution
        (``{"kl": ..., "emd2": ...}``, keys of
        :data:`emdloss.vocabulary.DISTRIBUTION_METRIC_MODES`); empty otherwise. A grid may
        choose its setting on them (``--select kl``).
    """

    spec: RunSpec
    run_dir: Path
    status: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    train_seconds: float = math.nan
    error: str | None = None
    val: dict[str, dict[str, float]] = field(default_factory=dict)
    first_epoch_seconds: float = math.nan
    epoch_seconds: float = math.nan
    tested: bool = True
    val_distribution: dict[str, float] = field(default_factory=dict)


def _is_metric_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and all(key in value for key in METRIC_KEYS)


def extract_test_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Test metrics per prediction rule from a run's ``metrics.json`` content.

    Accepts ``{"test": {rule: {metric: value}}}`` (the run-directory contract) and, for a run
    that reports a single rule, ``{"test": {metric: value}}`` (taken as ``argmax``). When the
    validation metrics per rule are there too, adds the rule :data:`VALIDATED_RULE`: the test
    metrics of the rule that was best on validation for the run's ``monitor``.

    Parameters
    ----------
    metrics : Mapping
        Parsed ``metrics.json``.

    Returns
    -------
    dict
        ``{rule: {metric: float}}`` with every key of :data:`METRIC_KEYS`; empty when the content
        is incomplete.

    Examples
    --------
    >>> m = dict.fromkeys(METRIC_KEYS, 0.5)
    >>> extract_test_metrics({"test": {"argmax": m, "median": m}, "val": {}}).keys()
    dict_keys(['argmax', 'median'])
    >>> extract_test_metrics({"val": {"argmax": m}})
    {}
    >>> better = dict(m, mae=0.1)
    >>> out = extract_test_metrics({"test": {"argmax": m, "median": better},
    ...                             "val": {"argmax": m, "median": better}, "monitor": "val_mae"})
    >>> out["validated"] == out["median"]
    True
    """
    test = metrics.get("test") if isinstance(metrics, Mapping) else None
    if not isinstance(test, Mapping):
        return {}
    if _is_metric_dict(test):
        test = {"argmax": test}
    rules = {
        str(rule): {key: float(values[key]) for key in METRIC_KEYS}
        for rule, values in test.items()
        if _is_metric_dict(values)
    }
    if "argmax" not in rules:
        return {}
    chosen = _validated_rule(metrics, list(rules))
    if chosen is not None:
        rules[VALIDATED_RULE] = dict(rules[chosen])
    return rules


def extract_val_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Validation metrics per prediction rule from ``metrics.json`` content (``{}`` if none).

    Examples
    --------
    >>> m = dict.fromkeys(METRIC_KEYS, 0.5)
    >>> list(extract_val_metrics({"val": {"argmax": m}, "test": {"argmax": m}}))
    ['argmax']
    """
    val = metrics.get("val") if isinstance(metrics, Mapping) else None
    if not isinstance(val, Mapping):
        return {}
    return {
        str(rule): {key: float(values[key]) for key in METRIC_KEYS}
        for rule, values in val.items()
        if _is_metric_dict(values)
    }


def extract_val_distribution(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The validation measures of distribution targets from ``metrics.json`` content.

    Examples
    --------
    >>> extract_val_distribution({"distribution": {"val": {"kl": 0.3, "note": "x"}}})
    {'kl': 0.3}
    >>> extract_val_distribution({"val": {}})
    {}
    """
    part = (metrics.get("distribution") or {}) if isinstance(metrics, Mapping) else {}
    val = part.get("val") if isinstance(part, Mapping) else None
    if not isinstance(val, Mapping):
        return {}
    return {k: float(val[k]) for k in DISTRIBUTION_METRIC_MODES if k in val}


def _epoch_times(run_dir: Path) -> tuple[float, float]:
    # The first epoch carries the start-up; the later ones measure the loss alike for all.
    seconds = [row.get("epoch_seconds", math.nan) for row in read_history(run_dir)]
    seconds = [s for s in seconds if not math.isnan(s)]
    first = seconds[0] if seconds else math.nan
    later = sum(seconds[1:]) / len(seconds[1:]) if len(seconds) > 1 else math.nan
    return first, later


def finished_record(spec: RunSpec, run_dir: Path, status: str) -> RunRecord | None:
    """The record of a finished run read from its directory, or ``None`` if unfinished.

    A run trained with ``evaluate_test=False`` whose ``metrics.json`` holds the validation
    metrics alone is finished but not tested (``tested=False``, no test metrics).
    """
    content = _read_metrics(run_dir)
    if content is None:
        return None
    test, val = extract_test_metrics(content), extract_val_metrics(content)
    if not test and ("test" in content or "argmax" not in val):
        return None  # neither tested nor a complete untested run
    first, later = _epoch_times(run_dir)
    return RunRecord(
        spec,
        run_dir,
        status,
        test,
        _train_seconds(content, run_dir),
        val=val,
        first_epoch_seconds=first,
        epoch_seconds=later,
        tested=bool(test),
        val_distribution=extract_val_distribution(content),
    )


def _validated_rule(metrics: Mapping[str, Any], rules: Sequence[str]) -> str | None:
    # The rule with the best validation value of the monitored metric; ties keep the earlier
    # rule (argmax first), so a loss gains nothing from rules that do no better.
    val = metrics.get("val")
    monitor = str(metrics.get("monitor", "val_mae")).removeprefix("val_")
    if monitor in DISTRIBUTION_METRIC_MODES:
        # Runs on distribution targets select their epoch on a distribution measure, which no
        # rule changes; the rule that decodes their median level is chosen on the MAE.
        monitor = "mae"
    if not isinstance(val, Mapping) or monitor not in METRIC_KEYS:
        return None
    scored = [(rule, float(val[rule][monitor])) for rule in rules if _is_metric_dict(val.get(rule))]
    if not scored:
        return None
    sign = -1.0 if monitor in HIGHER_IS_BETTER else 1.0
    return min(scored, key=lambda item: sign * item[1])[0]


def read_finished(run_dir: Path) -> tuple[dict[str, dict[str, float]], float] | None:
    """``(test metrics per rule, train seconds)`` of a finished run, or ``None`` if unfinished.

    A run is finished when its ``metrics.json`` parses and holds the test metrics of at least the
    ``argmax`` rule with every metric key. ``train_seconds`` comes from ``metrics.json`` when it
    has it, else from compare's own ``compare_run.json``, else NaN.

    Parameters
    ----------
    run_dir : pathlib.Path
        A run directory.

    Returns
    -------
    tuple or None
    """
    content = _read_metrics(run_dir)
    metrics = extract_test_metrics(content) if content is not None else {}
    if content is None or not metrics:
        return None
    return metrics, _train_seconds(content, run_dir)


def _read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The parsed ``metrics.json`` of a run, or None when it is missing or unreadable."""
    try:
        content = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _train_seconds(content: Mapping[str, Any], run_dir: Path) -> float:
    """From ``metrics.json``, else compare's own ``compare_run.json``, else NaN."""
    seconds = content.get("train_seconds")
    if isinstance(seconds, int | float):
        return float(seconds)
    try:
        record = json.loads((run_dir / RECORD_FILE).read_text(encoding="utf-8"))
        return float(record["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return math.nan
