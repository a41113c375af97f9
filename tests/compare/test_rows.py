"""The tables of `emdloss compare`: statistics, verdicts, results.csv and summary.md.

Synthetic run records with known metrics; statistics checked against NumPy, per-class MAE against
scikit-learn, the published rows against reference.md section 4.

Named for emdloss.compare._rows (aggregate, results.csv); also covers _summary, _verdict, _plan,
_records and _plots.per_class_mae.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")  # oracle

from sklearn.metrics import mean_absolute_error

from emdloss.compare import CSV_COLUMNS, METRIC_KEYS, RunRecord
from emdloss.compare._plan import RunSpec, parse_seeds, plan_runs
from emdloss.compare._plots import per_class_mae
from emdloss.compare._records import extract_test_metrics
from emdloss.compare._rows import DatasetInfo, Stat, aggregate, result_rows, results_csv
from emdloss.compare._summary import render_summary
from emdloss.compare._verdict import compare_to_baseline
from emdloss.reference_results import REFERENCE_TABLES, reference_tables


def _metrics(rng: np.random.Generator, shift: float) -> dict[str, float]:
    return {key: float(rng.uniform(0.2, 0.8) + shift) for key in METRIC_KEYS}


def _records(dataset: str, losses: dict[str, float], seeds: int = 3) -> list[RunRecord]:
    rng = np.random.default_rng(0)
    records = []
    for loss, shift in losses.items():
        for seed in range(seeds):
            rules = {"argmax": _metrics(rng, shift), "median": _metrics(rng, shift)}
            spec = RunSpec(dataset, loss, seed)
            records.append(RunRecord(spec, Path("out") / spec.relative_dir, "done", rules, 1.5))
    return records


def _info(dataset: str, losses: list[str], num_classes: int = 5) -> DatasetInfo:
    return DatasetInfo(
        spec=dataset,
        num_classes=num_classes,
        kind="tabular",
        sizes=(630, 70, 300),
        options={"model": "mlp", "epochs": 3},
        seeds=(0, 1, 2),
        folds=None,
        losses=tuple(losses),
    )


def test_stat_matches_numpy() -> None:
    values = np.random.default_rng(1).normal(size=7)
    stat = Stat.of(values.tolist())
    assert stat.n == 7
    assert stat.mean == pytest.approx(np.mean(values))
    assert stat.std == pytest.approx(np.std(values, ddof=1))
    assert stat.format(2) == f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
    assert Stat.of([math.nan, 2.0]).n == 1


@pytest.mark.parametrize(
    ("metric", "candidate", "baseline", "outcome"),
    [
        ("mae", (1.0, 0.1), (1.5, 0.2), "beats"),  # 0.5 lower error > sd 0.2
        ("mae", (1.5, 0.1), (1.0, 0.2), "loses to"),
        ("mae", (1.1, 0.2), (1.0, 0.05), "ties with"),  # 0.1 worse < sd 0.2
        ("qwk", (0.7, 0.05), (0.5, 0.1), "beats"),  # higher is better for QWK
        ("accuracy", (0.5, 0.01), (0.6, 0.02), "loses to"),
    ],
)
def test_compare_to_baseline(
    metric: str, candidate: tuple[float, float], baseline: tuple[float, float], outcome: str
) -> None:
    result = compare_to_baseline(metric, Stat(*candidate, 3), Stat(*baseline, 3))
    assert result[0] == outcome
    assert result[2] == max(candidate[1], baseline[1])


def test_single_run_has_no_verdict() -> None:
    assert compare_to_baseline("mae", Stat(1.0, math.nan, 1), Stat(2.0, math.nan, 1))[0] == (
        "cannot be judged against"
    )


def test_per_class_mae_matches_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 200)
    p = np.clip(y + rng.integers(-2, 3, 200), 0, 4)
    got = per_class_mae(y, p, 5)
    for c in range(4):
        assert got[c] == pytest.approx(mean_absolute_error(y[y == c], p[y == c]))
    assert math.isnan(got[4])  # class 4 never occurs as a true class


def test_results_csv_rows_and_columns() -> None:
    records = _records("lev", {"ce": 0.0, "emd2": 0.1}, seeds=2)
    records.append(RunRecord(RunSpec("lev", "l2", 0), Path("x"), "failed", error="boom"))
    rows = result_rows(records)
    assert len(rows) == 2 * 2 * 2  # losses x seeds x rules; the failed run has no row
    parsed = list(csv.DictReader(io.StringIO(results_csv(rows))))
    assert tuple(parsed[0].keys()) == CSV_COLUMNS
    assert parsed[0]["rule"] == "argmax" and parsed[1]["rule"] == "median"
    assert parsed[0]["fold"] == ""
    assert float(parsed[0]["mae"]) == records[0].metrics["argmax"]["mae"]  # full precision


def test_aggregate_is_mean_and_std_over_seeds() -> None:
    records = _records("lev", {"ce": 0.0, "emd2": 0.1})
    stats = aggregate(result_rows(records))
    values = [r.metrics["argmax"]["qwk"] for r in records if r.spec.loss == "emd2"]
    stat = stats[("lev", "emd2", "argmax")]["qwk"]
    assert (stat.mean, stat.n) == (pytest.approx(np.mean(values)), 3)
    assert stat.std == pytest.approx(np.std(values, ddof=1))


def _table_rows(summary: str, dataset: str) -> dict[str, list[str]]:
    section = summary.split(f"## {dataset}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| loss"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows


def test_summary_means_bold_best_and_published_rows() -> None:
    records = _records("lev", {"ce": 0.0, "emd2": 0.3, "l2": 0.1})
    summary = render_summary(records, [_info("lev", ["ce", "emd2", "l2"])], output="out")
    rows = _table_rows(summary, "lev")
    stats = aggregate(result_rows(records))
    for loss in ("ce", "emd2", "l2"):
        mae = stats[("lev", loss, "argmax")]["mae"]
        assert re.sub(r"\*", "", rows[loss][3]) == f"{mae.mean:.3f} ± {mae.std:.3f}"
        assert rows[loss][0] == "3"
    # Bold goes to the lowest MAE and the highest accuracy among our losses.
    best_mae = min(("ce", "emd2", "l2"), key=lambda k: stats[("lev", k, "argmax")]["mae"].mean)
    best_acc = max(("ce", "emd2", "l2"), key=lambda k: stats[("lev", k, "argmax")]["accuracy"].mean)
    assert rows[best_mae][3].startswith("**")
    assert rows[best_acc][1].startswith("**")
    assert sum(cells[3].startswith("**") for cells in rows.values()) == 1
    # TOC-UCO's published LEV rows (reference.md section 4) with their protocol.
    assert rows["*TOC-UCO: OEAB*"][3] == "*0.421*" and rows["*TOC-UCO: OEAB*"][5] == "*0.685*"
    assert "30 stratified 70/30 hold-outs" in summary
    assert "they average 30 repetitions, we have 3 runs" in summary
    assert "**Verdict (lev):** the best EMD variant" in summary
    assert "Best prediction rule per metric" in summary


def test_verdict_names_the_outcome() -> None:
    # emd2 is 0.5 larger on every metric than ce (noise uniform 0.6 wide): the paired verdict
    # follows the paired t interval, recomputed here with SciPy.
    from scipy import stats as sps

    records = _records("era", {"ce": 0.0, "emd2": 0.5})
    summary = render_summary(records, [_info("era", ["ce", "emd2"], 9)], output="o")
    rows = result_rows(records)
    ce = [r["mae"] for r in rows if r["loss"] == "ce" and r["rule"] == "argmax"]
    emd = [r["mae"] for r in rows if r["loss"] == "emd2" and r["rule"] == "argmax"]
    p_value = sps.ttest_rel(emd, ce).pvalue
    outcome = (
        "ties with" if p_value >= 0.05 else ("beats" if np.mean(emd) < np.mean(ce) else "loses to")
    )
    assert f"emd2 {outcome} cross-entropy on MAE (paired difference emd2 - ce" in summary
    no_ce = render_summary(records[3:], [_info("era", ["emd2"], 9)], output="o")
    assert "none, cross-entropy (ce) was not among the finished losses" in no_ce


def test_esl_rows_are_flagged_as_a_different_protocol() -> None:
    records = _records("esl", {"ce": 0.0, "emd2": 0.1})
    summary = render_summary(records, [_info("esl", ["ce", "emd2"], 9)], output="o")
    assert "TOC-UCO uses 6 classes, ours 9: the numbers are not comparable" in summary
    assert "our best" not in summary.split("## esl", 1)[1]  # no ours-vs-published claim


def test_failed_runs_are_listed() -> None:
    records = _records("swd", {"ce": 0.0})
    records.append(RunRecord(RunSpec("swd", "emd2", 0), Path("r"), "failed", error="ValueError: x"))
    summary = render_summary(records, [_info("swd", ["ce", "emd2"], 4)], output="o")
    assert "Failed runs (1)" in summary and "swd/emd2/seed0: ValueError: x" in summary


def test_reference_rows_match_reference_md() -> None:
    medmnist = reference_tables("retinamnist")[0]
    acc = {row.method: row.metrics["accuracy"] for row in medmnist.rows}
    assert max(acc.values()) == 0.531 and acc["ResNet-18 (28)"] == 0.524 and len(acc) == 7
    era = {row.method: row.metrics for row in REFERENCE_TABLES["era"][0].rows}
    assert era["OEAB"] == {"mae": 1.238, "qwk": 0.557}
    assert era["MLP (CE)"] == {"mae": 1.969, "qwk": 0.381}
    assert REFERENCE_TABLES["swd"][0].rows[-1].metrics["mae"] == 0.455
    assert REFERENCE_TABLES["esl6"][0].num_classes == 6


def test_parsing_and_plan() -> None:
    assert parse_seeds("0,2") == [0, 2]
    for bad in ("0", "-1,2", "a", 0):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="folds"):
        plan_runs(["era"], ["ce"], [0], 1)
    assert len(plan_runs(["era", "lev"], ["ce", "emd2"], [0, 1, 2], None)) == 12


def test_metrics_json_shapes() -> None:
    m = dict.fromkeys(METRIC_KEYS, 0.25)
    assert extract_test_metrics({"test": m}) == {"argmax": m}
    partial = {k: v for k, v in m.items() if k != "amae"}
    assert extract_test_metrics({"test": {"argmax": partial}}) == {}


def test_threshold_peers_point_to_their_median_rule() -> None:
    records = _records("lev", {"ce": 0.0, "coral": 0.1}, seeds=1)
    summary = render_summary(records, [_info("lev", ["ce", "coral"])], output="o")
    assert "coral predict by thresholds: their own prediction is the median rule" in summary
    assert "we have 1 run;" in summary


def test_validated_rule_is_chosen_on_validation_not_test() -> None:
    rng = np.random.default_rng(1)
    good, bad = _metrics(rng, 0.0), _metrics(rng, 0.0)
    good["mae"], bad["mae"] = 0.2, 0.9
    # On validation "median" wins on MAE; on test "argmax" would: the test must not decide.
    content = {
        "monitor": "val_mae",
        "val": {"argmax": bad, "median": good},
        "test": {"argmax": good, "median": bad},
    }
    assert extract_test_metrics(content)["validated"] == extract_test_metrics(content)["median"]
    # A maximised monitor picks the largest validation value.
    content["monitor"] = "val_qwk"
    good["qwk"], bad["qwk"] = 0.1, 0.7
    assert extract_test_metrics(content)["validated"]["mae"] == good["mae"]
    # Records carrying the derived rule get a second verdict, labelled as such.
    records = _records("era", {"ce": 0.0, "emd2": 0.5})
    for record in records:
        record.metrics["validated"] = dict(record.metrics["median"])
    summary = render_summary(records, [_info("era", ["ce", "emd2"], 9)], output="o")
    assert (
        "**Verdict (era, each run decoded by the rule best on its validation split):**" in summary
    )
