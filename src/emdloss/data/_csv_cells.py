"""Reading CSV cells: the rows of a file, and which feature columns are numeric.

A column is numeric when every present cell is a finite number and categorical when none is;
a column of numbers with a few other cells is refused with the cell named (issue 8: one ``x``
used to turn a numeric column into a one-hot categorical without a word).

Reading costs time and memory linear in the file's size, and a file past the stated limits is
refused by line before it is held in memory: a physical line longer than
:data:`MAX_LINE_CHARS` characters (a 1 GB line of 512 M cells took 5 GB before failing with a
MemoryError), and a header or row of more than :data:`MAX_CELLS` cells.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from emdloss.errors import UserError

#: Cell values read as missing (after stripping spaces).
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "NULL", "null", "?"})
MISSING_POLICIES = ("error", "drop", "impute")
INVALID_POLICIES = ("error", "missing")
#: Longest physical line read, in characters (64 Mi: far past any real table's row).
MAX_LINE_CHARS = 64 * 1024 * 1024
#: Most cells in the header or a row (1 M columns).
MAX_CELLS = 1_000_000


def _bounded_lines(handle: IO[str], path: Path, delimiter: str) -> Iterator[str]:
    """The lines of ``handle``, refusing one longer than :data:`MAX_LINE_CHARS` before it is
    read whole."""
    limit = MAX_LINE_CHARS
    number = 0
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit:
            raise UserError(
                f"{path}, line {number}: longer than {limit} characters, the limit of a CSV line "
                "(emdloss.data._csv_cells.MAX_LINE_CHARS); is this a table?"
            )
        if line.count(delimiter) >= MAX_CELLS:  # before csv splits it into cells
            raise UserError(
                f"{path}, line {number}: more than {MAX_CELLS} cells, the limit of a CSV row "
                "(emdloss.data._csv_cells.MAX_CELLS)"
            )
        yield line


def duplicate_names(names: list[str]) -> list[str]:
    """The names that occur more than once, sorted (linear in the number of names).

    Examples
    --------
    >>> duplicate_names(["a", "b", "a", "c", "b"])
    ['a', 'b']
    """
    return sorted(name for name, count in Counter(names).items() if count > 1)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_csv_rows(
    path: str | os.PathLike[str], *, delimiter: str = ",", encoding: str = "utf-8-sig"
) -> tuple[list[str], list[list[str]], list[int]]:
    """Read a CSV file into its header, its rows (stripped cells) and each row's 1-based line.

    Raises
    ------
    UserError
        For an empty file, a duplicate column name, a row with the wrong number of cells (names
        the line), malformed CSV or text that is not in ``encoding`` (names the file, the line
        and the ``encoding`` option that reads it), a line or a row past :data:`MAX_LINE_CHARS`
        or :data:`MAX_CELLS`.
    """
    path = Path(path)
    try:
        handle = open(path, newline="", encoding=encoding)
    except LookupError:
        raise UserError(f"encoding {encoding!r}: not a text encoding Python knows") from None
    except OSError as exc:
        raise FileNotFoundError(f"cannot open CSV file {path}: {exc}") from exc
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    with handle:
        reader = csv.reader(_bounded_lines(handle, path, delimiter), delimiter=delimiter)
        try:
            for raw in reader:
                if not raw or (all(cell.strip() == "" for cell in raw) and len(raw) <= 1):
                    continue  # blank line
                if len(raw) > MAX_CELLS:  # a quoted record over several lines
                    raise UserError(
                        f"{path}, line {reader.line_num}: {len(raw)} cells, more than the limit "
                        f"of {MAX_CELLS} (emdloss.data._csv_cells.MAX_CELLS)"
                    )
                cells = [cell.strip() for cell in raw]
                if header is None:
                    header = cells
                    duplicates = duplicate_names(header)
                    if duplicates:
                        raise UserError(f"{path}: duplicate column names {duplicates}")
                    continue
                if len(cells) != len(header):
                    shown = header if len(header) <= 20 else [*header[:20], "..."]
                    raise UserError(
                        f"{path}, line {reader.line_num}: {len(cells)} cells, "
                        f"expected {len(header)} (columns {shown})"
                    )
                rows.append(cells)
                lines.append(reader.line_num)
        except UnicodeDecodeError as exc:
            # The decoder fails on a block of text: the line is where the rows read so far end.
            raise UserError(
                f"{path} is not {encoding} text (byte {exc.object[exc.start : exc.start + 1]!r} "
                f"after line {reader.line_num}); give its encoding, e.g. encoding=latin-1, or "
                "save it as UTF-8"
            ) from None
        except csv.Error as exc:
            raise UserError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
    if header is None:
        raise UserError(f"{path} is empty (no header row)")
    return header, rows, lines


def _finite_values(cells: Sequence[str]) -> np.ndarray | None:
    """The cells as float64 when every one is a finite number (as :func:`_number` judges
    each), else ``None``."""
    try:
        values = np.fromiter(map(float, cells), dtype=np.float64, count=len(cells))
    except ValueError:
        return None
    return values if bool(np.isfinite(values).all()) else None


def _column_values(cells: Sequence[str]) -> np.ndarray:
    """A numeric column's cells as float64, NaN for a missing cell (every other cell is a
    finite number: :func:`_classify_columns` checked)."""
    if MISSING_TOKENS.isdisjoint(cells):
        return np.fromiter(map(float, cells), dtype=np.float64, count=len(cells))
    return np.array([math.nan if v in MISSING_TOKENS else float(v) for v in cells])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _where(path: Path, line: int, row: int) -> str:
    return f"{path}, line {line} (data row {row})"


def _classify_columns(
    header: list[str],
    rows: list[list[str]],
    lines: list[int],
    columns: list[int],
    *,
    path: Path,
    forced: set[str],
    invalid: str,
) -> tuple[list[int], list[int], dict[int, np.ndarray]]:
    """Split feature columns into numeric and categorical ones; refuse the ambiguous ones.

    A column is numeric when every present cell is a finite number, categorical when none is
    (or when the user declared it so). A column that holds both finite numbers and other cells
    (text, ``inf``, ``1e309``, a NUL byte) used to become categorical without a word, which
    changed its encoding and the model's input width; now it is an error that names the first
    odd cell, unless ``invalid="missing"`` and numbers are the majority: then the odd cells are
    missing values (dropped or imputed as ``missing`` says). Modifies ``rows`` in that case.

    Returns the numeric and the categorical columns, and the values of each numeric column
    (float64 over all rows, NaN for a missing cell), read once (512 columns of 2,400 rows
    were parsed three times, 1 s of a 2 s load).
    """
    numeric, categorical = [], []
    values: dict[int, np.ndarray] = {}
    by_column = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    for c in columns:
        name = header[c]
        if name in forced:
            categorical.append(c)
            continue
        cells = by_column[c]
        parsed = _finite_values(cells) if MISSING_TOKENS.isdisjoint(cells) else None
        if parsed is not None:  # the common case: every cell a number, none missing
            numeric.append(c)
            values[c] = parsed
            continue
        present = [r for r, cell in enumerate(cells) if cell not in MISSING_TOKENS]
        if _finite_values([cells[r] for r in present]) is not None:
            numeric.append(c)
            values[c] = _column_values(cells)
            continue
        finite = [r for r in present if _number(rows[r][c]) is not None]
        odd = [r for r in present if _number(rows[r][c]) is None]
        if not finite and not any(_is_number(rows[r][c]) for r in odd):
            categorical.append(c)  # text only: a categorical column
            continue
        mostly_numbers = len(finite) > len(odd)
        if invalid == "missing" and mostly_numbers:
            for r in odd:
                rows[r][c] = ""
            numeric.append(c)
            values[c] = _column_values([row[c] for row in rows])
            continue
        r = odd[0]
        value = rows[r][c]
        kind = "is not a finite number" if _is_number(value) else "is not a number"
        where = _where(path, lines[r], r + 1)
        fixes = (
            f"declare the column categorical (categorical={name}) or treat such cells as "
            "missing (invalid=missing, with missing=drop or missing=impute)"
        )
        if mostly_numbers:
            raise UserError(
                f"{where}, column {name!r}: {value!r} {kind}, but {len(finite)} other cells of "
                f"the column are numbers; fix the cell, or {fixes}"
            )
        example = finite[0]
        raise UserError(
            f"{where}, column {name!r}: {value!r} {kind}, but "
            f"{_where(path, lines[example], example + 1)} holds the number "
            f"{rows[example][c]!r}: the column mixes numbers with other cells; {fixes}"
        )
    return numeric, categorical, values
