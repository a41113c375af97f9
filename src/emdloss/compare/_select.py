"""Choosing a grid setting per loss on validation data only.

Every loss runs every setting of the ``--grid`` on every seed. Per data set and loss, the chosen
setting is the one with the best mean validation score (``--select``) over the seeds and folds;
ties keep the earlier setting of the grid. The score is a reported metric under the validation
rule the runs monitor, or, on data with distribution targets, a measure of the predicted
distribution (``kl``, ``emd2``, ``cosine``, ...; no rule applies). The names and directions are
:data:`emdloss.vocabulary.SELECT_MODES`. Selection is handed the validation metrics alone
(:attr:`RunRecord.val`, :attr:`RunRecord.val_distribution`), never a test metric: the test
scores of the chosen runs are the only ones the results report.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from emdloss.compare._plan import Setting, setting_label
from emdloss.compare._records import RunRecord
from emdloss.vocabulary import DISTRIBUTION_METRIC_MODES, SELECT_MODES

__all__ = ["Selection", "choose_settings", "grid_csv", "validation_scores", "validation_value"]


@dataclass(frozen=True)
class Selection:
    """The chosen setting of one (data set, loss) and the validation means of every setting.

    Attributes
    ----------
    chosen : Setting
        The setting whose runs the results report.
    scores : dict
        ``{setting: (mean validation score, runs)}`` in grid order.
    metric, rule : str
        What was compared (validation ``metric`` under prediction ``rule``; ``rule`` is ``""``
        for a measure of the predicted distribution).
    """

    chosen: Setting
    scores: Mapping[Setting, tuple[float, int]]
    metric: str
    rule: str


def validation_value(record: RunRecord, metric: str, rule: str = "argmax") -> float | None:
    """A run's validation ``metric``: a distribution measure from
    :attr:`RunRecord.val_distribution`, else the metric under ``rule`` from
    :attr:`RunRecord.val` (``None`` when the run has none)."""
    if metric in DISTRIBUTION_METRIC_MODES:
        return record.val_distribution.get(metric)
    return record.val.get(rule, {}).get(metric)


def validation_scores(
    records: Sequence[RunRecord], metric: str, rule: str = "argmax"
) -> dict[tuple[str, str], dict[Setting, list[float]]]:
    """``{(dataset, loss): {setting: [validation score per run]}}`` from finished runs.

    Reads :attr:`RunRecord.val` and :attr:`RunRecord.val_distribution` only.
    """
    out: dict[tuple[str, str], dict[Setting, list[float]]] = {}
    for record in records:
        value = validation_value(record, metric, rule)
        per_loss = out.setdefault((record.spec.dataset, record.spec.loss), {})
        values = per_loss.setdefault(record.spec.setting, [])
        if value is not None and not math.isnan(value):
            values.append(float(value))
    return out


def choose_settings(
    scores: Mapping[tuple[str, str], Mapping[Setting, Sequence[float]]],
    metric: str,
    rule: str = "argmax",
) -> dict[tuple[str, str], Selection]:
    """Per (data set, loss), the setting with the best mean validation score.

    Parameters
    ----------
    scores : Mapping
        :func:`validation_scores` output: validation values only.
    metric : str
        A key of :data:`emdloss.vocabulary.SELECT_MODES` (a reported metric or a distribution
        measure), which gives its direction.
    rule : str
        The prediction rule the scores were read under (recorded in the result; ``""`` for a
        distribution measure).

    Returns
    -------
    dict
        ``{(dataset, loss): Selection}``; a (data set, loss) without any finished run keeps its
        first setting.

    Examples
    --------
    >>> a, b = (("lr", "0.1"),), (("lr", "0.01"),)
    >>> choose_settings({("d", "ce"): {a: [0.5, 0.7], b: [0.4, 0.5]}}, "mae")[("d", "ce")].chosen
    (('lr', '0.01'),)
    >>> choose_settings({("d", "ce"): {a: [0.9, 0.8], b: [0.7, 0.8]}}, "cosine")[("d", "ce")].chosen
    (('lr', '0.1'),)
    """
    if metric not in SELECT_MODES:
        raise ValueError(f"select: expected one of {', '.join(SELECT_MODES)}, got {metric!r}")
    sign = -1.0 if SELECT_MODES[metric] == "max" else 1.0
    if metric in DISTRIBUTION_METRIC_MODES:
        rule = ""
    out: dict[tuple[str, str], Selection] = {}
    for key, per_setting in scores.items():
        means = {
            setting: (statistics.fmean(values) if values else math.nan, len(values))
            for setting, values in per_setting.items()
        }
        finite = [(s, m) for s, (m, _) in means.items() if not math.isnan(m)]
        chosen = min(finite, key=lambda item: sign * item[1])[0] if finite else next(iter(means))
        out[key] = Selection(chosen, means, metric, rule)
    return out


def grid_csv(
    records: Sequence[RunRecord],
    rule: str,
    selections: Mapping[tuple[str, str], Selection],
) -> str:
    """Validation score of every run of every setting, and whether its setting was chosen.

    One ``val_<metric>`` column per metric the selections chose on (one, unless data sets with
    distribution targets and others are compared together); each run fills its data set's.
    """
    import csv
    import io

    metrics = list(dict.fromkeys(sel.metric for sel in selections.values()))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["dataset", "loss", "setting", "seed", "fold", *(f"val_{m}" for m in metrics)]
    writer.writerow([*header, "chosen"])
    for r in records:
        selection = selections[(r.spec.dataset, r.spec.loss)]
        value = validation_value(r, selection.metric, rule)
        cells = ["" if m != selection.metric or value is None else value for m in metrics]
        fold = "" if r.spec.fold is None else r.spec.fold
        writer.writerow(
            [
                r.spec.dataset,
                r.spec.loss,
                setting_label(r.spec.setting),
                r.spec.seed,
                fold,
                *cells,
                int(selection.chosen == r.spec.setting),
            ]
        )
    return buffer.getvalue()
