"""The text of summary.md: per data set the mean +- standard deviation tables, the published rows,
the grid, prediction-rule and paired sections, and the verdicts (:mod:`._verdict`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from emdloss.compare._baselines import is_baseline
from emdloss.compare._plan import setting_label
from emdloss.compare._records import METRIC_KEYS, VALIDATED_RULE, RunRecord
from emdloss.compare._rows import (
    METRIC_LABELS,
    OFFICIAL_SPLITS,
    THRESHOLD_LOSSES,
    DatasetInfo,
    Stat,
    _better,
    _sorted_rules,
    aggregate,
    result_rows,
)
from emdloss.compare._select import Selection
from emdloss.compare._stats import interval_method, paired_difference, welch_difference
from emdloss.compare._verdict import (
    _baseline_verdict,
    _pairs,
    _verdict,
)
from emdloss.reference_results import ReferenceTable, reference_tables
from emdloss.vocabulary import HIGHER_IS_BETTER

__all__ = ["render_summary", "run_counts"]


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
        differs.append(
            "they tune hyper-parameters per method by cross-validation; we tune only what "
            "--grid lists, on the validation split"
        )
    if table.source == "MedMNIST+":
        differs.append(
            "their backbones are ImageNet-pretrained, which we cannot download offline; ours "
            f"(model={info.options.get('model', '?')}) start from random weights"
        )
    if table.source == "MedMNIST v2":
        differs.append(
            f"same official test set, but their models and budgets differ from ours "
            f"(model={info.options.get('model', '?')}); single published numbers without spread"
        )
    extra = sorted({k for row in table.rows for k in row.metrics if k not in METRIC_KEYS})
    if extra:
        values = "; ".join(
            f"{row.method} "
            + ", ".join(f"{k.upper()} {row.metrics[k]:.3f}" for k in extra if k in row.metrics)
            for row in table.rows
            if any(k in row.metrics for k in extra)
        )
        differs.append(f"also published but not computed by us: {values}")
    text = f"*{table.source}* ({table.citation}): {table.protocol}."
    if differs:
        text += " Protocol differences: " + "; ".join(differs) + "."
    return text


def _display(name: str) -> str:
    if name == "baseline:prior":
        return "baseline: prior (argmax: most common class; median: median class)"
    return name.replace("baseline:", "baseline: ")


def _time_cell(stat: Stat | None) -> str:
    return "–" if stat is None or stat.n == 0 else f"{stat.mean:.2f}"


def _dataset_section(
    info: DatasetInfo,
    stats: Mapping[tuple[str, str, str], Mapping[str, Stat]],
    failed: Sequence[RunRecord],
    rows: Sequence[Mapping[str, Any]],
    selections: Mapping[tuple[str, str], Selection],
    baseline_errors: Mapping[str, str],
) -> list[str]:
    name = info.spec
    losses = [loss for loss in info.losses if (name, loss, "argmax") in stats]
    baselines = sorted(
        {loss for (d, loss, _) in stats if d == name and is_baseline(loss)},
        key=lambda b: (b != "baseline:prior", b),
    )
    lines = [f"## {name}", "", _protocol_line(info), ""]
    if info.targets:
        lines += [f"Targets: {info.targets}", ""]
    if not losses:
        return [*lines, "No finished runs.", ""]
    lines += _grid_section(name, losses, selections)
    best = {metric: _best_loss(stats, name, losses, metric) for metric in METRIC_KEYS}
    body: list[list[str]] = []
    runs = 0
    for loss in [*losses, *baselines]:
        row_stats = stats.get((name, loss, "argmax"))
        if row_stats is None:
            continue
        if not is_baseline(loss):
            runs = max(runs, row_stats["accuracy"].n)
        cells = [_display(loss), str(row_stats["accuracy"].n)]
        for metric in METRIC_KEYS:
            text = row_stats.get(metric, Stat.of([])).format(3)
            cells.append(f"**{text}**" if best.get(metric) == loss else text)
        cells += [_time_cell(row_stats.get(k)) for k in ("epoch_seconds", "first_epoch_seconds")]
        body.append(cells)
    tables = reference_tables(name)
    for table in tables:
        reps = "–" if table.repetitions is None else str(table.repetitions)
        for ref in table.rows:
            cells = [f"*{table.source}: {ref.method}*", reps]
            for m in METRIC_KEYS:
                if m not in ref.metrics:
                    cells.append("–")
                elif m in ref.spread:
                    cells.append(f"*{ref.metrics[m]:.3f} ± {ref.spread[m]:.3f}*")
                else:
                    cells.append(f"*{ref.metrics[m]:.3f}*")
            body.append([*cells, "–", "–"])
    header = ["loss", "runs", *(METRIC_LABELS[m] for m in METRIC_KEYS), "s/epoch", "1st epoch s"]
    lines += _table(header, body)
    lines += [
        "",
        "Test set, argmax prediction rule, mean ± standard deviation over seeds"
        + (" and folds" if info.folds else "")
        + "; bold: best of our losses (highest accuracy, 1-off accuracy, QWK; lowest MAE, RMSE, "
        "RPS, AMAE). *runs*: runs (seeds x folds) behind a row, for published rows the "
        "repetitions they average. *s/epoch*: mean wall time of the epochs after the first (the "
        "same measure for every loss); *1st epoch s*: the first epoch, which also holds the "
        "start-up. Baseline rows are fitted on the same splits and decoded by the same rules"
        + ("; italic rows: published results." if tables else "."),
        "",
    ]
    if baseline_errors:
        lines += [f"- {k} left out: {v}" for k, v in sorted(baseline_errors.items())] + [""]
    for table in tables:
        lines += [f"- {_reference_notes(info, table, runs)}"]
        lines += _published_best(info, table, stats, losses)
    if tables:
        lines.append("")
    lines += _rules_section(name, [*losses, *baselines], stats)
    ratio = info.test_train_ratio
    lines += _paired_section(name, losses, rows, ratio)
    lines += [_verdict(name, losses, rows, test_train_ratio=ratio), ""]
    validated = _verdict(name, losses, rows, VALIDATED_RULE, test_train_ratio=ratio)
    if validated:
        lines += [validated, ""]
    lines += _baseline_verdict(info, losses, baselines, rows)
    failures = [r for r in failed if r.spec.dataset == name]
    if failures:
        lines += [f"Failed runs ({len(failures)}), left out above:", ""]
        lines += [f"- {r.spec.label}: {r.error} (see {r.run_dir / 'error.txt'})" for r in failures]
        lines.append("")
    return lines


def _grid_section(
    dataset: str, losses: Sequence[str], selections: Mapping[tuple[str, str], Selection]
) -> list[str]:
    chosen = [selections[(dataset, loss)] for loss in losses if (dataset, loss) in selections]
    if not chosen or all(len(sel.scores) < 2 for sel in chosen):
        return []
    first = chosen[0]
    settings = list(first.scores)
    header = ["loss", *(setting_label(s) for s in settings)]
    body = []
    for loss in losses:
        sel = selections.get((dataset, loss))
        if sel is None:
            continue
        cells = [loss]
        for setting in settings:
            mean, n = sel.scores.get(setting, (math.nan, 0))
            text = "–" if n == 0 else f"{mean:.3f} ({n})"
            cells.append(f"**{text}**" if setting == sel.chosen else text)
        body.append(cells)
    return [
        f"Grid: every loss ran every setting on every seed; per loss, the setting with the best "
        f"mean validation {METRIC_LABELS.get(first.metric, first.metric)} "
        + (f"({first.rule} rule; " if first.rule else "(of the predicted distribution; ")
        + "bold, runs in brackets) is the one reported below. Test metrics of the other "
        "settings are never read.",
        "",
        *_table(header, body),
        "",
    ]


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
        if ours is None or metric not in ref.metrics:
            continue
        stat = stats[(info.spec, ours, "argmax")][metric]
        theirs = ref.metrics[metric]
        spread = ref.spread.get(metric)
        reps = table.repetitions or 0
        published = f"{ref.method}, {theirs:.3f}" + (
            f" ± {spread:.3f}" if spread is not None else ""
        )
        published += f", {reps or 'unstated'} runs"
        ours_text = f"our best ({ours}, {stat.format()}, {stat.n} runs)"
        if spread is None or reps < 2:
            verdict = (
                f"{ours_text} vs the best published ({published}): difference of means "
                f"{stat.mean - theirs:+.3f}, not judged: the source publishes no spread."
            )
        else:
            interval = welch_difference(stat.mean, stat.std, stat.n, theirs, spread, reps)
            word = {
                "beats": "is better than",
                "loses to": "is worse than",
                "ties with": "is within the noise of both sides of",
                "cannot be judged against": "cannot be judged (one run) against",
            }[interval.outcome(metric)]
            verdict = (
                f"{ours_text} {word} the best published ({published}); Welch difference "
                f"{interval.format()}."
            )
        lines.append(f"  - {METRIC_LABELS[metric]}: {verdict}")
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


def _paired_section(
    dataset: str,
    losses: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    test_train_ratio: float | None = None,
) -> list[str]:
    """Loss and decision rule apart: every loss minus ce under the same rule, and every rule
    minus argmax for the same loss, paired by seed, with 95% intervals."""
    rules = _sorted_rules({r["rule"] for r in rows if r["dataset"] == dataset})
    others = [loss for loss in losses if loss != "ce"]
    lines: list[str] = []
    metric = "mae"
    if "ce" in losses and others:
        body = []
        for loss in others:
            cells = [loss]
            for rule in rules:
                d = paired_difference(
                    _pairs(rows, dataset, loss, rule, metric),
                    _pairs(rows, dataset, "ce", rule, metric),
                    test_train_ratio=test_train_ratio,
                )
                cells.append(d.short())
            body.append(cells)
        lines += [
            f"The loss, rule held fixed: {METRIC_LABELS[metric]} of each loss minus cross-entropy "
            f"under the same prediction rule, paired by seed (mean [95% CI], "
            f"{interval_method(test_train_ratio)}; * the interval excludes 0; negative favours the "
            "loss):",
            "",
            *_table(["loss", *rules], body),
            "",
        ]
    if len(rules) > 1:
        body = []
        for loss in losses:
            base = _pairs(rows, dataset, loss, "argmax", metric)
            cells = [loss]
            for rule in rules[1:]:
                cells.append(
                    paired_difference(
                        _pairs(rows, dataset, loss, rule, metric),
                        base,
                        test_train_ratio=test_train_ratio,
                    ).short()
                )
            body.append(cells)
        lines += [
            f"The rule, loss held fixed: {METRIC_LABELS[metric]} of each prediction rule minus "
            f"argmax for the same runs (mean [95% CI], {interval_method(test_train_ratio)}; "
            "negative favours the rule):",
            "",
            *_table(["loss", *rules[1:]], body),
            "",
        ]
    return lines


def run_counts(records: Sequence[RunRecord]) -> str:
    """``"4 runs: 3 trained now, 1 finished earlier, 0 failed"``."""
    counts = {s: sum(r.status == s for r in records) for s in ("done", "skipped", "failed")}
    return (
        f"{len(records)} run{'' if len(records) == 1 else 's'}: {counts['done']} trained now, "
        f"{counts['skipped']} finished earlier, {counts['failed']} failed"
    )


def render_summary(
    records: Sequence[RunRecord],
    datasets: Sequence[DatasetInfo],
    *,
    output: str,
    rows: Sequence[Mapping[str, Any]] | None = None,
    selections: Mapping[tuple[str, str], Selection] | None = None,
    baseline_errors: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The text of ``summary.md``.

    Parameters
    ----------
    records : sequence of RunRecord
        The runs reported (with a grid: the chosen setting's runs only).
    datasets : sequence of DatasetInfo
        The data sets in plan order.
    output : str
        The comparison's output directory (named in the heading).
    rows : sequence of Mapping, optional
        Rows of results.csv, baselines included (default: :func:`result_rows` of ``records``).
    selections : Mapping, optional
        The grid selection per (data set, loss).
    baseline_errors : Mapping, optional
        ``{dataset: {baseline: why it is missing}}``.

    Returns
    -------
    str
        Markdown.
    """
    rows = result_rows(records) if rows is None else rows
    stats = aggregate(rows)
    failed = [r for r in records if r.status == "failed"]
    lines = [
        "# emdloss compare: summary",
        "",
        f"Output: `{output}`. {run_counts(records)}. Figures: `plots/<dataset>/` (metrics, "
        "paired differences to ce, per-class MAE, and with `--plots end` or `runs` the losses' "
        "confusion matrices and the runs' learning curves); every run and prediction rule: "
        "`results.csv`; each run's files: `runs/<dataset>/<loss>/seed<k>` (its own figures: "
        "`emdloss plot RUN_DIR`, or `--plots runs`).",
        "",
    ]
    for info in datasets:
        lines += _dataset_section(
            info,
            stats,
            failed,
            rows,
            selections or {},
            (baseline_errors or {}).get(info.spec, {}),
        )
    return "\n".join(lines).rstrip() + "\n"
