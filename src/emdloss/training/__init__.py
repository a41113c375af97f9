"""Training toolkit: loss registry, Lightning module and data module, run directories.

Needs the ``train`` extra (``pip install 'emdloss[train]'``).

>>> from emdloss.training import LOSS_NAMES
>>> "emd2" in LOSS_NAMES
True
"""

from __future__ import annotations

from emdloss.training.config import TrainConfig
from emdloss.training.datamodule import OrdinalDataModule
from emdloss.training.losses import LOSS_NAMES, TrainingLoss, build_loss
from emdloss.training.module import OrdinalTask
from emdloss.training.run import RunResult, evaluate, load_task, predict, train

__all__ = [
    "LOSS_NAMES",
    "OrdinalDataModule",
    "OrdinalTask",
    "RunResult",
    "TrainConfig",
    "TrainingLoss",
    "build_loss",
    "evaluate",
    "load_task",
    "predict",
    "train",
]
