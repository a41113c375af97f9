"""Training toolkit: loss registry, Lightning module and data module, run directories.

Needs the ``train`` extra (``pip install 'emdloss[train]'``). Importing this package is light
(the loss names and :class:`TrainConfig`, no torch); everything else (``build_loss``, the
run-directory contract :mod:`emdloss.training.rundir`, and the Lightning parts ``train``,
``evaluate``, ``predict``, ``OrdinalTask``, ...) is imported on first use.

This module is the package's face: ``__all__`` lists what other packages (the CLI, ``compare``,
the integrations) may use; the underscore modules behind it are private to the package.

This module is the package's face: ``__all__`` lists what other packages (the CLI, ``compare``,
the integrations) may use; the underscore modules behind it are private to the package.

>>> from emdloss.training import LOSS_NAMES
>>> "emd2" in LOSS_NAMES
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emdloss._lazy import lazy_attributes
from emdloss.training.config import TrainConfig
from emdloss.vocabulary import LOSS_NAMES, OUR_LOSS_NAMES, PEER_LOSS_NAMES

if TYPE_CHECKING:
    from emdloss.training._build import default_model, load_data, quiet_lightning_logs
    from emdloss.training._calibrate import calibrate_run, conformal_summary, load_run_calibrator
    from emdloss.training._context import baseline_rows, distribution_baseline_scores
    from emdloss.training._evaluate import evaluate, load_task
    from emdloss.training._loss_base import TrainingLoss
    from emdloss.training._predict import measures_path, predict
    from emdloss.training._train import run_deferred_test, train, write_run_plots
    from emdloss.training.datamodule import OrdinalDataModule
    from emdloss.training.grouped import group_key, train_group, why_not_grouped
    from emdloss.training.losses import build_loss
    from emdloss.training.module import OrdinalTask
    from emdloss.training.rundir import RunResult

__all__ = [
    "LOSS_NAMES",
    "OUR_LOSS_NAMES",
    "PEER_LOSS_NAMES",
    "OrdinalDataModule",
    "OrdinalTask",
    "RunResult",
    "TrainConfig",
    "TrainingLoss",
    "baseline_rows",
    "build_loss",
    "calibrate_run",
    "conformal_summary",
    "default_model",
    "distribution_baseline_scores",
    "evaluate",
    "group_key",
    "load_data",
    "load_run_calibrator",
    "load_task",
    "measures_path",
    "predict",
    "quiet_lightning_logs",
    "run_deferred_test",
    "train",
    "train_group",
    "why_not_grouped",
    "write_run_plots",
]

# Name -> module of the names that need Lightning, imported on first access.
_LAZY = {
    "RunResult": "emdloss.training.rundir",
    "TrainingLoss": "emdloss.training._loss_base",
    "baseline_rows": "emdloss.training._context",
    "distribution_baseline_scores": "emdloss.training._context",
    "build_loss": "emdloss.training.losses",
    "OrdinalDataModule": "emdloss.training.datamodule",
    "OrdinalTask": "emdloss.training.module",
    "calibrate_run": "emdloss.training._calibrate",
    "conformal_summary": "emdloss.training._calibrate",
    "evaluate": "emdloss.training._evaluate",
    "group_key": "emdloss.training.grouped",
    "train_group": "emdloss.training.grouped",
    "why_not_grouped": "emdloss.training.grouped",
    "default_model": "emdloss.training._build",
    "load_data": "emdloss.training._build",
    "load_run_calibrator": "emdloss.training._calibrate",
    "load_task": "emdloss.training._evaluate",
    "measures_path": "emdloss.training._predict",
    "predict": "emdloss.training._predict",
    "quiet_lightning_logs": "emdloss.training._build",
    "run_deferred_test": "emdloss.training._train",
    "train": "emdloss.training._train",
    "write_run_plots": "emdloss.training._train",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
