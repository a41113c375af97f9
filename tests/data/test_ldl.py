"""Distribution targets in the data layer: ``ldl:`` .mat files, vote/proportion columns of
``csv:`` and ``images:`` files, the official split column, and every bad input as one line."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightning")  # emdloss.data: the train extra
pytest.importorskip("scipy")  # writes the .mat files

import scipy.io

from emdloss.data import load_dataset
from emdloss.data.distributions import (
    distribution_columns,
    distribution_summary,
    level_names,
    median_class,
    read_distribution,
)
from emdloss.errors import InputWarning, UserError

DATA = Path(os.environ.get("EMDLOSS_DATA", Path(__file__).resolve().parents[3] / "shared/data"))


def _mat(tmp_path: Path, n: int = 60, c: int = 4, *, labels=None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path = tmp_path / "toy.mat"
    scipy.io.savemat(
        path,
        {
            "features": rng.normal(size=(n, 3)),
            "labels": rng.dirichlet(np.ones(c), size=n) if labels is None else labels,
        },
    )
    return path


def _vote_csv(tmp_path: Path, rows: list[str], header: str = "x,split,votes_1,votes_2,votes_3"):
    path = tmp_path / "votes.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _good_rows(n: int = 30) -> list[str]:
    rng = np.random.default_rng(1)
    parts = ["train"] * (n - 10) + ["val"] * 5 + ["test"] * 5
    out = []
    for i in range(n):
        votes = rng.multinomial(rng.integers(3, 9), [0.2, 0.5, 0.3])
        out.append(f"{rng.normal():.4f},{parts[i]},{votes[0]},{votes[1]},{votes[2]}")
    return out


# ------------------------------------------------------------------------------ ldl:
def test_ldl_mat_loads_features_distributions_and_seeded_splits(tmp_path):
    path = _mat(tmp_path)
    raw = scipy.io.loadmat(path)["labels"]
    ds = load_dataset(f"ldl:{path}", seed=3)
    assert ds.target_kind == "distribution" and ds.distribution_targets
    assert ds.class_names == ["1", "2", "3", "4"] and ds.input_shape == (3,)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 60
    # Every item's target is its row of the file, in the order of the ids.
    for part in (ds.train, ds.val, ds.test):
        rows = [int(i.split()[1]) for i in part.ids]
        np.testing.assert_allclose(part.dists.numpy(), raw[rows], rtol=1e-6)
        assert (part.targets == median_class(raw[rows])).all()
        assert part.votes is None  # proportions: no counts
    again = load_dataset(f"ldl:{path}", seed=3)
    assert again.test.ids == ds.test.ids
    assert load_dataset(f"ldl:{path}", seed=4).test.ids != ds.test.ids


@pytest.mark.parametrize("value", [False, "false", "no", "0"])
def test_ldl_standardize_false_keeps_the_features_of_the_file(tmp_path, value):
    path = _mat(tmp_path)
    raw = scipy.io.loadmat(path)["features"]
    ds = load_dataset(f"ldl:{path}", seed=3, standardize=value)
    for part in (ds.train, ds.val, ds.test):
        rows = [int(i.split()[1]) for i in part.ids]
        np.testing.assert_array_equal(part.inputs.numpy(), raw[rows].astype(np.float32))
    scaled = load_dataset(f"ldl:{path}", seed=3).train.inputs.numpy()
    np.testing.assert_allclose(scaled.mean(0), 0.0, atol=1e-6)


def test_ldl_bad_standardize_value_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"option standardize='maybe': expected true or false"):
        load_dataset(f"ldl:{_mat(tmp_path)}", standardize="maybe")


def test_ldl_folds_partition_the_items(tmp_path):
    path = _mat(tmp_path)
    tests = [
        set(load_dataset(f"ldl:{path}", seed=0, fold=k, num_folds=5).test.ids) for k in range(5)
    ]
    assert sum(len(t) for t in tests) == 60 and len(set().union(*tests)) == 60


def test_ldl_integral_labels_are_vote_counts(tmp_path):
    rng = np.random.default_rng(2)
    counts = rng.multinomial(20, [0.1, 0.3, 0.4, 0.2], size=40).astype(float)
    ds = load_dataset(f"ldl:{_mat(tmp_path, 40, labels=counts)}", seed=0)
    rows = [int(i.split()[1]) for i in ds.train.ids]
    np.testing.assert_allclose(ds.train.votes.numpy(), counts[rows].sum(1))
    np.testing.assert_allclose(ds.train.dists.numpy(), counts[rows] / 20.0, rtol=1e-6)


def test_ldl_percentages_are_normalised_with_one_warning(tmp_path):
    labels = np.random.default_rng(0).dirichlet(np.ones(4), size=30) * 100
    with pytest.warns(InputWarning) as caught:
        ds = load_dataset(f"ldl:{_mat(tmp_path, 30, labels=labels)}", seed=0)
    messages = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert len(messages) == 1 and "do not sum to 1" in messages[0] and "30 of 30" in messages[0]
    np.testing.assert_allclose(ds.train.dists.sum(1).numpy(), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [(np.nan, "not a finite number"), (np.inf, "not a finite number"), (-0.1, "is negative")],
)
def test_ldl_bad_label_cell_names_row_and_level(tmp_path, cell, expected):
    labels = np.random.default_rng(0).dirichlet(np.ones(4), size=20)
    labels[7, 2] = cell
    with pytest.raises(UserError, match=expected) as info:
        load_dataset(f"ldl:{_mat(tmp_path, 20, labels=labels)}")
    message = str(info.value)
    assert "\n" not in message and "row 7" in message and "level 3" in message


def test_ldl_row_without_votes_is_refused(tmp_path):
    labels = np.random.default_rng(0).dirichlet(np.ones(4), size=20)
    labels[4] = 0.0
    with pytest.raises(UserError, match=r"row 4.*no votes"):
        load_dataset(f"ldl:{_mat(tmp_path, 20, labels=labels)}")


def test_ldl_file_without_the_variables_is_refused(tmp_path):
    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, {"X": np.zeros((3, 2))})
    with pytest.raises(
        UserError, match=r"no variable\(s\) \['features', 'labels'\].*found \['X'\]"
    ):
        load_dataset(f"ldl:{path}")
    text = tmp_path / "text.mat"
    text.write_text("not a mat file")
    with pytest.raises(UserError, match="cannot read"):
        load_dataset(f"ldl:{text}")


@pytest.mark.skipif(not (DATA / "ldl/Movie.mat").is_file(), reason="Movie.mat not present")
def test_movie_loads_as_geng_describes_it():
    ds = load_dataset(f"ldl:{DATA / 'ldl/Movie.mat'}", seed=0, fold=0, num_folds=10)
    assert ds.num_classes == 5 and ds.input_shape == (1869,)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 7755
    assert 770 <= len(ds.test) <= 780


# ------------------------------------------------------------------------------ csv:
def test_csv_vote_prefix_official_split_and_counts(tmp_path):
    path = _vote_csv(tmp_path, _good_rows())
    ds = load_dataset(f"csv:{path}", count_columns="votes_")
    assert ds.class_names == ["1", "2", "3"] and ds.positions == [1.0, 2.0, 3.0]
    assert ds.feature_names == ["x"]  # neither the votes nor the split column
    assert (len(ds.train), len(ds.val), len(ds.test)) == (20, 5, 5)
    assert "official split" in ds.protocol
    cells = [r.split(",") for r in _good_rows()]
    first = [float(v) for v in cells[0][2:]]
    np.testing.assert_allclose(ds.train.dists[0].numpy(), np.array(first) / sum(first))
    assert float(ds.train.votes[0]) == sum(first)


def test_csv_standardize_false_keeps_the_column(tmp_path):
    path = _vote_csv(tmp_path, _good_rows())
    ds = load_dataset(f"csv:{path}", count_columns="votes_", standardize="false")
    column = [float(r.split(",")[0]) for r in _good_rows()]
    rows = [int(i.split()[1]) - 2 for i in ds.train.ids]  # "line N", the header is line 1
    np.testing.assert_array_equal(
        ds.train.inputs[:, 0].numpy(), np.float32([column[r] for r in rows])
    )


def test_csv_vote_list_equals_prefix(tmp_path):
    path = _vote_csv(tmp_path, _good_rows())
    a = load_dataset(f"csv:{path}", count_columns="votes_")
    b = load_dataset(f"csv:{path}", count_columns="votes_1,votes_2,votes_3")
    assert np.array_equal(a.test.dists.numpy(), b.test.dists.numpy())


def test_csv_empty_split_rows_are_dropped_with_one_warning(tmp_path):
    rows = _good_rows()
    rows[0] = rows[0].replace(",train,", ",,")
    rows[1] = rows[1].replace(",train,", ",,")
    with pytest.warns(InputWarning, match="2 row") as caught:
        ds = load_dataset(f"csv:{_vote_csv(tmp_path, rows)}", count_columns="votes_")
    assert sum(issubclass(w.category, InputWarning) for w in caught) == 1
    assert len(ds.train) == 18


def test_csv_split_column_none_draws_seeded_splits(tmp_path):
    ds = load_dataset(
        f"csv:{_vote_csv(tmp_path, _good_rows())}",
        count_columns="votes_",
        split_column="none",
        categorical="split",
        seed=0,
    )
    assert "hold-out" in ds.protocol


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("-1", "is negative"), ("inf", "not a finite number"), ("x", "not a finite number")],
)
def test_csv_bad_vote_cell_names_line_and_column(tmp_path, cell, expected):
    rows = _good_rows()
    parts = rows[4].split(",")
    parts[3] = cell
    rows[4] = ",".join(parts)
    with pytest.raises(UserError, match=expected) as info:
        load_dataset(f"csv:{_vote_csv(tmp_path, rows)}", count_columns="votes_")
    assert "line 6" in str(info.value) and "'votes_2'" in str(info.value)
    assert "\n" not in str(info.value)


def test_csv_row_without_votes_names_the_line(tmp_path):
    rows = _good_rows()
    rows[2] = "0.1,train,0,0,0"
    with pytest.raises(UserError, match=r"line 4.*no votes"):
        load_dataset(f"csv:{_vote_csv(tmp_path, rows)}", count_columns="votes_")


def test_csv_placeholder_proportions_are_normalised_once(tmp_path):
    rows = [
        f"{i / 10},{p},0.2,0.5,0.300001"
        for i, p in enumerate(["train"] * 20 + ["val"] * 5 + ["test"] * 5)
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(f"csv:{_vote_csv(tmp_path, rows)}", count_columns="votes_")
    found = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert len(found) == 1 and "30 of 30 rows" in found[0] and "1e-06 off" in found[0]
    assert ds.train.votes is None
    np.testing.assert_allclose(ds.train.dists.sum(1).numpy(), 1.0, rtol=1e-6)


def test_csv_bad_split_value_and_folds_with_official_split(tmp_path):
    rows = _good_rows()
    rows[3] = rows[3].replace(",train,", ",training,")
    with pytest.raises(UserError, match=r"line 5, column 'split': 'training' is not a split"):
        load_dataset(f"csv:{_vote_csv(tmp_path, rows)}", count_columns="votes_")
    with pytest.raises(UserError, match="folds do not apply"):
        load_dataset(
            f"csv:{_vote_csv(tmp_path, _good_rows())}", count_columns="votes_", fold=0, num_folds=5
        )


def test_csv_target_and_count_columns_together_are_refused(tmp_path):
    with pytest.raises(UserError, match="not both"):
        load_dataset(f"csv:{_vote_csv(tmp_path, _good_rows())}", target="x", count_columns="votes_")
    with pytest.raises(UserError, match="neither a column nor the prefix"):
        load_dataset(f"csv:{_vote_csv(tmp_path, _good_rows())}", count_columns="score_")


def _rows_with(cells: list[list[str]]) -> list[str]:
    parts = ["train"] * (len(cells) - 10) + ["val"] * 5 + ["test"] * 5
    return [
        f"{i / 10},{part}," + ",".join(c)
        for i, (part, c) in enumerate(zip(parts, cells, strict=True))
    ]


def test_csv_prefix_beside_an_unnumbered_column_is_refused_and_ignore_leaves_it_out(tmp_path):
    # Found by the loader audit: votes_total used to become a fourth level "total".
    header = "x,split,votes_1,votes_2,votes_3,votes_total"
    rows = [r + f",{sum(int(v) for v in r.split(',')[2:])}" for r in _good_rows()]
    path = _vote_csv(tmp_path, rows, header=header)
    with pytest.raises(UserError, match=r"matches \['votes_total'\].*ignore=votes_total"):
        load_dataset(f"csv:{path}", count_columns="votes_")
    ds = load_dataset(f"csv:{path}", count_columns="votes_", ignore="votes_total")
    assert ds.class_names == ["1", "2", "3"] and ds.feature_names == ["x"]
    assert float(ds.train.votes[0]) == sum(float(v) for v in _good_rows()[0].split(",")[2:])


@pytest.mark.parametrize(
    ("suffixes", "names"),
    [
        (["0.25", "0.5", "0.75"], ["0.25", "0.5", "0.75"]),
        (["0.1", "0.2", "0.3"], ["0.1", "0.2", "0.3"]),  # used to become 1, 2, 3
        (["-1", "1", "0"], ["-1", "0", "1"]),  # negative numbers sorted as numbers
    ],
)
def test_csv_decimal_and_negative_levels_keep_their_numbers(tmp_path, suffixes, names):
    header = "x,split," + ",".join(f"s_{v}" for v in suffixes)
    ds = load_dataset(f"csv:{_vote_csv(tmp_path, _good_rows(), header=header)}", count_columns="s_")
    assert ds.class_names == names
    assert ds.positions == [float(v) for v in names]
    # The level order follows the numbers: the file's first column is level suffixes[0].
    first = [float(v) for v in _good_rows()[0].split(",")[2:]]
    by_level = dict(zip(suffixes, first, strict=True))
    expected = np.array([by_level[n] for n in names]) / sum(first)
    rows = [int(i.split()[1]) - 2 for i in ds.train.ids]
    np.testing.assert_allclose(ds.train.dists[rows.index(0)].numpy(), expected, rtol=1e-6)


def test_csv_numbered_levels_out_of_order_are_refused(tmp_path):
    path = _vote_csv(tmp_path, _good_rows())
    with pytest.raises(UserError, match=r"levels \['1', '3', '2'\] are numbers out of increasing"):
        load_dataset(f"csv:{path}", count_columns="votes_1,votes_3,votes_2")
    header = "x,split,v_1,v_01,v_2"
    with pytest.raises(UserError, match="'v_01' and 'v_1' both name level 1"):
        load_dataset(f"csv:{_vote_csv(tmp_path, _good_rows(), header=header)}", count_columns="v_")


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("abc", "'abc' is not a finite number"),
        ("1e309", "'1e309' is not a finite number"),  # used to be shown as nan
        ("", "missing target value in column 'votes_2'"),
    ],
)
def test_csv_bad_vote_cell_is_named_as_written(tmp_path, cell, shown):
    rows = _good_rows()
    parts = rows[4].split(",")
    parts[3] = cell
    rows[4] = ",".join(parts)
    with pytest.raises(UserError) as info:
        load_dataset(f"csv:{_vote_csv(tmp_path, rows)}", count_columns="votes_")
    message = str(info.value)
    assert "line 6" in message and "'votes_2'" in message and shown in message


def test_csv_missing_vote_cell_drops_the_row_under_missing_drop(tmp_path):
    rows = _good_rows()
    parts = rows[2].split(",")
    parts[2] = "NA"
    rows[2] = ",".join(parts)
    ds = load_dataset(f"csv:{_vote_csv(tmp_path, rows)}", count_columns="votes_", missing="drop")
    assert len(ds.train) == 19 and "line 4" not in ds.train.ids


def test_integer_percentages_are_proportions_with_a_warning(tmp_path):
    cells = [["50", "30", "20"], ["33", "33", "34"], ["0", "100", "0"]] * 10
    with pytest.warns(InputWarning, match="read as percentages, not votes"):
        ds = load_dataset(f"csv:{_vote_csv(tmp_path, _rows_with(cells))}", count_columns="votes_")
    assert ds.train.votes is None  # no false noise floor from 100 "votes" per item
    # Counts from a panel of about 100 raters that never sums to exactly 100 stay counts.
    t = read_distribution([[60, 39], [50, 49]], rows=["a", "b"], columns=["p", "q"], source="f")
    assert t.counts is not None and t.counts.tolist() == [99.0, 99.0]


def test_one_fractional_count_is_named_in_the_warning(tmp_path):
    cells = [[str(a), str(b), str(c)] for a, b, c in [(1, 2, 3), (2, 2, 1), (0, 4, 1)] * 10]
    cells[7][0] = "2.5"
    with pytest.warns(
        InputWarning, match=r"line 9, column 'votes_1' holds 2.5, not a whole number"
    ):
        ds = load_dataset(f"csv:{_vote_csv(tmp_path, _rows_with(cells))}", count_columns="votes_")
    assert ds.train.votes is None


def test_counts_that_overflow_are_refused():
    with pytest.raises(UserError, match=r"^b, columns.*sum past the largest float"):
        read_distribution([[1, 2], [1e308, 1e308]], rows=["a", "b"], columns=["p", "q"], source="f")


def test_float32_proportions_are_taken_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.dirichlet(np.ones(4), size=60).astype(np.float32)
    assert np.abs(labels.astype(np.float64).sum(1) - 1).max() > 1e-9  # off at float32 precision
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        ds = load_dataset(f"ldl:{_mat(tmp_path, labels=labels)}", seed=0)
    np.testing.assert_allclose(ds.train.dists.sum(1).numpy(), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (np.array([["a", "b"]] * 60), "'labels' holds MATLAB type"),
        (np.ones((60, 3)) * (1 + 1j), "'labels' holds complex numbers"),
    ],
)
def test_ldl_labels_that_are_not_real_numbers_are_refused(tmp_path, labels, expected):
    with pytest.raises(UserError, match=expected):
        load_dataset(f"ldl:{_mat(tmp_path, labels=labels)}")


def test_ldl_numbered_classes_out_of_order_are_refused(tmp_path):
    with pytest.raises(UserError, match="out of increasing order"):
        load_dataset(f"ldl:{_mat(tmp_path)}", classes="1,3,2,4")


# ------------------------------------------------------------------------------ images:
def _image_vote_csv(tmp_path: Path, score: bool = False) -> Path:
    """An image CSV of _good_rows' votes (and a score column when asked), 6 x 6 images."""
    import PIL.Image

    rows = []
    for i, line in enumerate(_good_rows()):
        PIL.Image.new("RGB", (6, 6), (i * 8, 0, 0)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png," + (f"{i % 7}," if score else "") + line.split(",", 1)[1])
    header = "image," + ("score," if score else "") + "split,votes_1,votes_2,votes_3"
    return _vote_csv(tmp_path, rows, header=header)


def test_image_csv_vote_prefix_and_official_split(tmp_path):
    path = _image_vote_csv(tmp_path)
    ds = load_dataset(f"images:{path}", count_columns="votes_", path_column="image", image_size=6)
    assert ds.distribution_targets and ds.class_names == ["1", "2", "3"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (20, 5, 5)
    x, _, dist = ds.test[0]
    assert tuple(x.shape) == (3, 6, 6) and abs(float(dist.sum()) - 1) < 1e-6
    assert ds.test.votes is not None


def test_image_csv_counts_ignore_a_score_column_and_refuse_bins(tmp_path):
    # Found by the loader audit: a score column used to name and place the vote levels.
    path = _image_vote_csv(tmp_path, score=True)
    ds = load_dataset(f"images:{path}", count_columns="votes_", path_column="image", image_size=6)
    assert ds.class_names == ["1", "2", "3"] and ds.positions == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="bins and bin_edges do not apply"):
        load_dataset(
            f"images:{path}", count_columns="votes_", path_column="image", image_size=6, bins=3
        )
    named = load_dataset(
        f"images:{path}",
        count_columns="votes_",
        path_column="image",
        image_size=6,
        classes="low,mid,high",
    )
    assert named.class_names == ["low", "mid", "high"] and named.positions == [1.0, 2.0, 3.0]


# ------------------------------------------------------------------------------ helpers
def test_helpers_against_hand_values():
    assert distribution_columns("v*", ["v2", "v1", "w"], source="f") == ["v1", "v2"]
    assert level_names(["votes_1", "votes_10"]) == ["1", "10"]
    assert median_class(np.array([[0.5, 0.5, 0.0], [0.1, 0.3, 0.6]])).tolist() == [0, 2]
    s = distribution_summary(np.array([[0.25, 0.25, 0.25, 0.25]]), None, list("abcd"))
    assert s["mean_votes"] is None and s["mean_entropy"] == pytest.approx(np.log(4))
    t = read_distribution([[0, 1], [1, 0]], rows=["a", "b"], columns=["p", "q"], source="f")
    assert t.counts is None  # one-hot rows summing to 1 are proportions, not one vote


@pytest.mark.skipif(not (DATA / "mebeauty/facenet512.csv").is_file(), reason="MEBeauty not present")
def test_mebeauty_facenet_official_split():
    with pytest.warns(InputWarning, match="11 row"):
        ds = load_dataset(
            f"csv:{DATA / 'mebeauty/facenet512.csv'}", count_columns="votes_", ignore="image"
        )
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1655, 213, 506)
    assert ds.input_shape == (512,) and ds.num_classes == 10
    assert 20 < float(ds.train.votes.mean()) < 30


def test_csv_classes_name_the_vote_levels(tmp_path):
    path = _vote_csv(tmp_path, _good_rows())
    ds = load_dataset(f"csv:{path}", count_columns="votes_", classes="lo,mid,hi")
    assert ds.class_names == ["lo", "mid", "hi"] and ds.positions == [1.0, 2.0, 3.0]
    with pytest.raises(UserError, match=r"classes names 2 levels for 3 count columns"):
        load_dataset(f"csv:{path}", count_columns="votes_", classes="lo,hi")


def test_ldl_v73_file_says_how_to_resave_it(tmp_path):
    # A v7.3 MAT file is HDF5 behind a 128-byte MATLAB header whose version is 0x0200.
    header = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Sun Dec  6 2026 HDF5 schema 1.00 ."
    )
    path = tmp_path / "v73.mat"
    path.write_bytes(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM" + b"\x00" * 512)
    with pytest.raises(UserError, match=r"v7\.3 \(HDF5\) file.*'-v7'"):
        load_dataset(f"ldl:{path}")
