"""The CSV reader of training and predict: cost linear in the file, a line or a row past a stated
limit refused by name before it is held in memory.

Issue 21, items 7 and 8: a 1 GB line of 512 M cells ended in a MemoryError at 5 GB resident
(train and predict); a 100,000-column CSV (12 MB) kept ``train`` for minutes in a quadratic
duplicate-name check. The limits are module constants; the tests lower them.

Named for emdloss.data._csv_cells (read_csv_rows); also covers emdloss.data.conform.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from emdloss.data import _csv_cells
from emdloss.data._csv_cells import read_csv_rows
from emdloss.data.conform import conform_table
from emdloss.errors import UserError


@pytest.fixture
def within_30_seconds() -> Iterator[None]:
    """A hang guard (not a speed target): the quadratic check took minutes here; linear, well
    under a second."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError("reading the CSV took over 30 s: not linear in its size")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_line_past_the_limit_is_refused_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_csv_cells, "MAX_LINE_CHARS", 1000)
    path = tmp_path / "long.csv"
    path.write_text("a,b\n1,2\n" + "3," * 2000 + "4\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"long\.csv, line 3: longer than 1000 characters"):
        read_csv_rows(path)


def test_a_row_past_the_cell_limit_is_refused_before_it_is_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_csv_cells, "MAX_CELLS", 100)
    path = tmp_path / "wide.csv"
    path.write_text("a,b\n" + ",".join(["1"] * 150) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"wide\.csv, line 2: more than 100 cells"):
        read_csv_rows(path)
    # Within the limits the same reader reads.
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    assert read_csv_rows(path) == (["a", "b"], [["1", "2"]], [2])


def test_a_quoted_record_spanning_lines_is_counted_as_one_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_csv_cells, "MAX_CELLS", 10)
    path = tmp_path / "q.csv"
    cells = ",".join(['"x\n"'] * 12)  # each physical line under the limit, the record over it
    path.write_text(",".join(f"c{i}" for i in range(12)) + "\n" + cells + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="more than"):
        read_csv_rows(path)


def test_the_default_limits_are_stated(tmp_path: Path) -> None:
    assert _csv_cells.MAX_LINE_CHARS == 64 * 1024 * 1024
    assert _csv_cells.MAX_CELLS == 1_000_000


def test_100000_columns_are_read_in_linear_time(tmp_path: Path, within_30_seconds: None) -> None:
    names = [f"feature_{i}" for i in range(100_000)]
    path = tmp_path / "wide.csv"
    path.write_text(",".join(names) + "\n" + ",".join(["1"] * len(names)) + "\n")
    header, rows, _ = read_csv_rows(path)
    assert len(header) == len(rows[0]) == 100_000
    path.write_text(",".join([*names, "feature_7"]) + "\n")
    with pytest.raises(UserError, match=r"duplicate column names \['feature_7'\]"):
        read_csv_rows(path)


def test_predict_reads_a_wide_csv_through_the_same_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, within_30_seconds: None
) -> None:
    table = {
        "numeric_columns": ["x0", "x99999"],
        "categorical_columns": [],
        "feature_mean": [0.0, 0.0],
        "feature_scale": [1.0, 1.0],
        "categories": {},
    }
    path = tmp_path / "rows.csv"
    names = [f"x{i}" for i in range(100_000)]
    path.write_text(",".join(names) + "\n" + "\n".join([",".join(["2"] * 100_000)] * 3) + "\n")
    _, x, notes = conform_table(path, table)
    assert x.tolist() == [[2.0, 2.0]] * 3 and notes == []
    monkeypatch.setattr(_csv_cells, "MAX_LINE_CHARS", 1000)
    with pytest.raises(UserError, match="line 1: longer than 1000 characters"):
        conform_table(path, table)
