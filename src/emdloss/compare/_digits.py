"""scikit-learn's bundled ``digits`` (8x8 images of 0-9, classes without order) as a CSV source.

The data layer has no ``digits`` loader; compare writes the 1797 images (64 pixel columns, values
0-16) and their ``digit`` label to a CSV once and loads it through the data layer's ``csv:PATH``
path, so the runs get the same stratified hold-out splits and input standardisation as the
tabular benchmarks.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from emdloss.compare._io import write_text

__all__ = ["DIGITS_TARGET", "digits_csv_text", "digits_source"]

DIGITS_TARGET = "digit"


def digits_csv_text() -> str:
    """The CSV text of :func:`sklearn.datasets.load_digits` (header ``pixel0..pixel63,digit``).

    Returns
    -------
    str

    Examples
    --------
    >>> lines = digits_csv_text().splitlines()
    >>> len(lines), lines[0].split(",")[-2:], lines[1].split(",")[-1]
    (1798, ['pixel63', 'digit'], '0')
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    buffer = io.StringIO()
    buffer.write(",".join([*(f"pixel{i}" for i in range(bunch.data.shape[1])), DIGITS_TARGET]))
    buffer.write("\n")
    for row, label in zip(bunch.data.astype(int).tolist(), bunch.target.tolist(), strict=True):
        buffer.write(",".join(map(str, [*row, label])) + "\n")
    return buffer.getvalue()


def digits_source(directory: Path) -> tuple[str, dict[str, Any]]:
    """Write ``directory/digits.csv`` (unless already identical); return the spec and options.

    Parameters
    ----------
    directory : pathlib.Path
        Where to keep the CSV (compare uses ``<output>/data``).

    Returns
    -------
    spec : str
        ``csv:<absolute path>``.
    options : dict
        ``{"target": "digit"}``.

    Examples
    --------
    >>> import tempfile
    >>> spec, options = digits_source(Path(tempfile.mkdtemp()))
    >>> spec.startswith("csv:") and spec.endswith("digits.csv"), options
    (True, {'target': 'digit'})
    """
    path = (directory / "digits.csv").resolve()
    text = digits_csv_text()
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)
    return f"csv:{path}", {"target": DIGITS_TARGET}
