"""Tables of a comparison: results.csv rows, mean +- standard deviation, summary.md."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emdloss.compare._plan import is_emd_variant
from emdloss.compare._runner import METRIC_KEYS, VALIDATED_RULE, RunRecord
from emdloss.reference_results import ReferenceTable, reference_tables
from emdloss.training.config import METRIC_MODES

__all__ = [
    "CSV_COLUMNS",
    "HIGHER_IS_BETTER",
    "METRIC_LABELS",
    "DatasetInfo",
    "Stat",
    "aggregate",
    "compare_to_baseline",
    "render_summary",
    "result_rows",
    "results_csv",
]

CSV_COLUMNS: tuple[str, ...] = (
    "dataset",
    "loss",
    "seed",
    "fold",
    "rule",
    *METRIC_KEYS,
    "train_seconds",
)
#: Columns of ``results.csv`` after :data:`CSV_COLUMNS` when the rows have them
#: (``compare --conformal``: test coverage and mean size of the conformal sets).
OPTIONAL_COLUMNS: tuple[str, ...] = ("coverage", "mean_set_size")
#: Metrics where larger is better; the others (errors) are better when smaller (one source:
#: :data:`emdloss.training.config.METRIC_MODES`).
HIGHER_IS_BETTER: frozenset[str] = frozenset(
    name for name, mode in METRIC_MODES.items() if mode == "max"
)
METRIC_LABELS: Mapping[str, str] = {
    "accuracy": "accuracy",
    "one_off_accuracy": "1-off acc.",
    "mae": "MAE",
    "rmse": "RMSE",
    "qwk": "QWK",
    "rps": "RPS",
    "amae": "AMAE",
    "train_seconds": "train s",
}
# The metrics the verdict sentence weighs (the paper's and the targets' headline metrics).
VERDICT_METRICS: tuple[str, ...] = ("mae", "qwk", "accuracy")
# Data sets whose split is the official one (the same test set as the published rows).
OFFICIAL_SPLITS: frozenset[str] = frozenset({"retinamnist"})
#: Peer losses whose native prediction is a threshold count (the median rule), not an argmax.
THRESHOLD_LOSSES: frozenset[str] = frozenset({"coral", "corn"})
#: Data sets whose classes have no order: only accuracy is meaningful there.
ORDERLESS: frozenset[str] = frozenset({"digits"})
_RULE_ORDER = ("argmax", "median", "expected", "bayes", VALIDATED_RULE)


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
                "seed": record.spec.seed,
                "fold": record.spec.fold,
                "rule": rule,
            }
            row.update({key: record.metrics[rule][key] for key in METRIC_KEYS})
            row["train_seconds"] = record.train_seconds
            rows.append(row)
    return rows


def _sorted_rules(rules: Iterable[str]) -> list[str]:
    known = [rule for rule in _RULE_ORDER if rule in rules]
    return known + sorted(rule for rule in rules if rule not in _RULE_ORDER)


def results_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The text of ``results.csv`` (header :data:`CSV_COLUMNS`; floats with full precision).

    Examples
    --------
    >>> results_csv([])
    'dataset,loss,seed,fold,rule,accuracy,one_off_accuracy,mae,rmse,qwk,rps,amae,train_seconds\\n'
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
            for metric in (*METRIC_KEYS, "train_seconds")
            if all(metric in row for row in group)
        }
        for key, group in groups.items()
    }


def _better(metric: str, a: float, b: float) -> bool:
    return a > b if metric in HIGHER_IS_BETTER else a < b


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


def _best_loss(
    stats: Mapping[tuple[str, str, str], Mapping[str, Stat]],
    dataset: str,
    losses: Iterable[str],
    metric: str,
    rule: str = "argmax",
) -> str | None:
    best: str | None = None
    for loss in losses:
        stat = stats.get((dataset, loss, rule), {}).get(metric)
        if stat is None or stat.n == 0:
            continue
        if best is None or _better(metric, stat.mean, stats[(dataset, best, rule)][metric].mean):
            best = loss
    return best


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def _protocol_line(info: DatasetInfo) -> str:
    options = ", ".join(f"{k}={v}" for k, v in sorted(info.options.items()) if v is not None)
    seeds = ", ".join(map(str, info.seeds))
    if info.folds:
        split = f"{info.folds}-fold cross-validation per seed"
    elif info.protocol:
        draw = "" if "official" in info.protocol.lower() else "; every seed draws its own"
        split = f"split: {info.protocol}{draw}"
    else:
        split = "official split" if info.spec in OFFICIAL_SPLITS else "split drawn per seed"
    train, val, test = info.sizes
    return (
        f"Protocol (identical for every loss): {info.kind}, {info.num_classes} classes, "
        f"{split}, train/val/test {train}/{val}/{test}; seeds {seeds}; {options}; model "
        "selection on validation data, test evaluated once with the selected checkpoint."
    )


def _reference_notes(info: DatasetInfo, table: ReferenceTable, runs: int) -> str:
    ours_split = "official" if info.spec in OFFICIAL_SPLITS else "holdout"
    differs: list[str] = []
    if table.num_classes and table.num_classes != info.num_classes:
        differs.append(
            f"{table.source} uses {table.num_classes} classes, ours {info.num_classes}: "
            "the numbers are not comparable"
        )
    if table.split != ours_split:
        differs.append(f"their split is {table.split}, ours {ours_split}")
    if table.split == "holdout" and ours_split == "holdout":
        train, val, test = info.sizes
        share = test / max(1, train + val + test)
        differs.append(
            f"our test share is {share:.0%} of the data (train/val/test {train}/{val}/{test})"
        )
    if table.repetitions is not None and table.repetitions != runs:
        differs.append(
            f"they average {table.repetitions} repetitions, we have {runs} "
            + ("run" if runs == 1 else "runs")
        )
    if table.source == "TOC-UCO":
        differs.append("they tune hyper-parameters per method by cross-validation, we do not")
    if table.source == "MedMNIST v2":
        differs.append(
            f"same official test set, but their models and budgets differ from ours "
            f"(model={info.options.get('model', '?')}); single published numbers without spread"
        )
    extra = sorted({k for row in table.rows for k in row.metrics if k not in METRIC_KEYS})
    if extra:
        values = "; ".join(
            f"{row.method} {', '.join(f'{k.upper()} {row.metrics[k]:.3f}' for k in extra)}"
            for row in table.rows
        )
        differs.append(f"also published but not computed by us: {values}")
    text = f"*{table.source}* ({table.citation}): {table.protocol}."
    if differs:
        text += " Protocol differences: " + "; ".join(differs) + "."
    return text


def _dataset_section(
    info: DatasetInfo,
    stats: Mapping[tuple[str, str, str], Mapping[str, Stat]],
    failed: Sequence[RunRecord],
) -> list[str]:
    name = info.spec
    losses = [loss for loss in info.losses if (name, loss, "argmax") in stats]
    lines = [f"## {name}", "", _protocol_line(info), ""]
    if not losses:
        return [*lines, "No finished runs.", ""]
    columns = [*METRIC_KEYS, "train_seconds"]
    best = {metric: _best_loss(stats, name, losses, metric) for metric in METRIC_KEYS}
    body: list[list[str]] = []
    runs = 0
    for loss in losses:
        row_stats = stats[(name, loss, "argmax")]
        runs = max(runs, row_stats["accuracy"].n)
        cells = [loss, str(row_stats["accuracy"].n)]
        for metric in columns:
            stat = row_stats.get(metric, Stat.of([]))
            text = stat.format(1 if metric == "train_seconds" else 3)
            cells.append(f"**{text}**" if best.get(metric) == loss else text)
        body.append(cells)
    tables = reference_tables(name)
    for table in tables:
        reps = "–" if table.repetitions is None else str(table.repetitions)
        for ref in table.rows:
            cells = [f"*{table.source}: {ref.method}*", reps]
            cells += [f"*{ref.metrics[m]:.3f}*" if m in ref.metrics else "–" for m in METRIC_KEYS]
            body.append([*cells, "–"])
    header = ["loss", "runs", *(METRIC_LABELS[m] for m in columns)]
    lines += _table(header, body)
    lines += [
        "",
        "Test set, argmax prediction rule, mean ± standard deviation over seeds"
        + (" and folds" if info.folds else "")
        + "; bold: best of our losses (highest accuracy, 1-off accuracy, QWK; lowest MAE, RMSE, "
        "RPS, AMAE)" + ("; italic rows: published results." if tables else "."),
        "",
    ]
    for table in tables:
        lines += [f"- {_reference_notes(info, table, runs)}"]
        lines += _published_best(info, table, stats, losses)
    if tables:
        lines.append("")
    lines += _rules_section(name, losses, stats)
    lines += [_verdict(name, losses, stats), ""]
    validated = _verdict(name, losses, stats, VALIDATED_RULE)
    if validated:
        lines += [validated, ""]
    failures = [r for r in failed if r.spec.dataset == name]
    if failures:
        lines += [f"Failed runs ({len(failures)}), left out above:", ""]
        lines += [f"- {r.spec.label}: {r.error} (see {r.run_dir / 'error.txt'})" for r in failures]
        lines.append("")
    return lines


def _published_best(
    info: DatasetInfo,
    table: ReferenceTable,
    stats: Mapping[tuple[str, str, str], Mapping[str, Stat]],
    losses: Sequence[str],
) -> list[str]:
    if table.num_classes and table.num_classes != info.num_classes:
        return []
    lines: list[str] = []
    for metric in (m for m in table.metrics if m in METRIC_KEYS):
        ref = max(
            table.rows,
            key=lambda r: (
                r.metrics.get(metric, -math.inf)
                if metric in HIGHER_IS_BETTER
                else -r.metrics.get(metric, math.inf)
            ),
        )
        ours = _best_loss(stats, info.spec, losses, metric)
        if ours is None:
            continue
        stat = stats[(info.spec, ours, "argmax")][metric]
        word = (
            "better than" if _better(metric, stat.mean, ref.metrics[metric]) else "not better than"
        )
        lines.append(
            f"  - {METRIC_LABELS[metric]}: our best ({ours}, {stat.format()}) is {word} the best "
            f"published ({ref.method}, {ref.metrics[metric]:.3f})."
        )
    return lines


def _rules_section(
    dataset: str, losses: Sequence[str], stats: Mapping[tuple[str, str, str], Mapping[str, Stat]]
) -> list[str]:
    rules = _sorted_rules({rule for (d, _, rule) in stats if d == dataset})
    if len(rules) < 2:
        return []
    body: list[list[str]] = []
    for loss in losses:
        cells = [loss]
        for metric in METRIC_KEYS:
            best_rule = rules[0]
            for rule in rules:
                stat = stats.get((dataset, loss, rule), {}).get(metric)
                current = stats.get((dataset, loss, best_rule), {}).get(metric)
                if stat is not None and (
                    current is None or _better(metric, stat.mean, current.mean)
                ):
                    best_rule = rule
            stat = stats[(dataset, loss, best_rule)][metric]
            cells.append(f"{best_rule} {stat.mean:.3f}")
        body.append(cells)
    lines = [
        f"Best prediction rule per metric (mean over runs; rules: {', '.join(rules)}):",
        "",
        *_table(["loss", *(METRIC_LABELS[m] for m in METRIC_KEYS)], body),
        "",
    ]
    threshold = [loss for loss in losses if loss in THRESHOLD_LOSSES]
    if threshold:
        lines += [
            f"{', '.join(threshold)} predict by thresholds: their own prediction is the median "
            "rule (the number of cumulative probabilities above 0.5), not the argmax of the "
            "class distribution derived from them; read their rows in this table.",
            "",
        ]
    return lines


def _verdict(
    dataset: str,
    losses: Sequence[str],
    stats: Mapping[tuple[str, str, str], Mapping[str, Stat]],
    rule: str = "argmax",
) -> str:
    emd = [loss for loss in losses if is_emd_variant(loss)]
    if "ce" not in losses or not emd:
        missing = "cross-entropy (ce)" if "ce" not in losses else "an EMD variant"
        return f"**Verdict ({dataset}):** none, {missing} was not among the finished losses."
    if any((dataset, loss, rule) not in stats for loss in ("ce", *emd)):
        return ""
    baseline = stats[(dataset, "ce", rule)]
    orderless = dataset.lower() in ORDERLESS
    parts: list[str] = []
    for metric in ("accuracy",) if orderless else VERDICT_METRICS:
        best = _best_loss(stats, dataset, emd, metric, rule)
        assert best is not None  # every loss in `losses` has statistics for `rule`
        candidate = stats[(dataset, best, rule)][metric]
        outcome, gain, spread = compare_to_baseline(metric, candidate, baseline[metric])
        detail = f"{best} {candidate.format()} vs ce {baseline[metric].format()}"
        if math.isnan(spread):
            detail += f", difference {gain:+.3f}, no spread with one run"
        else:
            relation = ">" if abs(gain) > spread else "<="
            detail += f", difference {gain:+.3f} {relation} 1 sd = {spread:.3f}"
        parts.append(f"{outcome} cross-entropy on {METRIC_LABELS[metric]} ({detail})")
    joined = parts[0] if len(parts) == 1 else "; ".join(parts[:-1]) + f"; and {parts[-1]}"
    label = (
        f"{dataset}"
        if rule == "argmax"
        else f"{dataset}, each run decoded by the rule best on its validation split"
    )
    text = (
        f"**Verdict ({label}):** the best EMD variant {joined}. A difference counts only beyond "
        "one standard deviation over seeds (the larger of the two); positive differences favour "
        "the EMD variant."
    )
    if orderless:
        text += (
            f" The classes of {dataset} have no order: only accuracy is meaningful; the ordinal "
            "metrics treat the labels as if ordered and are shown for completeness."
        )
    return text


def render_summary(
    records: Sequence[RunRecord], datasets: Sequence[DatasetInfo], *, output: str
) -> str:
    """The text of ``summary.md``.

    Parameters
    ----------
    records : sequence of RunRecord
        Every run of the comparison.
    datasets : sequence of DatasetInfo
        The data sets in plan order.
    output : str
        The comparison's output directory (named in the heading).

    Returns
    -------
    str
        Markdown.
    """
    rows = result_rows(records)
    stats = aggregate(rows)
    failed = [r for r in records if r.status == "failed"]
    counts = {status: sum(r.status == status for r in records) for status in ("done", "skipped")}
    lines = [
        "# emdloss compare: summary",
        "",
        f"Output: `{output}`. {len(records)} run{'' if len(records) == 1 else 's'}: "
        f"{counts['done']} trained now, "
        f"{counts['skipped']} finished earlier, {len(failed)} failed. Plots: `plots/`; every run "
        "and prediction rule: `results.csv`; each run's files: `runs/<dataset>/<loss>/seed<k>`.",
        "",
    ]
    for info in datasets:
        lines += _dataset_section(info, stats, failed)
    return "\n".join(lines).rstrip() + "\n"
