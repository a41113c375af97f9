"""Column and split inspection (emdloss.data.inspection): the warnings a newcomer needs (issue 10)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

# SciPy is the oracle of the ranks (the train extra).
pytest.importorskip("scipy")

from emdloss.data import load_csv
from emdloss.data.inspection import (
    _spearman,
    inspect_columns,
    inspect_split,
    monotone_accuracy,
)


def _wine_like(path: Path, n: int = 200, seed: int = 0) -> Path:
    """The structure of the R `ordinal` package's wine data, synthesised: an ID, the score the
    rating is binned from (a leak), integer-coded judges, a constant column, real features."""
    rng = np.random.default_rng(seed)
    response = rng.normal(50, 15, n)
    rating = np.digitize(response, [35, 45, 55, 65]) + 1
    lines = ["rownames,response,rating,judge,site,temp,contact,noise"]
    for i in range(n):
        lines.append(
            f"{i + 1},{response[i]:.3f},{rating[i]},{rng.integers(1, 10)},A,"
            f"{rng.choice(['cold', 'warm'])},{rng.choice(['no', 'yes'])},{rng.normal():.4f}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_gets_all_four_column_warnings_by_name(tmp_path: Path) -> None:
    ds = load_csv(_wine_like(tmp_path / "wine.csv"), target="rating")
    report = ds.info["inspection"]
    by_kind: dict[str, list[str]] = {}
    for w in report["warnings"]:
        by_kind.setdefault(w["kind"], []).append(w["column"])
        assert w["column"] in w["message"]
    assert by_kind == {
        "id": ["rownames"],
        "leak": ["response"],
        "maybe_categorical": ["judge"],
        "constant": ["site"],
    }
    kinds = {c["name"]: c["kind"] for c in report["columns"]}
    assert kinds == {
        "rownames": "numeric",
        "response": "numeric",
        "rating": "target",
        "judge": "numeric",
        "site": "categorical",
        "temp": "categorical",
        "contact": "categorical",
        "noise": "numeric",
    }
    leak = next(w for w in report["warnings"] if w["kind"] == "leak")
    assert "ignore=response" in leak["message"]


def test_options_silence_the_warnings_and_columns_say_why(tmp_path: Path) -> None:
    path = _wine_like(tmp_path / "wine.csv")
    ds = load_csv(path, target="rating", ignore="rownames,response,site", categorical="judge")
    report = ds.info["inspection"]
    assert report["warnings"] == []
    why = {c["name"]: (c["kind"], c["reason"]) for c in report["columns"]}
    assert why["rownames"] == ("ignored", "ignore option")
    assert why["judge"] == ("categorical", "categorical option")
    assert why["temp"][0] == "categorical"
    assert why["temp"][1] in (
        "non-numeric values (e.g. 'cold')",
        "non-numeric values (e.g. 'warm')",
    )
    only = load_csv(path, target="rating", features="noise,temp").info["inspection"]
    assert {c["name"]: c["reason"] for c in only["columns"]}["judge"] == (
        "not listed in the features option"
    )


def test_a_coded_copy_of_the_target_is_a_leak_even_without_order() -> None:
    # Category codes that map one-to-one (in shuffled order) onto the classes: no monotone
    # relation, but a lookup table reproduces the target.
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 100)
    code = np.array(["q", "b", "z", "m"])[y]
    rows = [[c, f"{v:.3f}"] for c, v in zip(code, rng.normal(size=100), strict=True)]
    report = inspect_columns(
        ["code", "x", "y"], rows, y, target_column="y", numeric=["x"], categorical=["code"]
    )
    assert report.warned("leak") == ["code"]


def test_too_few_rows_judge_no_leak() -> None:
    y = np.arange(10) % 2
    rows = [[str(float(v))] for v in y]
    report = inspect_columns(["x", "y"], rows, y, target_column="y", numeric=["x"], categorical=[])
    assert report.warned("leak") == []


def _brute_force_monotone(x: np.ndarray, y: np.ndarray, k: int) -> float:
    values = np.unique(x)
    best = 0
    for assignment in itertools.combinations_with_replacement(range(k), values.size):
        mapping = dict(zip(values.tolist(), assignment, strict=True))
        best = max(best, sum(mapping[v] == t for v, t in zip(x.tolist(), y.tolist(), strict=True)))
    return best / x.size


@pytest.mark.parametrize("seed", range(8))
def test_monotone_accuracy_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(3, 12)), int(rng.integers(2, 4))
    x = rng.integers(0, 6, n).astype(float)  # ties included
    y = rng.integers(0, k, n)
    assert monotone_accuracy(x, y, k) == pytest.approx(_brute_force_monotone(x, y, k))


def _dynamic_programme_by_group(x: np.ndarray, y: np.ndarray, k: int) -> float:
    # The recursion of the docstring, one group at a time (the implementation before it was
    # vectorised over the groups).
    _, group = np.unique(x, return_inverse=True)
    counts = np.zeros((int(group.max()) + 1, k), dtype=np.int64)
    np.add.at(counts, (group, y), 1)
    best = np.zeros(k, dtype=np.int64)
    for row in counts:
        best = np.maximum.accumulate(best + row)
    return float(best[-1]) / x.size


@pytest.mark.parametrize("seed", range(6))
def test_monotone_accuracy_matches_the_recursion_group_by_group_on_large_columns(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    n, k = 3000, int(rng.integers(2, 11))
    x = rng.normal(size=n) if seed % 2 else rng.integers(0, 40, n).astype(float)
    y = np.clip((x > 0) * 2 + rng.integers(-1, 2, n), 0, k - 1)  # a relation, with noise
    assert monotone_accuracy(x, y, k) == _dynamic_programme_by_group(x, y, k)
    assert monotone_accuracy(x, k - 1 - y, k) == _dynamic_programme_by_group(x, k - 1 - y, k)


@pytest.mark.parametrize("seed", range(4))
def test_spearman_matches_scipy_with_ties(seed: int) -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 30, 500).astype(float) if seed % 2 else rng.normal(size=500)
    y = np.clip(np.round(x / 10 + rng.normal(size=500)), 0, 4).astype(np.int64)
    assert _spearman(x, y) == pytest.approx(float(spearmanr(x, y).statistic), abs=1e-12)
    assert _spearman(np.ones(5), np.arange(5)) == 0.0  # a constant side: 0, not NaN


def test_tiny_validation_split_warns_with_the_option(tmp_path: Path) -> None:
    # 72 rows with the default fractions: train/val/test about 45/5/22 (the case).
    rng = np.random.default_rng(0)
    lines = ["x,grade"] + [f"{rng.normal():.3f},{i % 3}" for i in range(72)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    ds = load_csv(tmp_path / "t.csv", target="grade")
    assert len(ds.val) < 30
    report = inspect_split(ds.train.targets, ds.val.targets, ds.test.targets, ds.class_names)
    assert report.warned("small_validation") == ["val"]
    assert "val_fraction" in report.warnings[0].message
    assert str(len(ds.val)) in report.warnings[0].message


def test_split_missing_a_class_is_named() -> None:
    report = inspect_split([0, 1, 2] * 20, [0, 1] * 20, [0, 1, 2] * 5, ["lo", "mid", "hi"])
    assert report.warned("missing_class") == ["val"]
    assert "'hi'" in report.warnings[0].message
    assert report.warned("small_validation") == []


def test_describe_dataset_lists_columns_classes_sizes_and_warnings(tmp_path: Path) -> None:
    from emdloss.data.inspection import describe_dataset, description_lines

    ds = load_csv(_wine_like(tmp_path / "wine.csv", n=72), target="rating", ignore="site")
    description = describe_dataset(ds)
    assert description["class_order"] == ["1", "2", "3", "4", "5"]
    for part in ("train", "val", "test"):
        assert sum(description["split_counts"][part].values()) == len(getattr(ds, part))
        assert description["split_counts"][part]["1"] == int((getattr(ds, part).targets == 0).sum())
    kinds = [w["kind"] for w in description["warnings"]]
    assert {"id", "leak", "maybe_categorical", "small_validation"} <= set(kinds)
    assert "constant" not in kinds  # site is ignored
    lines = description_lines(description)
    assert "ignored columns: site (ignore option)" in lines
    assert lines[0] == "classes in order: 1 < 2 < 3 < 4 < 5"
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert len(warnings) == len(description["warnings"])
    assert any("'rownames'" in line for line in warnings)
