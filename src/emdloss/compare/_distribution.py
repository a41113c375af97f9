"""compare on distribution targets: the distribution measures of every run, the LDL baselines
and the noise floor beside the losses, and paired verdicts with intervals.

Every finished run on data with distribution targets holds its test measures in
``metrics.json`` (``distribution.test``), and, fitted on the run's own splits, the LDL
baselines' (``distribution_baselines.test``) and the noise floor (``noise_floor.test``): runs of
one seed (and fold) share their splits, so the baselines and the floor are read once per seed
and fold and paired with the losses by ``(seed, fold)``, like the ordinal tables of
``summary.md``. The verdicts reuse :mod:`emdloss.compare._stats` (paired t intervals; the best
of k candidates, picked by its mean, tested at 5 %/k).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from emdloss.compare._records import RunRecord, _read_metrics
from emdloss.compare._rows import DatasetInfo, Stat
from emdloss.compare._stats import interval_method, paired_difference, selection_level
from emdloss.vocabulary import DISTRIBUTION_METRIC_MODES

__all__ = [
    "DISTRIBUTION_FILE",
    "baseline_rows",
    "distribution_csv",
    "distribution_rows",
    "distribution_section",
]

#: The comparison's file of per-run distribution measures (beside ``results.csv``).
DISTRIBUTION_FILE = "distribution_results.csv"
#: Measures the verdict sentence weighs: the LDL headline (KL), the EMDs, the overlap, NIMA's
#: correlation of the mean score.
VERDICT_MEASURES: tuple[str, ...] = ("kl", "emd2", "nima_emd", "intersection", "lcc")
#: Rows that are not losses.
BASELINE_PREFIX = "baseline:"
NOISE_FLOOR = "noise floor"


def _measures(values: Any) -> dict[str, float] | None:
    if not isinstance(values, Mapping):
        return None
    kept = {k: float(values[k]) for k in DISTRIBUTION_METRIC_MODES if k in values}
    return kept or None


def distribution_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per finished run (and per seed/fold for every baseline and the noise floor).

    Columns: ``dataset``, ``loss`` (``baseline:<name>`` and ``noise floor`` for the others),
    ``seed``, ``fold`` and the measures. Runs without distribution measures give no row.

    Examples
    --------
    >>> distribution_rows([])
    []
    """
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, int, int | None]] = set()
    for record in records:
        if record.status == "failed" or not record.tested:
            continue
        content = _read_metrics(record.run_dir) or {}
        model = _measures((content.get("distribution") or {}).get("test"))
        if model is None:
            continue
        spec = record.spec
        key = {"dataset": spec.dataset, "seed": spec.seed, "fold": spec.fold}
        rows.append({**key, "loss": spec.loss, **model})
        if (spec.dataset, spec.seed, spec.fold) in seen:
            continue
        seen.add((spec.dataset, spec.seed, spec.fold))
        fitted = (content.get("distribution_baselines") or {}).get("test") or {}
        rows += baseline_rows(spec.dataset, spec.seed, spec.fold, fitted)
        floor = _measures(((content.get("noise_floor") or {}).get("test") or {}).get("mean"))
        if floor is not None:
            rows.append({**key, "loss": NOISE_FLOOR, **floor})
    return rows


def baseline_rows(
    dataset: str, seed: int, fold: int | None, scores: Mapping[str, Mapping[str, float]]
) -> list[dict[str, Any]]:
    """Rows of :func:`distribution_rows` for the LDL baselines of one seed (and fold):
    ``scores`` is ``{baseline: {measure: value}}`` on the test split.

    Examples
    --------
    >>> baseline_rows("d", 0, None, {"mean": {"kl": 0.2}})
    [{'dataset': 'd', 'seed': 0, 'fold': None, 'loss': 'baseline:mean', 'kl': 0.2}]
    """
    key = {"dataset": dataset, "seed": seed, "fold": fold}
    return [
        {**key, "loss": f"{BASELINE_PREFIX}{name}", **measures}
        for name, values in scores.items()
        if (measures := _measures(values)) is not None
    ]


def distribution_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """``distribution_results.csv``: one line per row of :func:`distribution_rows`."""
    columns = ["dataset", "loss", "seed", "fold", *DISTRIBUTION_METRIC_MODES]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


def _pairs(
    rows: Sequence[Mapping[str, Any]], dataset: str, loss: str, measure: str
) -> dict[tuple[int, int | None], float]:
    return {
        (int(r["seed"]), r["fold"]): float(r[measure])
        for r in rows
        if r["dataset"] == dataset and r["loss"] == loss and measure in r
    }


def _sign(measure: str) -> float:
    return 1.0 if DISTRIBUTION_METRIC_MODES[measure] == "max" else -1.0


def _mean(values: Mapping[Any, float]) -> float:
    return Stat.of(values.values()).mean


def _nan_low(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def distribution_section(rows: Sequence[Mapping[str, Any]], infos: Sequence[DatasetInfo]) -> str:
    """The ``summary.md`` section of the data sets with distribution targets (``""`` if none).

    Per data set: the test measures per loss, baseline and noise floor (mean ± sd over seeds and
    folds), the paired differences of every loss from cross-entropy, the verdict on the best
    loss that is not cross-entropy against it, and the best loss against the best baseline on
    every measure.
    """
    parts: list[str] = []
    for info in infos:
        mine = [r for r in rows if r["dataset"] == info.spec]
        if not mine:
            continue
        names = list(dict.fromkeys(r["loss"] for r in mine))
        losses = [n for n in names if not n.startswith(BASELINE_PREFIX) and n != NOISE_FLOOR]
        baselines = [n for n in names if n.startswith(BASELINE_PREFIX)]
        measures = [m for m in DISTRIBUTION_METRIC_MODES if all(m in r for r in mine)]
        parts += [f"### Distribution targets: {info.spec}", ""]
        runs = len({(r["seed"], r["fold"]) for r in mine})
        parts.append(
            f"Test measures over {runs} "
            + ("(seed, fold) pair(s)" if info.folds else "seed(s)")
            + " (mean ± sd); "
            "lower is better for "
            + ", ".join(m for m in measures if DISTRIBUTION_METRIC_MODES[m] == "min")
            + "; higher for "
            + ", ".join(m for m in measures if DISTRIBUTION_METRIC_MODES[m] == "max")
            + "."
            + (" Baselines are fitted on each run's training split." if baselines else "")
            + (
                " The noise floor is what each item's observed vote shares would score against "
                "fresh histograms of as many votes (a plug-in estimate of what the true "
                "distribution would score: optimistic, for Clark and Canberra by far, see "
                "emdloss.metrics.noise_floor)."
                if NOISE_FLOOR in names
                else ""
            )
        )
        parts.append("")
        body = []
        for name in [*losses, *baselines, *([NOISE_FLOOR] if NOISE_FLOOR in names else [])]:
            cells = [Stat.of(_pairs(mine, info.spec, name, m).values()).format(4) for m in measures]
            body.append([name, *cells])
        parts += _table(["model", *measures], body)
        parts.append("")
        ratio = info.test_train_ratio
        parts += _versus_ce(info.spec, mine, losses, measures, ratio)
        parts += _versus_baselines(info.spec, mine, losses, baselines, measures, ratio)
    if not parts:
        return ""
    return "## Distribution targets\n\n" + "\n".join(parts).rstrip("\n") + "\n"


def _versus_ce(
    dataset: str,
    rows: Sequence[Mapping[str, Any]],
    losses: Sequence[str],
    measures: Sequence[str],
    test_train_ratio: float | None = None,
) -> list[str]:
    others = [loss for loss in losses if loss != "ce"]
    if "ce" not in losses or not others:
        return ["No paired verdict against cross-entropy: ce and another loss are needed.", ""]
    lines = [
        "Paired difference loss - ce over the same seeds and splits (95 % interval, "
        f"{interval_method(test_train_ratio)}; * the interval excludes 0):",
        "",
    ]
    body = []
    for loss in others:
        cells = [
            paired_difference(
                _pairs(rows, dataset, loss, m),
                _pairs(rows, dataset, "ce", m),
                test_train_ratio=test_train_ratio,
            ).short(4)
            for m in measures
        ]
        body.append([loss, *cells])
    lines += _table(["loss", *measures], body)
    lines.append("")
    level = selection_level(len(others))
    sentences = []
    for m in [m for m in VERDICT_MEASURES if m in measures]:
        reference = _pairs(rows, dataset, "ce", m)
        intervals = {
            loss: paired_difference(
                _pairs(rows, dataset, loss, m),
                reference,
                level=level,
                test_train_ratio=test_train_ratio,
            )
            for loss in others
        }
        best = max(others, key=lambda loss: _nan_low(_sign(m) * intervals[loss].mean))
        sentences.append(
            f"{best} {intervals[best].outcome(m)} ce on {m} ({best} - ce {intervals[best].format(4)})"
        )
    lines.append(
        f"**Verdict ({dataset}, distribution targets):** the best loss other than "
        f"cross-entropy, per measure: {'; '.join(sentences)}. 'beats'/'loses to' only when the "
        "interval excludes 0"
        + (
            f"; the best of {len(others)} losses is tested at 5%/{len(others)} (Bonferroni)."
            if len(others) > 1
            else "."
        )
    )
    lines.append("")
    return lines


def _versus_baselines(
    dataset: str,
    rows: Sequence[Mapping[str, Any]],
    losses: Sequence[str],
    baselines: Sequence[str],
    measures: Sequence[str],
    test_train_ratio: float | None = None,
) -> list[str]:
    if not losses or not baselines:
        return []
    level = selection_level(len(losses) * len(baselines))
    body = []
    wins = 0
    for m in measures:
        best_loss = max(
            losses, key=lambda n: _nan_low(_sign(m) * _mean(_pairs(rows, dataset, n, m)))
        )
        best_base = max(
            baselines, key=lambda n: _nan_low(_sign(m) * _mean(_pairs(rows, dataset, n, m)))
        )
        interval = paired_difference(
            _pairs(rows, dataset, best_loss, m),
            _pairs(rows, dataset, best_base, m),
            level=level,
            test_train_ratio=test_train_ratio,
        )
        outcome = interval.outcome(m)
        wins += outcome == "beats"
        body.append(
            [
                m,
                f"{best_loss} {_mean(_pairs(rows, dataset, best_loss, m)):.4f}",
                f"{best_base.removeprefix(BASELINE_PREFIX)} "
                f"{_mean(_pairs(rows, dataset, best_base, m)):.4f}",
                interval.short(4),
                outcome,
            ]
        )
    lines = [
        f"**Against the LDL baselines ({dataset}):** the best loss beats the best baseline on "
        f"{wins} of {len(measures)} measures (paired over seeds and splits, "
        f"{interval_method(test_train_ratio)}; best of {len(losses)} x {len(baselines)} pairs, tested "
        f"at 5%/{len(losses) * len(baselines)}).",
        "",
    ]
    lines += _table(["measure", "best loss", "best baseline", "difference", "verdict"], body)
    lines.append("")
    return lines
