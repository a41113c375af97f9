"""One bad cell never silently changes a column; every outcome is a table or one line naming it.

Issue 8, finding 4: a single ``x``, ``inf``, ``1e309`` or NUL byte in a numeric column turned the
whole column into a one-hot categorical (input width 2 -> 39) without a word; values like 1e308
overflowed the standardisation into NaN features (and the error then blamed the learning rate);
a Latin-1 file's error did not name the file.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emdloss.data import load_csv
from emdloss.data._table import encode_table
from emdloss.data.splits import Split
from emdloss.errors import UserError

BAD_CELLS = ["x", "inf", "-inf", "Infinity", "1e309", "-1e400", "\x00", "1\x002", "3,5", "1.2.3"]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _table(tmp_path: Path, bad: str | None = None, at: int = 17) -> Path:
    """40 rows: a numeric feature ``x`` (one cell replaced by ``bad``), ``z``, a 3-class target."""
    rows = [[f"{0.5 * i:g}", f"{(7 * i) % 11}", str(i % 3)] for i in range(40)]
    if bad is not None:
        rows[at][0] = bad
    return _write(tmp_path / "t.csv", ["x", "z", "grade"], rows)


@pytest.mark.parametrize("bad", BAD_CELLS)
def test_a_bad_cell_is_named_with_the_fixes(tmp_path: Path, bad: str) -> None:
    path = _table(tmp_path, bad)
    with pytest.raises(UserError) as caught:
        load_csv(path, target="grade")
    message = str(caught.value)
    assert "\n" not in message
    # Data row 18 is line 19 of the file (the header is line 1).
    assert f"{path}, line 19 (data row 18), column 'x': {bad!r}" in message
    assert "categorical=x" in message and "invalid=missing" in message


def test_the_options_named_in_the_message_work(tmp_path: Path) -> None:
    path = _table(tmp_path, "x")
    width = load_csv(_table(tmp_path / "..", None), target="grade").input_shape
    assert width == (2,)
    declared = load_csv(path, target="grade", categorical="x")
    assert declared.info["categorical_columns"] == ["x"]  # 39 one-hot columns, asked for
    imputed = load_csv(path, target="grade", invalid="missing", missing="impute")
    assert imputed.input_shape == (2,) and imputed.info["numeric_columns"] == ["x", "z"]
    dropped = load_csv(path, target="grade", invalid="missing", missing="drop")
    assert dropped.info["dropped_missing_features"] == 1
    assert "line 19" not in [i for part in ("train", "val", "test") for i in dropped.ids(part)]
    with pytest.raises(UserError, match=r"line 19.*missing value in column 'x'"):
        load_csv(path, target="grade", invalid="missing")  # missing="error" still guards
    with pytest.raises(UserError, match="invalid must be one of"):
        load_csv(path, target="grade", invalid="ignore")


def test_a_text_column_with_a_stray_number_is_named_too(tmp_path: Path) -> None:
    rows = [[c, str(i), str(i % 2)] for i, c in enumerate(["red", "blue", "green"] * 10)]
    rows[4][0] = "5"
    path = _write(tmp_path / "c.csv", ["colour", "x", "y"], rows)
    with pytest.raises(UserError, match=r"'red' is not a number, .* line 6 .* the number '5'"):
        load_csv(path, target="y")
    rows[4][0] = "red"
    text = load_csv(_write(tmp_path / "c.csv", ["colour", "x", "y"], rows), target="y")
    assert text.info["categorical_columns"] == ["colour"]  # text only: categorical, as before


def test_huge_values_standardise_to_finite_features(tmp_path: Path) -> None:
    rows = [
        [f"{(i % 9) * 1e307:g}", f"{-(i % 5) * (1.7e308 / 4):g}", str(i % 3)] for i in range(40)
    ]
    ds = load_csv(_write(tmp_path / "h.csv", ["big", "neg", "y"], rows), target="y")
    for part in ("train", "val", "test"):
        inputs = ds.split(part).inputs
        assert bool(np.isfinite(inputs.numpy()).all())
    # Oracle: the same table divided by 1e307 standardises to the same values.
    small = [[f"{i % 9}", f"{-(i % 5) * 17 / 4:g}", str(i % 3)] for i in range(40)]
    reference = load_csv(_write(tmp_path / "s.csv", ["big", "neg", "y"], small), target="y")
    np.testing.assert_allclose(
        ds.split("train").inputs, reference.split("train").inputs, rtol=1e-6, atol=1e-6
    )


def _split(n_train: int, n: int) -> Split:
    index = np.arange(n)
    return Split(index[:n_train], index[n_train:n_train], index[n_train:], "test")


def test_standardisation_is_bit_identical_to_the_plain_formula() -> None:
    rng = np.random.default_rng(0)
    for magnitude in (1e-30, 1e-3, 1.0, 7.5, 1e5, 1e100):
        x = rng.normal(3.0, 2.0, size=(50, 3)) * magnitude
        x[:, 2] = 4.0 * magnitude  # a constant column
        split = _split(35, 50)
        table = encode_table(x, ["a", "b", "c"], [], [], split)
        mean = x[:35].mean(axis=0)
        scale = x[:35].std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        plain = ((x - mean) / scale).astype(np.float32)
        assert np.array_equal(table.inputs["train"].numpy(), plain[:35])
        assert np.array_equal(table.inputs["test"].numpy(), plain[35:])
        assert np.array_equal(table.mean, mean) and np.array_equal(table.scale, scale)


def test_a_value_beyond_float32_after_standardising_is_named() -> None:
    x = np.arange(12, dtype=np.float64).reshape(12, 1)
    x[11, 0] = 1e300  # a test row, far outside the training rows' 0..9
    names = [f"f.csv, line {i + 2}" for i in range(12)]
    with pytest.raises(UserError, match=r"f.csv, line 13, column 'a': value 1e\+300 lies too far"):
        encode_table(x, ["a"], [], [], _split(10, 12), row_names=names)


def test_encoding_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    rows = "".join(f"{i},{'café' if i % 2 else 'thé'},{i % 2}\n" for i in range(30))
    path.write_bytes(("x,drink,y\n" + rows).encode("latin-1"))
    with pytest.raises(UserError, match=f"{path} is not utf-8-sig text.*encoding=latin-1"):
        load_csv(path, target="y")
    assert load_csv(path, target="y", encoding="latin-1").info["categorical_columns"] == ["drink"]
    with pytest.raises(UserError, match="encoding 'klingon': not a text encoding"):
        load_csv(path, target="y", encoding="klingon")


# ------------------------------------------------------------------------ property-based fuzz
GOOD_EXTREMES = ["1e308", "-1.7e308", "4.9e-324", "0", "-0.0", "1E5", " 12 "]


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[list[str]], list[tuple[int, int, str]]]:
    n_rows = draw(st.integers(30, 45))
    n_features = draw(st.integers(1, 3))
    values = st.one_of(
        st.integers(-1000, 1000).map(str),
        st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    )
    rows = [[draw(values) for _ in range(n_features)] + [str(r % 3)] for r in range(n_rows)]
    injections = draw(
        st.lists(
            st.tuples(
                st.integers(0, n_rows - 1),
                st.integers(0, n_features - 1),
                st.sampled_from(BAD_CELLS + GOOD_EXTREMES),
            ),
            max_size=3,
            unique_by=lambda t: (t[0], t[1]),
        )
    )
    for row, col, value in injections:
        rows[row][col] = value
    return rows, injections


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tables())
def test_fuzz_every_outcome_is_a_correct_table_or_one_line_naming_a_cell(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[list[list[str]], list[tuple[int, int, str]]],
) -> None:
    rows, injections = case
    header = [f"f{j}" for j in range(len(rows[0]) - 1)] + ["y"]
    path = _write(tmp_path_factory.mktemp("fuzz") / "t.csv", header, rows)
    bad = [(r, c, v) for r, c, v in injections if v in BAD_CELLS]
    try:
        ds = load_csv(path, target="y")
    except UserError as error:
        message = str(error)
        assert "\n" not in message
        named = [
            (r, c, v)
            for r, c, v in injections
            # "line 2" must not match "line 20": the number ends where the word does
            if re.search(rf"\bline {r + 2}\b", message) and f"column {header[c]!r}" in message
        ]
        assert named, message
        v = named[0][2]
        if v in BAD_CELLS:
            assert repr(v) in message
        else:  # a huge value outside the training range: refused by name, never NaN
            assert "too far outside the range" in message
        return
    assert not bad, f"accepted {bad}"
    # A correct table: every feature numeric, width unchanged, no row lost, features finite.
    assert ds.info["numeric_columns"] == header[:-1]
    assert ds.input_shape == (len(header) - 1,)
    assert sum(len(ds.split(p)) for p in ("train", "val", "test")) == len(rows)
    train = ds.split("train").inputs.numpy()
    assert np.isfinite(train).all()
    for part in ("val", "test"):
        assert np.isfinite(ds.split(part).inputs.numpy()).all()
    # Standardised with training statistics: mean 0, and std 1 unless the column is constant.
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-4)
    std = train.std(axis=0)
    assert np.all((np.abs(std - 1.0) < 1e-3) | (std == 0.0))
