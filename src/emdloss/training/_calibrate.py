"""``calibrate_run``: conformal prediction sets for a trained run (see :mod:`emdloss.conformal`).

The best checkpoint's probabilities on the calibration split (validation by default) are
computed through the same Lightning test loop that evaluates the run (same precision, device,
test-time augmentation); the calibrator is stored in ``RUN_DIR/calibrator.json`` together with
the digest of the checkpoint it belongs to, and the coverage and mean set size on the other
split are added to ``metrics.json``. ``evaluate`` and ``predict`` then use the stored
calibrator, and refuse one made for another checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emdloss.conformal import (
    Calibrator,
    calibrate,
    check_alpha,
    check_method,
    mean_set_size,
    set_coverage,
)
from emdloss.errors import UserError
from emdloss.training import rundir
from emdloss.training._build import (
    build_task,
    finished_run_config,
    make_trainer,
    opened_run,
)
from emdloss.training.config import TrainConfig
from emdloss.training.datamodule import OrdinalDataModule
from emdloss.training.module import OrdinalTask

__all__ = [
    "CALIBRATION_SPLITS",
    "CURVE_ALPHAS",
    "assess_stored",
    "calibrate_run",
    "checkpoint_digest",
    "conformal_summary",
    "load_run_calibrator",
    "split_probabilities",
]

#: Splits a run can be calibrated on; the sets are then assessed on the other one. The
#: training split is not offered: the model has seen its labels, so the guarantee would not hold.
CALIBRATION_SPLITS = ("val", "test")
#: Miscoverage levels of the set-size curve stored with every calibration (for compare's plot).
CURVE_ALPHAS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
_FORMAT = 1


def _other(split: str) -> str:
    return "test" if split == "val" else "val"


def checkpoint_digest(run_dir: str | os.PathLike[str]) -> str:
    """SHA-256 of the run's best checkpoint: a calibrator belongs to exactly those weights."""
    path = Path(run_dir) / rundir.CHECKPOINT_DIR / rundir.BEST_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path}: the run has not finished an epoch")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_probabilities(
    config: TrainConfig,
    dataset: Any,
    checkpoint: dict[str, Any],
    splits: Sequence[str],
    *,
    progress: bool = False,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Class probabilities (float64, rows renormalised) and targets of the best checkpoint on
    each of ``splits``, through the run's own test loop (one process)."""
    task = build_task(config, dataset)
    rundir.load_weights(task, checkpoint)
    task.on_load_checkpoint(checkpoint)
    trainer = make_trainer(config, config.run_dir, [], fitting=False, progress=progress)
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for split in splits:
        part = getattr(dataset, split)
        module = OrdinalDataModule(
            dataset.train,
            dataset.val,
            part,  # the split to score sits in the test slot: test_step keeps per-sample outputs
            batch_size=config.batch_size,
            seed=config.seed,
            num_workers=config.num_workers,
        )
        trainer.test(task, datamodule=module, verbose=False)
        if not task.test_outputs:
            raise UserError(f"the {split} split of {config.run_dir} is empty")
        probs = torch.cat([p for p, _ in task.test_outputs]).to(torch.float64)
        targets = torch.cat([t for _, t in task.test_outputs]).long()
        out[split] = (probs / probs.sum(dim=1, keepdim=True), targets)
    return out


def _assess(cal: Calibrator, probs: Tensor, targets: Tensor) -> dict[str, float]:
    lower, upper = cal.predict_sets(probs)
    return {
        "coverage": set_coverage(lower, upper, targets),
        "mean_set_size": mean_set_size(lower, upper),
    }


def calibrate_run(
    run_dir: str | os.PathLike[str],
    *,
    alpha: float = 0.1,
    method: str = "cdf",
    split: str = "val",
    data_dir: str | None = None,
    accelerator: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Calibrate conformal prediction sets for a run and store them in the run directory.

    Parameters
    ----------
    run_dir : path-like
        A finished run directory.
    alpha : float
        Miscoverage level: sets hold the true class with probability at least ``1 - alpha``.
    method : {"cdf", "ordinal_aps"}
        Conformity score (see :mod:`emdloss.conformal`).
    split : {"val", "test"}
        Calibration split; the sets are assessed on the other one. Calibrating on ``test``
        leaves only the validation split, which also selected the model, to assess them.
    data_dir, accelerator : str, optional
        As for :func:`emdloss.training.evaluate`.
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        The content written to ``calibrator.json``: ``calibrator`` (see
        :meth:`emdloss.conformal.Calibrator.to_dict`), ``split``, ``checkpoint`` (epoch and
        SHA-256), ``class_names``, ``evaluation`` (split, n, coverage, mean_set_size) and
        ``curve`` (coverage and mean set size at :data:`CURVE_ALPHAS` on the assessment split).
    """
    import warnings

    try:  # before the slow part
        alpha, method = check_alpha(alpha), check_method(method)
    except (ValueError, TypeError) as error:
        raise UserError(str(error)) from None
    if split not in CALIBRATION_SPLITS:
        raise UserError(
            f"--split must be one of {', '.join(CALIBRATION_SPLITS)}, got {split!r} (the "
            "training split is out: the model has seen its labels)"
        )
    path = Path(run_dir)
    config = finished_run_config(path, data_dir=data_dir, accelerator=accelerator)
    digest = checkpoint_digest(path)
    best = rundir.load_checkpoint(path / rundir.CHECKPOINT_DIR / rundir.BEST_CHECKPOINT)
    with opened_run(config) as dataset:
        probs = split_probabilities(
            config, dataset, best, [split, _other(split)], progress=progress
        )
    cal = calibrate(*probs[split], alpha, method=method)
    assess_probs, assess_targets = probs[_other(split)]
    curve: dict[str, list[float]] = {"alphas": [], "coverage": [], "mean_set_size": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny alphas on small splits: all classes, by design
        for level in CURVE_ALPHAS:
            summary = _assess(calibrate(*probs[split], level, method=method), *probs[_other(split)])
            curve["alphas"].append(level)
            curve["coverage"].append(summary["coverage"])
            curve["mean_set_size"].append(summary["mean_set_size"])
    record: dict[str, Any] = {
        "format": _FORMAT,
        "calibrator": cal.to_dict(),
        "split": split,
        "checkpoint": {
            "file": f"{rundir.CHECKPOINT_DIR}/{rundir.BEST_CHECKPOINT}",
            "epoch": int(best["epoch"]) + 1,
            "sha256": digest,
        },
        "class_names": list(dataset.class_names),
        "evaluation": {
            "split": _other(split),
            "n": len(assess_targets),
            **_assess(cal, assess_probs, assess_targets),
        },
        "curve": {"split": _other(split), **curve},
    }
    rundir.write_calibration(path, record)
    metrics = rundir.read_metrics(path)
    if metrics is not None:  # a finished run: its metrics.json gains the conformal summary
        rundir.write_metrics(path, {**metrics, "conformal": conformal_summary(record)})
    return record


def conformal_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The short form of a calibration record, as ``metrics.json`` and ``evaluate`` give it."""
    cal = record["calibrator"]
    evaluation = record["evaluation"]
    return {
        "method": cal["method"],
        "alpha": cal["alpha"],
        "calibration_split": record["split"],
        "n_calibration": cal["n"],
        "split": evaluation["split"],
        "n": evaluation["n"],
        "coverage": evaluation["coverage"],
        "mean_set_size": evaluation["mean_set_size"],
    }


def load_run_calibrator(
    run_dir: str | os.PathLike[str],
) -> tuple[Calibrator, dict[str, Any]] | None:
    """The run's stored calibrator and its record, or ``None`` when it has none.

    Raises
    ------
    UserError
        When ``calibrator.json`` is malformed or belongs to another checkpoint (the run was
        trained further or again after calibrating).
    """
    record = rundir.read_calibration(run_dir)
    if record is None:
        return None
    where = Path(run_dir) / rundir.CALIBRATOR_FILE
    try:
        if record.get("format") != _FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {_FORMAT}")
        cal = Calibrator.from_dict(record["calibrator"])
        stored = record["checkpoint"]["sha256"]
    except (ValueError, TypeError, KeyError) as error:
        raise UserError(f"{where} is not a valid calibration record: {error}") from None
    if stored != checkpoint_digest(run_dir):
        raise UserError(
            f"{where} was made for another checkpoint (the run was trained again or further); "
            f"run `emdloss calibrate {run_dir}` again"
        )
    return cal, record


def assess_stored(
    cal: Calibrator,
    record: dict[str, Any],
    task: OrdinalTask,
    config: TrainConfig,
    dataset: Any,
    checkpoint: dict[str, Any],
) -> dict[str, Any]:
    """Coverage and mean set size of a stored calibrator on the split it was not calibrated on,
    for ``evaluate``: the test outputs ``task`` already holds, else one more pass."""
    split = _other(str(record.get("split", "val")))
    if split == "test" and task.test_outputs:
        probs = torch.cat([p for p, _ in task.test_outputs]).to(torch.float64)
        probs = probs / probs.sum(dim=1, keepdim=True)
        targets = torch.cat([t for _, t in task.test_outputs]).long()
    else:
        probs, targets = split_probabilities(config, dataset, checkpoint, [split])[split]
    return {
        "method": cal.method,
        "alpha": cal.alpha,
        "calibration_split": record.get("split", "val"),
        "n_calibration": cal.n,
        "split": split,
        "n": len(targets),
        **_assess(cal, probs, targets),
    }
