"""Tables of a comparison: results.csv rows, mean +- standard deviation, summary.md.

The code lives in three modules split by job: :mod:`._rows` (the results.csv rows, their
columns and the aggregation over seeds), :mod:`._summary` (the text of summary.md) and
:mod:`._verdict` (the verdict sentences). This module keeps the names importable from here.
"""

from __future__ import annotations

from emdloss.compare._rows import (
    CSV_COLUMNS,
    METRIC_LABELS,
    OFFICIAL_SPLITS,  # noqa: F401
    OPTIONAL_COLUMNS,  # noqa: F401
    ORDERLESS,  # noqa: F401
    THRESHOLD_LOSSES,  # noqa: F401
    TIME_KEYS,  # noqa: F401
    VERDICT_METRICS,  # noqa: F401
    DatasetInfo,
    Stat,
    aggregate,
    baseline_rows,  # noqa: F401
    result_rows,
    results_csv,
)
from emdloss.compare._summary import render_summary
from emdloss.compare._verdict import compare_to_baseline

__all__ = [
    "CSV_COLUMNS",
    "METRIC_LABELS",
    "DatasetInfo",
    "Stat",
    "aggregate",
    "compare_to_baseline",
    "render_summary",
    "result_rows",
    "results_csv",
]
