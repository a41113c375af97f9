"""Training toolkit: loss registry, Lightning module and data module, run directories.

Needs the ``train`` extra (``pip install 'emdloss[train]'``). Importing this package is light
(the loss names and :class:`TrainConfig`, no torch); everything else (``build_loss``, the
run-directory contract :mod:`emdloss.training.rundir`, and the Lightning parts ``train``,
``evaluate``, ``predict``, ``OrdinalTask``, ...) is imported on first use.

>>> from emdloss.training import LOSS_NAMES
>>> "emd2" in LOSS_NAMES
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from emdloss.training.config import TrainConfig
from emdloss.vocabulary import LOSS_NAMES

if TYPE_CHECKING:
    from emdloss.training._calibrate import calibrate_run
    from emdloss.training._evaluate import evaluate, load_task
    from emdloss.training._predict import predict
    from emdloss.training._train import run_deferred_test, train
    from emdloss.training.datamodule import OrdinalDataModule
    from emdloss.training.losses import TrainingLoss, build_loss
    from emdloss.training.module import OrdinalTask
    from emdloss.training.rundir import RunResult

__all__ = [
    "LOSS_NAMES",
    "OrdinalDataModule",
    "OrdinalTask",
    "RunResult",
    "TrainConfig",
    "TrainingLoss",
    "build_loss",
    "calibrate_run",
    "evaluate",
    "load_task",
    "predict",
    "run_deferred_test",
    "train",
]

# Name -> module of the names that need Lightning, imported on first access.
_LAZY = {
    "RunResult": "emdloss.training.rundir",
    "TrainingLoss": "emdloss.training.losses",
    "build_loss": "emdloss.training.losses",
    "OrdinalDataModule": "emdloss.training.datamodule",
    "OrdinalTask": "emdloss.training.module",
    "calibrate_run": "emdloss.training._calibrate",
    "evaluate": "emdloss.training._evaluate",
    "load_task": "emdloss.training._evaluate",
    "predict": "emdloss.training._predict",
    "run_deferred_test": "emdloss.training._train",
    "train": "emdloss.training._train",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
