"""Choosing a grid setting per loss on validation data only.

Every loss runs every setting of the ``--grid`` on every seed. Per data set and loss, the chosen
setting is the one with the best mean validation score (``--select``, on the validation rule the
runs monitor) over the seeds and folds; ties keep the earlier setting of the grid. Selection is
handed the validation metrics alone (:attr:`RunRecord.val`), never a test metric: the test
scores of the chosen runs are the only ones the results report.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from emdloss.compare._plan import Setting, setting_label
from emdloss.compare._records import METRIC_KEYS, RunRecord
from emdloss.vocabulary import METRIC_MODES

__all__ = ["Selection", "choose_settings", "grid_csv", "validation_scores"]


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
        What was compared (validation ``metric`` under prediction ``rule``).
    """

    chosen: Setting
    scores: Mapping[Setting, tuple[float, int]]
    metric: str
    rule: str


def validation_scores(
    records: Sequence[RunRecord], metric: str, rule: str = "argmax"
) -> dict[tuple[str, str], dict[Setting, list[float]]]:
    """``{(dataset, loss): {setting: [validation score per run]}}`` from finished runs.

    Reads :attr:`RunRecord.val` only.
    """
    out: dict[tuple[str, str], dict[Setting, list[float]]] = {}
    for record in records:
        value = record.val.get(rule, {}).get(metric)
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
        A metric of :data:`METRIC_KEYS`; its direction comes from
        :data:`emdloss.vocabulary.METRIC_MODES`.
    rule : str
        The prediction rule the scores were read under (recorded in the result).

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
    """
    if metric not in METRIC_KEYS:
        raise ValueError(f"select: expected one of {', '.join(METRIC_KEYS)}, got {metric!r}")
    sign = -1.0 if METRIC_MODES[metric] == "max" else 1.0
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
    metric: str,
    rule: str,
    selections: Mapping[tuple[str, str], Selection],
) -> str:
    """Validation score of every run of every setting, and whether its setting was chosen."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "loss", "setting", "seed", "fold", f"val_{metric}", "chosen"])
    for r in records:
        value = r.val.get(rule, {}).get(metric)
        chosen = selections[(r.spec.dataset, r.spec.loss)].chosen == r.spec.setting
        fold = "" if r.spec.fold is None else r.spec.fold
        writer.writerow(
            [
                r.spec.dataset,
                r.spec.loss,
                setting_label(r.spec.setting),
                r.spec.seed,
                fold,
                "" if value is None else value,
                int(chosen),
            ]
        )
    return buffer.getvalue()
