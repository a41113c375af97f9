"""Deprecated: the old home of the training entry points (emdloss 0.1.0).

Split by job since: :func:`emdloss.training.train`, :func:`~emdloss.training.evaluate`,
:func:`~emdloss.training.predict`, :func:`~emdloss.training.load_task` and
:func:`~emdloss.training.load_data` are on the package's face, the run-directory names in
:mod:`emdloss.training.rundir`. Reading a name here warns (``DeprecationWarning``) and returns
it from its new home; this module goes in emdloss 0.3.0.
"""

from __future__ import annotations

from typing import Any

from emdloss._deprecation import moved_attribute

_RUNDIR = "emdloss.training.rundir"
_MOVED = {
    "CHECKPOINT_DIR": _RUNDIR,
    "CONFIG_FILE": _RUNDIR,
    "DATA_FILE": _RUNDIR,
    "HISTORY_FILE": _RUNDIR,
    "METRICS_FILE": _RUNDIR,
    "PREDICTIONS_FILE": _RUNDIR,
    "RUN_FILES": _RUNDIR,
    "RunResult": _RUNDIR,
    "predictions_csv": _RUNDIR,
    "build_task": "emdloss.training._build",  # internal
    "evaluate": "emdloss.training",
    "load_data": "emdloss.training",
    "load_task": "emdloss.training",
    "predict": "emdloss.training",
    "quiet_lightning_logs": "emdloss.training",
    "train": "emdloss.training",
}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)
