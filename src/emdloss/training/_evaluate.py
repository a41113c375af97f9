"""``evaluate`` and ``load_task``: read a run directory and rebuild its best model."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from emdloss.training import rundir
from emdloss.training._build import (
    build_task,
    evaluate_checkpoint,
    finished_run_config,
    ignore_expected_warnings,
    opened_run,
)
from emdloss.training._calibrate import assess_stored, load_run_calibrator
from emdloss.training._context import baseline_scores, distribution_record
from emdloss.training.module import OrdinalTask

__all__ = ["evaluate", "load_task"]


def evaluate(
    run_dir: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    progress: bool = True,
    accelerator: str | None = None,
) -> dict[str, Any]:
    """Re-evaluate the best checkpoint of a run on its validation and test splits.

    Nothing in the run directory is written; the loss runs on the run's recorded
    implementation.

    Parameters
    ----------
    run_dir : path-like
        A run directory written by :func:`train`.
    data_dir : str, optional
        Where the data lives now (default: the run's).
    progress : bool
        Progress bars.
    accelerator : str, optional
        Override the run's accelerator (e.g. ``"cpu"``).

    Returns
    -------
    dict
        ``{"val": {rule: metrics}, "test": {rule: metrics}, "best_epoch": int, "loss", "class_names",
        "baselines": {"val": ..., "test": ...}}`` (the constant predictors of
        :func:`emdloss.metrics.trivial_baselines` on the same splits). When the run has been
        calibrated (``emdloss calibrate``), ``"conformal"``: method, alpha, split, coverage,
        mean_set_size, ... of the stored sets on the split they were not calibrated on.
    """
    with warnings.catch_warnings():
        ignore_expected_warnings()
        return _evaluate(Path(run_dir), data_dir, progress, accelerator)


def _evaluate(
    path: Path, data_dir: str | None, progress: bool, accelerator: str | None
) -> dict[str, Any]:
    config = finished_run_config(path, data_dir=data_dir, accelerator=accelerator)
    best = rundir.load_checkpoint(path / rundir.CHECKPOINT_DIR / rundir.BEST_CHECKPOINT)
    calibration = load_run_calibrator(path)  # before the slow part: a stale one fails fast
    with opened_run(config) as dataset:
        metrics, task = evaluate_checkpoint(config, dataset, best, progress=progress)
        if calibration is not None:
            metrics["conformal"] = assess_stored(*calibration, task, config, dataset, best)
    return {
        "best_epoch": int(best["epoch"]) + 1,
        "loss": config.loss,
        "class_names": list(dataset.class_names),
        **metrics,
        "baselines": baseline_scores(dataset),
        **distribution_record(dataset, config.distribution_monitor, baselines=config.ldl_baselines),
    }


def load_task(run_dir: str | os.PathLike[str]) -> tuple[OrdinalTask, dict[str, Any]]:
    """The best checkpoint of a run as an :class:`OrdinalTask` in eval mode, and its data record.

    The task takes inputs as the run's data loader gave them: images it normalises itself, but
    table rows must already be encoded with the record's ``table`` (standardised with
    ``feature_mean`` and ``feature_scale``, categories one-hot): read raw rows with
    :func:`emdloss.data.conform.conform_table`, or let :func:`predict` do both.

    Parameters
    ----------
    run_dir : path-like
        A run directory.

    Returns
    -------
    (OrdinalTask, dict)
        The task and the content of ``data.json``.
    """
    path = Path(run_dir)
    config = rundir.read_config(path)
    record = rundir.read_data_record(path)
    best = rundir.load_checkpoint(path / rundir.CHECKPOINT_DIR / rundir.BEST_CHECKPOINT)
    task = build_task(config, _DatasetStub(record))
    rundir.load_weights(task, best, path / rundir.CHECKPOINT_DIR / rundir.BEST_CHECKPOINT)
    task.eval()
    return task, record


class _DatasetStub:
    """What :func:`build_task` needs from a dataset, rebuilt from ``data.json``."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.kind = record["kind"]
        self.class_names = list(record["class_names"])
        self.num_classes = len(self.class_names)
        self.positions = record.get("positions")
        self.input_shape = tuple(record["input_shape"])
        self.mean = record.get("mean")
        self.std = record.get("std")

        class _Targets:
            targets = np.zeros(1, dtype=np.int64)

        self.train = _Targets()
