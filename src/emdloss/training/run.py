"""Training runs (compatibility module): :func:`train` writes a run directory, :func:`evaluate`
and :func:`predict` read one.

The code lives in modules split by job: :mod:`emdloss.training.rundir` (the run-directory
contract: file names, writers, readers), ``_build`` (data, task, trainer), ``_train``,
``_evaluate`` and ``_predict``. This module re-exports their names for code that imported them
from here.
"""

from __future__ import annotations

from emdloss.training._build import (
    build_task,
    ignore_expected_warnings,
    load_data,
    quiet_lightning_logs,
)
from emdloss.training._evaluate import evaluate, load_task
from emdloss.training._predict import predict
from emdloss.training._train import launched_rank, train
from emdloss.training.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DATA_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RUN_FILES,
    RunResult,
    predictions_csv,
)

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "DATA_FILE",
    "HISTORY_FILE",
    "METRICS_FILE",
    "PREDICTIONS_FILE",
    "RUN_FILES",
    "RunResult",
    "build_task",
    "evaluate",
    "ignore_expected_warnings",
    "launched_rank",
    "load_data",
    "load_task",
    "predict",
    "predictions_csv",
    "quiet_lightning_logs",
    "train",
]
