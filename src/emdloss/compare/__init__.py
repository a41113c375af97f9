"""``emdloss compare``: many losses under one protocol, with seeds, spread and published rows.

Every data set x loss x seed (x fold) is trained by :func:`emdloss.training.train` with the same
splits, model, budget and model selection; only the loss differs. The comparison writes

- ``runs/<dataset>/<loss>[/<setting>]/seed<k>[_fold<f>]/``: each run's own directory
  (metrics.json, ...); ``<setting>`` with ``--grid``;
- ``results.csv``: one row per reported run and prediction rule (with a grid, the setting chosen
  on validation data), and one per baseline, seed and rule (``baseline:...``);
- ``grid.csv`` (with ``--grid``): the validation score of every run of every setting;
- ``summary.md``: mean ± standard deviation per loss, the best per column in bold, the published
  rows of :mod:`emdloss.reference_results` beside ours with their protocol, and a verdict;
- ``plots/<dataset>_metrics.png`` and ``plots/<dataset>_per_class_mae.png``;
- ``compare.json``: the protocol, so that a rerun into the same directory cannot silently mix
  runs trained with different options;
- with ``conformal=ALPHA`` (``--conformal``): each run's conformal prediction sets, calibrated on
  its validation split (``calibrator.json``), with test coverage and mean set size in
  ``results.csv`` and the summary, and ``plots/<dataset>/set_size.png`` (set size against alpha).

A rerun skips finished runs (complete ``metrics.json``), resumes half-finished ones from their
last checkpoint and restarts those without one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emdloss._lazy import lazy_attributes

# The names compare shares with the CLI's parser (light: the vocabulary imports nothing).
from emdloss.vocabulary import (
    DEFAULT_DATASETS,
    DEFAULT_LOSSES,
    DEFAULT_OUTPUT,
    DEFAULT_SEEDS,
    EXECUTORS,
    SOFT_TARGET_POLICIES,
)

if TYPE_CHECKING:
    from emdloss.compare._cli import add_arguments, run
    from emdloss.compare._compare import DATASET_DEFAULTS, CompareResult, compare
    from emdloss.compare._plan import EMD_LOSSES, PEER_PACKAGES, RunSpec
    from emdloss.compare._records import METRIC_KEYS, RunRecord
    from emdloss.compare._rows import CSV_COLUMNS

__all__ = [
    "CSV_COLUMNS",
    "DATASET_DEFAULTS",
    "DEFAULT_DATASETS",
    "DEFAULT_LOSSES",
    "DEFAULT_OUTPUT",
    "DEFAULT_SEEDS",
    "EMD_LOSSES",
    "EXECUTORS",
    "METRIC_KEYS",
    "PEER_PACKAGES",
    "SOFT_TARGET_POLICIES",
    "CompareResult",
    "RunRecord",
    "RunSpec",
    "add_arguments",
    "compare",
    "run",
]

# The package's face: each public name -> its private module, imported on first use (PEP 562),
# so that importing the package (the CLI's parser does) costs nothing.
_LAZY = {
    "CSV_COLUMNS": "emdloss.compare._rows",
    "DATASET_DEFAULTS": "emdloss.compare._compare",
    "EMD_LOSSES": "emdloss.compare._plan",
    "METRIC_KEYS": "emdloss.compare._records",
    "PEER_PACKAGES": "emdloss.compare._plan",
    "CompareResult": "emdloss.compare._compare",
    "RunRecord": "emdloss.compare._records",
    "RunSpec": "emdloss.compare._plan",
    "add_arguments": "emdloss.compare._cli",
    "compare": "emdloss.compare._compare",
    "run": "emdloss.compare._cli",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
