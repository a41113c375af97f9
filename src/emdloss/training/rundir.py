"""The run-directory contract: file names, writers and readers, shared by every command.

:func:`emdloss.training.train` writes a run directory; :func:`~emdloss.training.evaluate`,
:func:`~emdloss.training.predict` and ``emdloss compare`` read it, all through this module, so
the layout is spelled in one place. A run directory holds::

    config.yaml              the resolved TrainConfig (every option, absolute data paths)
    data.json                classes, positions, input shape and the input encoding (predict)
    metrics.json             validation and test metrics per prediction rule, best epoch, ...
    history.csv              one row per epoch: epoch (1-based), lr, losses, validation metrics
    predictions_test.csv     per test sample: index, id, target, target_name, prob_<class>...,
                             pred_<rule>... (class indices)
    checkpoints/last.ckpt    end of the latest epoch (resume from here)
    checkpoints/best.ckpt    best validation score (evaluated once on the test split)
    learning_curves.png, confusion_matrix.png, ground_distance.png (when the loss has one)
    calibrator.json          conformal prediction sets, written by ``emdloss calibrate``

This module is light on purpose (the standard library; torch and numpy only inside the readers
that need them; never Lightning), so that tools that only read runs (compare, calibration,
export) start at once. Checkpoints are read with
``torch.load(weights_only=True)``: nothing in a run directory is ever executed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emdloss._atomic import write_json, write_text
from emdloss.errors import UserError
from emdloss.training.config import TrainConfig

if TYPE_CHECKING:  # torch and numpy are imported where used: reading metrics needs neither
    import numpy as np
    from torch import Tensor

__all__ = [
    "BEST_CHECKPOINT",
    "CALIBRATOR_FILE",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "DATA_FILE",
    "HISTORY_FILE",
    "LAST_CHECKPOINT",
    "METRICS_FILE",
    "PLOT_FILES",
    "PREDICTIONS_FILE",
    "RUN_FILES",
    "TARGET_COLUMN",
    "RunResult",
    "data_record",
    "load_checkpoint",
    "prediction_column",
    "predictions_csv",
    "read_calibration",
    "read_config",
    "read_data_record",
    "read_history",
    "read_metrics",
    "read_predictions",
    "write_calibration",
    "write_data_record",
    "write_history",
    "write_metrics",
    "write_predictions",
]

CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
PREDICTIONS_FILE = "predictions_test.csv"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"
PLOT_FILES = (
    "learning_curves.png",
    "confusion_matrix.png",
    "ground_distance.png",
    "distributions_test.png",
)
CALIBRATOR_FILE = "calibrator.json"
#: Every file of a run (``--overwrite`` removes these and ``checkpoints/``, nothing else).
RUN_FILES = (
    CONFIG_FILE,
    DATA_FILE,
    METRICS_FILE,
    HISTORY_FILE,
    PREDICTIONS_FILE,
    *PLOT_FILES,
    CALIBRATOR_FILE,
)
#: Column of ``predictions_test.csv`` holding the true class index.
TARGET_COLUMN = "target"


def prediction_column(rule: str) -> str:
    """Column of ``predictions_test.csv`` (and of predict's output) for the prediction ``rule``.

    Examples
    --------
    >>> prediction_column("argmax")
    'pred_argmax'
    """
    return f"pred_{rule}"


@dataclass
class RunResult:
    """What :func:`emdloss.training.train` returns.

    Attributes
    ----------
    run_dir : pathlib.Path
        The run directory.
    config : TrainConfig
        The resolved configuration.
    metrics : dict
        The content of ``metrics.json`` (empty on non-zero ranks of a multi-process run).
    best_epoch : int
        1-based epoch of the best checkpoint.
    train_seconds : float
        Wall time of the training epochs (summed over resumed sessions).
    """

    run_dir: Path
    config: TrainConfig
    metrics: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = 0
    train_seconds: float = math.nan

    @property
    def test(self) -> dict[str, dict[str, float]]:
        """Test metrics per prediction rule."""
        test: dict[str, dict[str, float]] = self.metrics.get("test", {})
        return test

    @property
    def val(self) -> dict[str, dict[str, float]]:
        """Validation metrics (best checkpoint) per prediction rule."""
        val: dict[str, dict[str, float]] = self.metrics.get("val", {})
        return val


# ---------------------------------------------------------------------------- config.yaml
def read_config(run_dir: str | os.PathLike[str]) -> TrainConfig:
    """The :class:`TrainConfig` saved in ``run_dir/config.yaml``.

    Raises
    ------
    FileNotFoundError
        When ``run_dir`` is not a run directory (the CLI reports it as a user error).
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {CONFIG_FILE} not found")
    return TrainConfig.from_yaml(path)


# ---------------------------------------------------------------------------- data.json
def data_record(dataset: Any) -> dict[str, Any]:
    """The ``data.json`` record of a loaded dataset: what predict needs to encode new inputs."""
    info = dataset.info or {}
    record: dict[str, Any] = {
        "name": dataset.name,
        "kind": dataset.kind,
        "class_names": list(dataset.class_names),
        "positions": dataset.positions,
        "input_shape": list(dataset.input_shape),
        "mean": list(dataset.mean) if dataset.mean is not None else None,
        "std": list(dataset.std) if dataset.std is not None else None,
        "protocol": dataset.protocol,
        "sizes": {part: len(getattr(dataset, part)) for part in ("train", "val", "test")},
    }
    if dataset.kind == "tabular":
        names = list(dataset.feature_names or [])
        mean = list(info.get("feature_mean", []))
        numeric = list(info.get("numeric_columns", names[: len(mean)]))
        record["table"] = {
            "feature_names": names,
            "numeric_columns": numeric,
            "feature_mean": mean,
            "feature_scale": list(info.get("feature_scale", [])),
            "categorical_columns": list(info.get("categorical_columns", [])),
            "categories": dict(info.get("categories", {})),
        }
    return record


def write_data_record(
    run_dir: str | os.PathLike[str], dataset: Any, *, description: Mapping[str, Any] | None = None
) -> Path:
    """Write ``data.json`` (:func:`data_record` of ``dataset``), with the ``description`` of
    :func:`emdloss.data.inspection.describe_dataset` (columns, classes, split sizes, warnings)
    when given."""
    record = data_record(dataset)
    if description is not None:
        record["description"] = dict(description)
    return write_json(Path(run_dir) / DATA_FILE, record)


def read_data_record(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The content of ``run_dir/data.json``."""
    path = Path(run_dir) / DATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the run directory is incomplete")
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON: {error}") from None
    return record


# ---------------------------------------------------------------------------- metrics.json
def write_metrics(run_dir: str | os.PathLike[str], metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics.json`` (last: a complete metrics.json marks a finished run)."""
    return write_json(Path(run_dir) / METRICS_FILE, metrics)


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The content of ``run_dir/metrics.json``, or ``None`` when missing or unreadable."""
    try:
        content = json.loads((Path(run_dir) / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


# ---------------------------------------------------------------------------- calibrator.json
def write_calibration(run_dir: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write ``calibrator.json`` (see :func:`emdloss.training.calibrate_run` for its content)."""
    return write_json(Path(run_dir) / CALIBRATOR_FILE, record)


def read_calibration(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The content of ``run_dir/calibrator.json``, ``None`` when the run has none.

    Raises
    ------
    UserError
        When the file exists but is not a JSON object.
    """
    path = Path(run_dir) / CALIBRATOR_FILE
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(content, dict):
        raise UserError(f"{path} must hold a JSON object, got {type(content).__name__}")
    return content


# ---------------------------------------------------------------------------- history.csv
def write_history(run_dir: str | os.PathLike[str], history: Sequence[Mapping[str, float]]) -> Path:
    """Write ``history.csv``: one row per epoch, ``epoch`` 1-based (stored 0-based in history)."""
    keys: list[str] = []
    for row in history:
        keys.extend(key for key in row if key not in keys)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys or ["epoch"], lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({**row, "epoch": int(row["epoch"]) + 1})
    return write_text(Path(run_dir) / HISTORY_FILE, buffer.getvalue())


def read_history(run_dir: str | os.PathLike[str]) -> list[dict[str, float]]:
    """The rows of ``history.csv`` as floats (empty cells are NaN); ``[]`` when missing."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            {key: float(value) if value else math.nan for key, value in row.items()}
            for row in csv.DictReader(handle)
        ]


# ---------------------------------------------------------------------------- predictions
def predictions_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Predictions (one mapping per sample) as CSV text; floats with 6 significant digits.

    Examples
    --------
    >>> predictions_csv([{"id": "a", "pred_argmax": "low"}])
    'id,pred_argmax\\na,low\\n'
    """
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )
    return buffer.getvalue()


def write_predictions(
    run_dir: str | os.PathLike[str],
    targets: Sequence[int],
    probs: Tensor,
    decoded: Mapping[str, Tensor],
    class_names: Sequence[str],
    ids: Sequence[Any] | None = None,
    target_probs: Tensor | None = None,
) -> Path:
    """Write ``predictions_test.csv``.

    Columns: ``index``, ``id``, ``target`` (class index), ``target_name``, ``prob_<class>`` per
    class, ``pred_<rule>`` (class index) per decoding rule of ``decoded``; with distribution
    targets (``target_probs`` (N, C)) also ``target_prob_<class>`` per class, after the
    ``prob_<class>`` columns (the ``target`` of such a run is the median level).
    """
    names = list(class_names)
    ids = list(ids) if ids is not None else list(range(len(targets)))
    header = ["index", "id", TARGET_COLUMN, "target_name"]
    header += [f"prob_{name}" for name in names]
    if target_probs is not None:
        header += [f"target_prob_{name}" for name in names]
    header += [prediction_column(rule) for rule in decoded]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for i, target in enumerate(targets):
        row: list[Any] = [i, ids[i], int(target), names[int(target)]]
        row.extend(f"{float(p):.6g}" for p in probs[i])
        if target_probs is not None:
            row.extend(f"{float(p):.6g}" for p in target_probs[i])
        row.extend(int(values[i]) for values in decoded.values())
        writer.writerow(row)
    return write_text(Path(run_dir) / PREDICTIONS_FILE, buffer.getvalue())


def read_predictions(
    run_dir: str | os.PathLike[str], rule: str = "argmax"
) -> tuple[np.ndarray, np.ndarray] | None:
    """True and predicted class indices of a run's test set, from ``predictions_test.csv``.

    Parameters
    ----------
    run_dir : path-like
        A run directory.
    rule : str
        Decoding rule of the prediction column.

    Returns
    -------
    (targets, predictions) or None
        Integer arrays, or ``None`` when the run has no (readable) per-sample predictions.
    """
    import numpy as np

    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    column = prediction_column(rule)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        if TARGET_COLUMN not in fields or column not in fields:
            return None
        try:
            pairs = [(int(row[TARGET_COLUMN]), int(row[column])) for row in reader]
        except (TypeError, ValueError):
            return None
    targets = np.array([a for a, _ in pairs], dtype=np.int64)
    predictions = np.array([b for _, b in pairs], dtype=np.int64)
    return targets, predictions


# ---------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint without executing anything from it (``weights_only=True``).

    Raises
    ------
    UserError
        When the file is missing, truncated or corrupt, or holds objects other than tensors and
        plain containers (such a file is refused, never unpickled).
    """
    import torch

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint {file}: the run has not finished an epoch")
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"refusing to load {file}: it holds objects that are not plain data ({first[:200]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot read checkpoint {file}: truncated or corrupt ({first})") from None
    if not isinstance(loaded, dict) or "state_dict" not in loaded:
        raise UserError(f"{file} is not an emdloss checkpoint (no state_dict)")
    return loaded
