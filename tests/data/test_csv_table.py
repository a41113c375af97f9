"""CSV tables: class order, binning, categorical features, missing values, bad input named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")  # oracle

from sklearn.preprocessing import OneHotEncoder, StandardScaler

from emdloss.data import bin_scores, load_dataset


def _write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        grade = ["low", "medium", "high"][i % 3]
        colour = ["red", "green", "blue", "teal"][i % 4]
        rows.append(f"{i},{rng.normal():.4f},{colour},{grade},{i % 3 + 1}")
    return _write(tmp_path / "t.csv", "id,x,colour,grade,level", rows)


def test_explicit_class_order_and_categorical_features(table: Path) -> None:
    ds = load_dataset(
        f"csv:{table}", target="grade", classes="low,medium,high", ignore="id,level", seed=1
    )
    assert ds.class_names == ["low", "medium", "high"] and ds.positions is None
    totals = np.sum([ds.class_counts(s) for s in ("train", "val", "test")], axis=0)
    assert totals.tolist() == [20, 20, 20]
    assert ds.info["numeric_columns"] == ["x"] and ds.info["categorical_columns"] == ["colour"]
    # Oracle: scikit-learn scaler and one-hot encoder fitted on the training rows.
    lines = np.array([int(i.split()[1]) for i in ds.train.ids])  # 1-based file lines
    raw = np.genfromtxt(table, delimiter=",", dtype=str, skip_header=1)
    scaler = StandardScaler().fit(raw[lines - 2, 1:2].astype(float))
    encoder = OneHotEncoder(handle_unknown="ignore").fit(raw[lines - 2, 2:3])
    for split in ("train", "test"):
        rows = np.array([int(i.split()[1]) for i in ds.split(split).ids]) - 2
        expected = np.hstack(
            [
                scaler.transform(raw[rows, 1:2].astype(float)),
                encoder.transform(raw[rows, 2:3]).toarray(),
            ]
        )
        assert np.allclose(ds.split(split).inputs.numpy(), expected, atol=1e-5)
    assert ds.feature_names == ["x", *(f"colour={c}" for c in encoder.categories_[0])]
    # Labels follow the declared order, row for row.
    names = np.array(ds.class_names)
    assert (
        names[ds.test.targets] == raw[np.array([int(i.split()[1]) for i in ds.test.ids]) - 2, 3]
    ).all()


def test_numeric_target_sorted_values(tmp_path: Path) -> None:
    rows = [f"{i},{[10, 2, 5][i % 3]}" for i in range(30)]
    path = _write(tmp_path / "n.csv", "x,y", rows)
    ds = load_dataset(f"csv:{path}", target="y")
    assert ds.class_names == ["2", "5", "10"] and ds.positions == [2.0, 5.0, 10.0]
    _x, y = ds.train[0]
    raw_y = [10, 2, 5][(int(ds.train.ids[0].split()[1]) - 2) % 3]
    assert ds.class_names[y] == str(raw_y)


def test_non_numeric_target_without_classes_asks_for_the_order(table: Path) -> None:
    with pytest.raises(ValueError, match=r"line 2: target 'low' .*classes="):
        load_dataset(f"csv:{table}", target="grade")


def test_binning_matches_numpy_histogram(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    scores = rng.uniform(0, 10, 80)
    path = _write(
        tmp_path / "s.csv", "x,score", [f"{i},{float(s)!r}" for i, s in enumerate(scores)]
    )
    ds = load_dataset(f"csv:{path}", target="score", bins=4)
    totals = np.sum([ds.class_counts(s) for s in ("train", "val", "test")], axis=0)
    counts, edges = np.histogram(scores, bins=4)
    assert totals.tolist() == counts.tolist()
    assert np.allclose(ds.positions, (edges[:-1] + edges[1:]) / 2)
    labels, names, _, _inner = bin_scores(scores, bin_edges=[2.5, 5.0])
    assert np.array_equal(labels, np.digitize(scores, [2.5, 5.0], right=False))
    assert names[1] == "[2.5, 5)"
    q_labels, *_ = bin_scores(scores, bins=4, binning="quantile")
    assert np.bincount(q_labels).tolist() == [20, 20, 20, 20]


def test_missing_values_error_drop_impute(tmp_path: Path) -> None:
    rows = [
        f"{i},{'' if i == 7 else i * 1.0},{['a', 'b'][i % 2] if i != 9 else 'NA'},{i % 2}"
        for i in range(40)
    ]
    path = _write(tmp_path / "m.csv", "id,x,c,y", rows)
    # Line 9 is data row 7 (header on line 1).
    with pytest.raises(ValueError, match=r"line 9: missing value in column 'x'"):
        load_dataset(f"csv:{path}", target="y")
    dropped = load_dataset(f"csv:{path}", target="y", missing="drop")
    assert dropped.info["dropped_missing_features"] == 2
    assert sum(len(dropped.split(s)) for s in ("train", "val", "test")) == 38
    imputed = load_dataset(f"csv:{path}", target="y", missing="impute", ignore="id")
    assert sum(len(imputed.split(s)) for s in ("train", "val", "test")) == 40
    all_ids = [i for s in ("train", "val", "test") for i in imputed.split(s).ids]
    where = {
        i: (s, k) for s in ("train", "val", "test") for k, i in enumerate(imputed.split(s).ids)
    }
    assert "line 9" in all_ids
    # The imputed x is the training median, which standardises to (median - mean) / std.
    train_lines = np.array([int(i.split()[1]) for i in imputed.train.ids])
    x_train = np.array([(line - 2) * 1.0 for line in train_lines])
    filled = np.where(train_lines == 9, np.median(x_train[train_lines != 9]), x_train)
    s, k = where["line 9"]
    expected = (np.median(x_train[train_lines != 9]) - filled.mean()) / filled.std()
    assert np.isclose(float(imputed.split(s).inputs[k, 0]), expected, atol=1e-5)
    s, k = where["line 11"]  # missing category: all-zero one-hot
    assert imputed.split(s).inputs[k, 1:].abs().sum() == 0


def test_bad_label_row_is_named(table: Path, tmp_path: Path) -> None:
    lines = table.read_text().splitlines()
    lines[5] = (
        lines[5]
        .replace(",low,", ",lowish,")
        .replace(",medium,", ",lowish,")
        .replace(",high,", ",lowish,")
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 6: label 'lowish' in column 'grade'"):
        load_dataset(f"csv:{bad}", target="grade", classes="low,medium,high")


def test_missing_column_lists_columns(table: Path) -> None:
    with pytest.raises(
        ValueError, match=r"target column 'grde' not found in .*t.csv; columns: \['id'"
    ):
        load_dataset(f"csv:{table}", target="grde")
    with pytest.raises(ValueError, match="target=COLUMN"):
        load_dataset(f"csv:{table}")


def test_empty_class_is_refused(table: Path) -> None:
    with pytest.raises(
        ValueError, match=r"class\(es\) \['extreme'\] of column 'grade' have no rows"
    ):
        load_dataset(f"csv:{table}", target="grade", classes="low,medium,high,extreme")
    with pytest.raises(ValueError, match="no rows"):
        load_dataset(f"csv:{table}", target="id", bin_edges="-5,-1")


def test_ragged_row_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", "x,y", ["1,0", "2,1", "3"])
    with pytest.raises(ValueError, match="line 4: 1 cells, expected 2"):
        load_dataset(f"csv:{path}", target="y")


def test_csv_kfold_and_determinism(table: Path) -> None:
    specs = {"target": "level", "ignore": "id,grade"}
    tested = []
    for fold in range(3):
        ds = load_dataset(f"csv:{table}", seed=3, fold=fold, num_folds=3, **specs)
        tested.extend(ds.test.ids)
        again = load_dataset(f"csv:{table}", seed=3, fold=fold, num_folds=3, **specs)
        assert again.test.ids == ds.test.ids
    assert sorted(tested) == sorted(f"line {n}" for n in range(2, 62))
