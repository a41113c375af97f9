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

Every reader checks what it reads against the layout above (a tampered, damaged or
other-version file is one :class:`~emdloss.errors.UserError` naming the file, the key, the value
and what was expected; never a traceback or a silently wrong model): :func:`read_config` (plain
YAML through :func:`emdloss._yaml.load_yaml`, then :class:`TrainConfig`'s checks),
:func:`read_data_record`, :func:`read_calibration` and :func:`load_checkpoint` (a zip archive of
finite tensors with the keys a run writes; :func:`load_weights` names missing or unexpected
weights). Files a user asks a command to write (``export``, ``predict``) go through
:func:`check_output`: never inside a run directory, never over a file unless ``--overwrite``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emdloss._atomic import check_target, write_json, write_text
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
    "PROBABILITY_FORMAT",
    "RUN_FILES",
    "TARGET_COLUMN",
    "RunResult",
    "check_output",
    "check_same_data",
    "data_record",
    "enclosing_run",
    "load_checkpoint",
    "load_weights",
    "prediction_column",
    "predictions_csv",
    "read_calibration",
    "read_config",
    "read_data_record",
    "read_distributions",
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
    try:
        return TrainConfig.from_yaml(path)
    except UserError:
        raise
    except ValueError as error:  # TrainConfig's checks: the option, its value, what it takes
        raise UserError(f"{path}: {error}") from None


# ---------------------------------------------------------------------------- outputs
def enclosing_run(path: str | os.PathLike[str]) -> Path | None:
    """The run directory that ``path`` is in (or is), or ``None``.

    A run directory is a folder holding ``config.yaml`` and ``checkpoints/`` (a project folder
    with a ``config.yaml`` and a ``data.json`` of its own is not one). Symbolic links are
    resolved first: a link into a run counts as inside it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (run / CONFIG_FILE).write_text("loss: ce")
    >>> (run / CHECKPOINT_DIR).mkdir()
    >>> enclosing_run(run / CHECKPOINT_DIR / BEST_CHECKPOINT) == run.resolve()
    True
    """
    target = Path(path).resolve()
    for folder in (target, *target.parents):
        if (folder / CONFIG_FILE).is_file() and (folder / CHECKPOINT_DIR).is_dir():
            return folder
    return None


def check_output(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    run_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Check a file a user asks a command to write (``export --output``, ``predict --output``).

    Refused: a path inside a run directory (``--output RUN/checkpoints/best.ckpt`` would
    destroy the run), a target that is not a regular file (``/dev/null``, a FIFO, a folder), and
    an existing file unless ``overwrite``.

    Parameters
    ----------
    path : path-like
        The file to write.
    overwrite : bool
        Whether an existing regular file may be replaced.
    run_dir : path-like, optional
        The run the command reads: a path inside it is refused whatever the folder holds.

    Raises
    ------
    UserError
        Naming the path and the reason.
    """
    run = enclosing_run(path)
    if run is None and run_dir is not None:
        target, folder = Path(path).resolve(), Path(run_dir).resolve()
        run = folder if target == folder or folder in target.parents else None
    if run is not None:
        raise UserError(
            f"refusing to write {path}: it is inside the run directory {run}, whose files "
            "only training writes; choose a path outside it"
        )
    return check_target(path, overwrite=overwrite)


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
        if "feature_median" in info:  # missing="impute": predict fills empty cells as training
            record["table"]["feature_median"] = list(info["feature_median"])
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


def check_same_data(run_dir: str | os.PathLike[str], dataset: Any) -> None:
    """Refuse a reloaded data set that differs from the one the run recorded in ``data.json``:
    its split sizes, classes, or (tables) the training rows' feature means and scales. A run
    re-read on changed data would score a model on inputs encoded unlike its training inputs
    (evaluate, calibrate, a resumed run). Nothing to check where ``data.json`` is absent.

    Raises
    ------
    UserError
        Naming what changed.
    """
    import numpy as np

    if not (Path(run_dir) / DATA_FILE).is_file():
        return
    recorded, now = read_data_record(run_dir), data_record(dataset)
    changed = []
    sizes = recorded.get("sizes") or {}
    for part in ("train", "val", "test"):
        if part in sizes and int(sizes[part]) != now["sizes"][part]:
            changed.append(
                f"the {part} split has {now['sizes'][part]} rows, recorded {sizes[part]}"
            )
    if list(recorded["class_names"]) != now["class_names"]:
        changed.append(f"classes {now['class_names']}, recorded {recorded['class_names']}")
    table, table_now = recorded.get("table"), now.get("table")
    if isinstance(table, dict) and table_now is not None:
        for key in ("feature_mean", "feature_scale"):
            a, b = np.asarray(table[key], dtype=float), np.asarray(table_now[key], dtype=float)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-9, atol=1e-12):
                changed.append(f"the training rows' {key.removeprefix('feature_')}s differ")
                break
    if changed:
        raise UserError(
            f"{run_dir}: the data changed since the run was trained ({'; '.join(changed)}); "
            f"{DATA_FILE} records the data it was trained on, and scores on other data would "
            "not be the model's"
        )


def read_data_record(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The content of ``run_dir/data.json``."""
    path = Path(run_dir) / DATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the run directory is incomplete")
    record = _read_json_object(path)
    _check_data_record(record, path)
    return record


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        first = " ".join(str(error).split())[:200]
        raise UserError(f"{path} is not valid JSON: {first}") from None
    if not isinstance(content, dict):
        raise UserError(f"{path} must hold a JSON object, got {type(content).__name__}")
    return content


def _bad(path: Path, key: str, value: Any, expected: str) -> UserError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return UserError(f"{path}: {key} = {shown}: expected {expected}")


def _text_list(path: Path, key: str, value: Any, *, min_len: int = 0) -> list[str]:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise _bad(path, key, value, "a list of names")
    if len(value) < min_len:
        raise _bad(path, key, value, f"at least {min_len} names")
    return value


def _numbers(
    path: Path, key: str, value: Any, length: int, *, positive: bool = False
) -> list[float]:
    ok = isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
    if not ok or len(value) != length or (positive and any(v <= 0 for v in value)):
        kind = "positive finite numbers" if positive else "finite numbers"
        raise _bad(path, key, value, f"a list of {length} {kind}")
    return value


def _check_data_record(record: dict[str, Any], path: Path) -> None:
    """Check ``data.json`` against the layout :func:`data_record` writes (see the module)."""
    missing = [k for k in ("kind", "class_names", "input_shape") if k not in record]
    if missing:
        raise UserError(f"{path}: missing key(s) {', '.join(missing)}; the file is damaged")
    kind = record["kind"]
    if kind not in ("tabular", "image"):
        raise _bad(path, "kind", kind, "'tabular' or 'image'")
    names = _text_list(path, "class_names", record["class_names"], min_len=2)
    shape = record["input_shape"]
    rank = 1 if kind == "tabular" else 3
    if not (
        isinstance(shape, list)
        and len(shape) == rank
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)
    ):
        raise _bad(path, "input_shape", shape, f"a list of {rank} positive integers")
    if record.get("positions") is not None:
        _numbers(path, "positions", record["positions"], len(names))
    if kind == "image":
        for key in ("mean", "std"):
            if record.get(key) is not None:
                _numbers(path, key, record[key], shape[0], positive=key == "std")
        return
    table = record.get("table")
    if not isinstance(table, dict):
        raise _bad(path, "table", table, "an object (a tabular run's column encoding)")
    keys = ("numeric_columns", "categorical_columns", "feature_mean", "feature_scale")
    absent = [k for k in (*keys, "categories") if k not in table]
    if absent:
        raise UserError(f"{path}: table lacks the key(s) {', '.join(absent)}; the file is damaged")
    numeric = _text_list(path, "table.numeric_columns", table["numeric_columns"])
    categorical = _text_list(path, "table.categorical_columns", table["categorical_columns"])
    _numbers(path, "table.feature_mean", table["feature_mean"], len(numeric))
    _numbers(path, "table.feature_scale", table["feature_scale"], len(numeric), positive=True)
    if "feature_median" in table:
        _numbers(path, "table.feature_median", table["feature_median"], len(numeric))
    categories = table["categories"]
    if not isinstance(categories, dict):
        raise _bad(path, "table.categories", categories, "an object of category lists")
    width = len(numeric)
    for name in categorical:
        width += len(_text_list(path, f"table.categories.{name}", categories.get(name), min_len=1))
    if width != shape[0]:
        raise _bad(
            path, "input_shape", shape, f"[{width}] (the encoded width of the table's columns)"
        )


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
    content = _read_json_object(path)
    _check_calibration(content, path, run_dir)
    return content


def _check_calibration(record: dict[str, Any], path: Path, run_dir: Any) -> None:
    """Check ``calibrator.json``: the keys :func:`emdloss.training.calibrate_run` writes, and
    the classes of this run (a file copied from another run is refused)."""
    missing = [
        k
        for k in ("calibrator", "split", "checkpoint", "class_names", "evaluation")
        if k not in record
    ]
    if missing:
        raise UserError(
            f"{path}: missing key(s) {', '.join(missing)}; run `emdloss calibrate` again"
        )
    for key in ("calibrator", "checkpoint", "evaluation"):
        if not isinstance(record[key], dict):
            raise _bad(path, key, record[key], "an object")
    if record["split"] not in ("val", "test"):
        raise _bad(path, "split", record["split"], "'val' or 'test'")
    evaluation = record["evaluation"]
    lacking = [k for k in ("split", "n", "coverage", "mean_set_size") if k not in evaluation]
    if lacking:
        raise UserError(
            f"{path}: evaluation lacks {', '.join(lacking)}; run `emdloss calibrate` again"
        )
    if not isinstance(record["checkpoint"].get("sha256"), str):
        raise _bad(path, "checkpoint.sha256", record["checkpoint"].get("sha256"), "a SHA-256 text")
    names = _text_list(path, "class_names", record["class_names"], min_len=2)
    stored = record["calibrator"].get("num_classes")
    if stored != len(names):
        raise _bad(
            path, "calibrator.num_classes", stored, f"{len(names)} (the number of class_names)"
        )
    data = Path(run_dir) / DATA_FILE
    if data.is_file():
        run_names = read_data_record(run_dir)["class_names"]
        if names != run_names:
            raise _bad(
                path, "class_names", names, f"this run's classes {run_names} (it is another run's)"
            )


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
#: How predictions files write a probability: 9 significant digits give back the float32
#: value exactly, so a row read again sums to 1 as the model's did (with 6, a float64 reader
#: found rows 2e-6 off, past the 1e-6 that the distribution measures accept in float64).
PROBABILITY_FORMAT = ".9g"


def predictions_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Predictions (one mapping per sample) as CSV text; floats with
    :data:`PROBABILITY_FORMAT`.

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
                {
                    k: (format(v, PROBABILITY_FORMAT) if isinstance(v, float) else v)
                    for k, v in row.items()
                }
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
        row.extend(format(float(p), PROBABILITY_FORMAT) for p in probs[i])
        if target_probs is not None:
            row.extend(format(float(p), PROBABILITY_FORMAT) for p in target_probs[i])
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


def read_distributions(
    run_dir: str | os.PathLike[str],
) -> tuple[list[str], list[str], np.ndarray, np.ndarray] | None:
    """The predicted and target distributions of a run's test set, from
    ``predictions_test.csv`` (runs on distribution targets write ``target_prob_<class>``).

    Returns
    -------
    (class_names, ids, probs, target_probs) or None
        ``probs`` and ``target_probs`` float arrays (N, C); ``None`` when the run has no
        (readable) distribution columns.
    """
    import numpy as np

    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        names = [f.removeprefix("target_prob_") for f in fields if f.startswith("target_prob_")]
        if not names or any(f"prob_{name}" not in fields for name in names):
            return None
        try:
            rows = [
                (
                    row["id"],
                    [float(row[f"prob_{n}"]) for n in names],
                    [float(row[f"target_prob_{n}"]) for n in names],
                )
                for row in reader
            ]
        except (KeyError, TypeError, ValueError):
            return None
    if not rows:
        return None
    probs = np.array([r[1] for r in rows], dtype=np.float64)
    targets = np.array([r[2] for r in rows], dtype=np.float64)
    return names, [r[0] for r in rows], probs, targets


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
    if not zipfile.is_zipfile(file):  # what torch.save writes; anything else is not ours
        raise UserError(
            f"cannot read checkpoint {file}: truncated or corrupt, or not a checkpoint (not the "
            "zip archive torch.save writes)"
        )
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"refusing to load {file}: it holds objects that are not plain data ({first[:200]})"
        ) from None
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        IndexError,
        KeyError,
        struct.error,
        UnicodeDecodeError,
    ) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot read checkpoint {file}: truncated or corrupt ({first})") from None
    _check_checkpoint(loaded, file)
    return loaded


def _check_checkpoint(loaded: Any, file: Path) -> None:
    """A checkpoint a run writes: ``epoch`` (int >= 0) and ``state_dict`` (names to finite
    tensors)."""
    import torch

    if not isinstance(loaded, dict) or "state_dict" not in loaded:
        raise UserError(f"{file} is not an emdloss checkpoint (no state_dict)")
    epoch = loaded.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise _bad(file, "epoch", epoch, "an integer >= 0")
    state = loaded["state_dict"]
    if not isinstance(state, dict) or not state:
        raise _bad(file, "state_dict", type(state).__name__, "a mapping of weights")
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise _bad(file, f"state_dict[{name!r}]", type(tensor).__name__, "a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(
                f"{file}: weight {name!r} holds NaN or infinite values; the checkpoint is "
                "damaged (or the run diverged): train the run again"
            )


def load_weights(module: Any, checkpoint: Mapping[str, Any], file: Any = BEST_CHECKPOINT) -> None:
    """Load ``checkpoint["state_dict"]`` into ``module`` (strict), naming what does not fit.

    Raises
    ------
    UserError
        Listing the missing and unexpected weights, or the first one whose shape differs (a
        checkpoint of another run or another emdloss version).
    """
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        detail = detail.split("state_dict for ", 1)[-1]
        raise UserError(
            f"checkpoint {file} does not fit the run's model ({detail[:300]}); it belongs to "
            "another run or version"
        ) from None
