"""Training runs: :func:`train` writes a run directory, :func:`evaluate` and :func:`predict` read one.

A run directory holds::

    config.yaml              the resolved TrainConfig
    data.json                classes, input shape and the input encoding (for predict)
    metrics.json             validation and test metrics per prediction rule, best epoch, ...
    history.csv              one row per epoch: lr, train loss, validation loss and metrics
    predictions_test.csv     per test sample: true class, probabilities, prediction per rule
    checkpoints/last.ckpt    end of the latest epoch (resume from here)
    checkpoints/best.ckpt    best validation score (evaluated once on the test split)
    learning_curves.png, confusion_matrix.png, ground_distance.png (when the loss has one)
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from torch import Tensor

from emdloss.decoding import RULES
from emdloss.training._io import AtomicCheckpointIO, atomic_write, write_json, write_text
from emdloss.training.config import RESUMABLE_CHANGES, TrainConfig
from emdloss.training.datamodule import OrdinalDataModule
from emdloss.training.losses import build_loss
from emdloss.training.module import SELECT_KEY, OrdinalTask

__all__ = ["RunResult", "evaluate", "load_task", "predict", "train"]

CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
PREDICTIONS_FILE = "predictions_test.csv"
CHECKPOINT_DIR = "checkpoints"
RUN_FILES = (
    CONFIG_FILE,
    DATA_FILE,
    METRICS_FILE,
    HISTORY_FILE,
    PREDICTIONS_FILE,
    "learning_curves.png",
    "confusion_matrix.png",
    "ground_distance.png",
)


@dataclass
class RunResult:
    """What :func:`train` returns.

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


# ---------------------------------------------------------------------------- building blocks
def load_data(config: TrainConfig) -> Any:
    """Load the dataset of ``config`` and apply the ``limit_*`` options.

    Parameters
    ----------
    config : TrainConfig
        Run configuration.

    Returns
    -------
    emdloss.data.OrdinalDataset
    """
    from emdloss.data import load_dataset

    options = dict(config.data_options)
    if config.target is not None:
        options["target"] = config.target
    if config.classes is not None:
        options["classes"] = ",".join(config.classes)
    dataset = load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        seed=config.seed,
        fold=config.fold,
        num_folds=config.num_folds,
        **options,
    )
    for stream, (part, limit) in enumerate(
        (("train", config.limit_train), ("val", config.limit_val), ("test", config.limit_test))
    ):
        setattr(dataset, part, _limit(getattr(dataset, part), limit, config.seed, stream))
    for part in ("train", "val", "test"):
        if len(getattr(dataset, part)) == 0:
            raise ValueError(f"dataset {config.dataset!r} has an empty {part} split")
    return dataset


def _limit(split: Any, limit: int | None, seed: int, stream: int) -> Any:
    # A stratified subset, so that small slices still hold every class.
    if limit is None or limit >= len(split):
        return split
    from emdloss.data import SubsetSplit, stratified_split

    _, chosen = stratified_split(split.targets, limit / len(split), seed=seed, stream=50 + stream)
    return SubsetSplit(split, chosen)


def _default_model(dataset: Any) -> str:
    if dataset.kind == "tabular":
        return "mlp"
    side = int(dataset.input_shape[-1])
    return "cnn" if side <= 64 else "resnet18"


def _load_matrix(path: str, num_classes: int) -> Tensor:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"ground_matrix file not found: {file}")
    try:
        if file.suffix == ".npy":
            values = np.load(file)
        else:
            delimiter = "," if file.suffix == ".csv" else None
            values = np.loadtxt(file, delimiter=delimiter, ndmin=2)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read ground_matrix {file}: {error}") from None
    if values.shape != (num_classes, num_classes):
        raise ValueError(
            f"ground_matrix {file} has shape {values.shape}; expected ({num_classes}, "
            f"{num_classes}) for the {num_classes} classes"
        )
    return torch.as_tensor(values, dtype=torch.float32)


def build_task(config: TrainConfig, dataset: Any) -> OrdinalTask:
    """The :class:`OrdinalTask` of ``config`` for ``dataset`` (fresh weights).

    Parameters
    ----------
    config : TrainConfig
        Run configuration.
    dataset : emdloss.data.OrdinalDataset
        The data (classes, input shape, positions).

    Returns
    -------
    OrdinalTask
    """
    from emdloss.models import build_model

    num_classes = dataset.num_classes
    matrix = None
    if config.ground_matrix is not None:
        if config.loss != "ground":
            raise ValueError(f"ground_matrix only applies to loss 'ground', not {config.loss!r}")
        matrix = _load_matrix(config.ground_matrix, num_classes)
    loss = build_loss(
        config.loss,
        num_classes,
        positions=dataset.positions,
        ground_distance=matrix,
        ground_power=config.ground_power,
        train_targets=torch.as_tensor(np.asarray(dataset.train.targets)),
        warmup_epochs=config.warmup_epochs,
        ce_weight=config.ce_weight,
        emd_weight=config.emd_weight,
        **config.loss_options,
    )
    model = build_model(
        config.model or _default_model(dataset),
        num_outputs=loss.num_outputs,
        input_shape=tuple(dataset.input_shape),
        pretrained=config.pretrained,
        **config.model_options,
    )
    # The bayes rule needs a decision cost: the given matrix, else |x_i - x_j|. The learned
    # matrix is a training surrogate (negative entries, diagonal 1), not a decision cost.
    decision_cost = matrix
    image = dataset.kind == "image"
    return OrdinalTask(
        model,
        loss,
        num_classes=num_classes,
        positions=dataset.positions,
        decision_cost=decision_cost,
        optimizer=config.optimizer,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        scheduler=config.scheduler,
        lr_decay=config.lr_decay,
        epochs=config.epochs,
        seed=config.seed,
        monitor_rule=config.monitor_rule,
        monitor=config.monitor,
        monitor_mode=config.monitor_mode(),
        tta=config.tta and image,
        input_mean=dataset.mean if image and dataset.mean is not None else None,
        input_std=dataset.std if image and dataset.std is not None else None,
    )


def _datamodule(config: TrainConfig, dataset: Any) -> OrdinalDataModule:
    return OrdinalDataModule(
        dataset.train,
        dataset.val,
        dataset.test,
        batch_size=config.batch_size,
        seed=config.seed,
        num_workers=config.num_workers,
    )


def quiet_lightning_logs() -> None:
    """Hide Lightning's hardware banner and tips (the CLI calls this; they drown the bars)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _ignore_expected_warnings() -> None:
    # Called inside warnings.catch_warnings(), so the caller's filters are left alone.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # Logged values are already reduced across processes by the torchmetrics metrics.
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed.*")
    # Expected when resuming: the directory holds the run's own checkpoints.
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")


def _trainer(
    config: TrainConfig,
    run_dir: Path,
    callbacks: list[Callback],
    *,
    fitting: bool,
    progress: bool,
) -> pl.Trainer:
    all_callbacks = list(callbacks)
    if progress:
        all_callbacks.append(TQDMProgressBar(refresh_rate=1))
    kwargs: dict[str, Any] = {
        "accelerator": config.accelerator,
        "precision": config.precision,
        "deterministic": "warn" if config.deterministic else False,
        "callbacks": all_callbacks,
        "enable_progress_bar": progress,
        "enable_model_summary": False,
        "logger": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(run_dir),
        "use_distributed_sampler": False,
        "plugins": [AtomicCheckpointIO()],
    }
    if fitting:
        kwargs.update(
            max_epochs=config.epochs,
            devices=config.devices,
            strategy=config.strategy,
            num_nodes=config.num_nodes,
            enable_checkpointing=True,
        )
    else:
        # Evaluation runs in one process so that per-sample outputs stay in this process.
        kwargs.update(devices=1, strategy="auto", num_nodes=1, enable_checkpointing=False)
    return pl.Trainer(**kwargs)


# ---------------------------------------------------------------------------- train
def _launched_secondary() -> bool:
    """Whether this process is a non-zero rank started by a DDP launcher (Lightning's ``ddp``
    strategy, torchrun, SLURM): it runs the same command but must leave the run directory to
    rank 0."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key]) != 0
    return any(
        os.environ.get(key, "0").isdigit() and int(os.environ.get(key, "0")) != 0
        for key in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
    )


def _prepare_run_dir(config: TrainConfig) -> tuple[TrainConfig, Path, Path | None]:
    run_dir = config.run_dir
    saved_path = run_dir / CONFIG_FILE
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if _launched_secondary():
        return config, run_dir, last if config.resume and last.is_file() else None
    if saved_path.is_file() and config.resume:
        saved = TrainConfig.from_yaml(saved_path)
        changed = [name for name in saved.differences(config) if name not in RESUMABLE_CHANGES]
        if changed:
            details = ", ".join(
                f"{name}: {getattr(saved, name)!r} -> {getattr(config, name)!r}" for name in changed
            )
            raise ValueError(
                f"cannot resume {run_dir}: options differ from the saved run ({details}); "
                "only " + ", ".join(sorted(RESUMABLE_CHANGES)) + " may change"
            )
        return config, run_dir, last if last.is_file() else None
    if saved_path.is_file() or (run_dir / CHECKPOINT_DIR).is_dir():
        if not config.overwrite:
            raise ValueError(
                f"run directory {run_dir} already holds a run; use resume to continue it, "
                "overwrite to replace it, or choose another output"
            )
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    return config, run_dir, None


def train(config: TrainConfig, *, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Train, select on validation data, test the best checkpoint once, write the run directory.

    Parameters
    ----------
    config : TrainConfig
        Run configuration (``config.resume`` continues from ``checkpoints/last.ckpt``).
    callbacks : sequence of lightning Callback, optional
        Extra callbacks for the training trainer.

    Returns
    -------
    RunResult

    Raises
    ------
    ValueError
        For bad options, unknown dataset/loss/model names, or a run directory that holds a
        different run.
    """
    with warnings.catch_warnings():
        _ignore_expected_warnings()
        return _train(config, callbacks)


def _train(config: TrainConfig, callbacks: Sequence[Callback]) -> RunResult:
    config, run_dir, ckpt_path = _prepare_run_dir(config)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dataset = load_data(config)
    task = build_task(config, dataset)
    datamodule = _datamodule(config, dataset)
    if not _launched_secondary():
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / CONFIG_FILE)
        write_json(run_dir / DATA_FILE, _data_record(dataset))

    # Two callbacks: Lightning 2.6 writes "last" only in epochs that also wrote a top-k file.
    # "best" comes first so that last.ckpt holds the updated best score (exact resumes).
    best_checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / CHECKPOINT_DIR),
        filename="best",
        monitor=SELECT_KEY,
        mode=config.monitor_mode(),
        save_top_k=1,
        save_last=False,
        save_on_train_epoch_end=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last_checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / CHECKPOINT_DIR),
        filename="last",
        monitor=None,
        save_top_k=1,
        save_last=False,
        save_on_train_epoch_end=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    trainer = _trainer(
        config,
        run_dir,
        [best_checkpoint, last_checkpoint, *callbacks],
        fitting=True,
        progress=config.progress,
    )
    trainer.fit(task, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    rank = trainer.global_rank
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if rank != 0:
        return RunResult(run_dir, config)

    best_path = run_dir / CHECKPOINT_DIR / "best.ckpt"
    last_path = run_dir / CHECKPOINT_DIR / "last.ckpt"
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    last = torch.load(last_path, map_location="cpu", weights_only=False)
    history: list[dict[str, float]] = last.get("emdloss_history", [])
    metrics, eval_task = _evaluate_checkpoint(config, dataset, best, progress=config.progress)
    best_epoch = int(best["epoch"]) + 1
    train_seconds = float(sum(row.get("epoch_seconds", 0.0) for row in history))
    metrics = {
        "dataset": config.dataset,
        "loss": config.loss,
        "model": config.model or _default_model(dataset),
        "seed": config.seed,
        "best_epoch": best_epoch,
        "epochs": len(history),
        "train_seconds": train_seconds,
        "monitor": f"val_{config.monitor}",
        "monitor_rule": config.monitor_rule,
        "class_names": list(dataset.class_names),
        **metrics,
    }
    _write_history(run_dir / HISTORY_FILE, history)
    _write_predictions(run_dir / PREDICTIONS_FILE, eval_task, dataset)
    _write_plots(run_dir, eval_task, dataset, history)
    # Last: a complete metrics.json marks a finished run (compare skips those on resume).
    write_json(run_dir / METRICS_FILE, metrics)
    return RunResult(run_dir, config, metrics, best_epoch, train_seconds)


def _evaluate_checkpoint(
    config: TrainConfig, dataset: Any, checkpoint: dict[str, Any], *, progress: bool
) -> tuple[dict[str, Any], OrdinalTask]:
    task = build_task(config, dataset)
    task.load_state_dict(checkpoint["state_dict"])
    task.on_load_checkpoint(checkpoint)
    trainer = _trainer(config, config.run_dir, [], fitting=False, progress=progress)
    datamodule = _datamodule(config, dataset)
    trainer.validate(task, datamodule=datamodule, verbose=False)
    val = task.results["val"]
    trainer.test(task, datamodule=datamodule, verbose=False)
    return {"val": val, "test": task.results["test"]}, task


def _data_record(dataset: Any) -> dict[str, Any]:
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


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in history:
        keys.extend(key for key in row if key not in keys)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys or ["epoch"], lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({**row, "epoch": int(row["epoch"]) + 1})
    write_text(path, buffer.getvalue())


def _prediction_rows(
    task: OrdinalTask, probs: Tensor, class_names: Sequence[str]
) -> tuple[list[str], list[list[Any]]]:
    decoded = task.decode_all(probs)
    header = [f"prob_{name}" for name in class_names] + [f"pred_{rule}" for rule in RULES]
    rows = []
    for i in range(probs.shape[0]):
        row: list[Any] = [f"{float(p):.6g}" for p in probs[i]]
        row.extend(int(decoded[rule][i]) for rule in RULES)
        rows.append(row)
    return header, rows


def _write_predictions(path: Path, task: OrdinalTask, dataset: Any) -> None:
    probs = torch.cat([p for p, _ in task.test_outputs]) if task.test_outputs else torch.zeros(0)
    targets = torch.cat([t for _, t in task.test_outputs]).tolist() if task.test_outputs else []
    header, rows = _prediction_rows(task, probs, dataset.class_names)
    ids = list(getattr(dataset.test, "ids", range(len(targets))))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "id", "target", "target_name", *header])
    for i, (target, row) in enumerate(zip(targets, rows, strict=True)):
        writer.writerow([i, ids[i], target, dataset.class_names[target], *row])
    write_text(path, buffer.getvalue())


def _write_plots(
    run_dir: Path, task: OrdinalTask, dataset: Any, history: list[dict[str, float]]
) -> None:
    from emdloss.plots import plot_confusion_matrix, plot_ground_distance, plot_learning_curves

    names = list(dataset.class_names)
    series = {}
    for key in ("train_loss", "val_loss", "val_mae", "val_qwk", "val_accuracy"):
        values = [row.get(key, math.nan) for row in history]
        if values:
            series[key] = values
    if series:
        plot_learning_curves(series, run_dir / "learning_curves.png")
    probs = torch.cat([p for p, _ in task.test_outputs])
    targets = torch.cat([t for _, t in task.test_outputs])
    preds = task.decode_all(probs)["argmax"]
    c = dataset.num_classes
    confusion = torch.bincount(targets * c + preds, minlength=c * c).reshape(c, c)
    plot_confusion_matrix(
        confusion.numpy(), names, run_dir / "confusion_matrix.png", title="Test (argmax)"
    )
    matrix = task.criterion.ground_distance()
    if matrix is not None:
        plot_ground_distance(matrix, names, run_dir / "ground_distance.png")


# ---------------------------------------------------------------------------- evaluate
def _read_config(run_dir: str | os.PathLike[str]) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {CONFIG_FILE} not found")
    return TrainConfig.from_yaml(path)


def _checkpoint(run_dir: Path, name: str = "best.ckpt") -> dict[str, Any]:
    path = run_dir / CHECKPOINT_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path}: the run has not finished an epoch")
    loaded: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return loaded


def evaluate(
    run_dir: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    progress: bool = True,
    accelerator: str | None = None,
) -> dict[str, Any]:
    """Re-evaluate the best checkpoint of a run on its validation and test splits.

    Nothing in the run directory is written.

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
        ``{"val": {rule: metrics}, "test": {rule: metrics}, "best_epoch": int}``.
    """
    with warnings.catch_warnings():
        _ignore_expected_warnings()
        return _evaluate(Path(run_dir), data_dir, progress, accelerator)


def _evaluate(
    path: Path, data_dir: str | None, progress: bool, accelerator: str | None
) -> dict[str, Any]:
    config = _read_config(path)
    overrides: dict[str, Any] = {"output": str(path), "resume": False}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if accelerator is not None:
        overrides["accelerator"] = accelerator
    config = TrainConfig.from_dict(overrides, base=config)
    dataset = load_data(config)
    best = _checkpoint(path)
    metrics, _ = _evaluate_checkpoint(config, dataset, best, progress=progress)
    return {"best_epoch": int(best["epoch"]) + 1, **metrics}


# ---------------------------------------------------------------------------- predict
def load_task(run_dir: str | os.PathLike[str]) -> tuple[OrdinalTask, dict[str, Any]]:
    """The best checkpoint of a run as an :class:`OrdinalTask` in eval mode, and its data record.

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
    config = _read_config(path)
    record_path = path / DATA_FILE
    if not record_path.is_file():
        raise FileNotFoundError(f"{record_path} not found; the run directory is incomplete")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    stub = _DatasetStub(record)
    task = build_task(config, stub)
    best = _checkpoint(path)
    task.load_state_dict(best["state_dict"])
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


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _table_inputs(path: Path, table: dict[str, Any]) -> tuple[list[str], Tensor]:
    """Encode the rows of a CSV exactly as the training rows were encoded."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = [cell.strip() for cell in next(reader)]
        except StopIteration:
            raise ValueError(f"{path} is empty") from None
        rows = [(n + 2, row) for n, row in enumerate(reader) if any(c.strip() for c in row)]
    numeric, categorical = table["numeric_columns"], table["categorical_columns"]
    needed = list(numeric) + list(categorical)
    missing = [name for name in needed if name not in header]
    if missing:
        raise ValueError(
            f"{path} lacks the column(s) {', '.join(missing)} the model was trained on; "
            f"expected columns: {', '.join(needed)}"
        )
    mean = np.asarray(table["feature_mean"], dtype=np.float64)
    scale = np.asarray(table["feature_scale"], dtype=np.float64)
    ids, encoded = [], []
    for line, row in rows:
        if len(row) != len(header):
            raise ValueError(f"{path}, line {line}: {len(row)} fields, expected {len(header)}")
        values = []
        for name in numeric:
            cell = row[header.index(name)].strip()
            try:
                number = float(cell)
            except ValueError:
                raise ValueError(
                    f"{path}, line {line}: column {name!r} holds {cell!r}, expected a number"
                ) from None
            if not math.isfinite(number):
                raise ValueError(f"{path}, line {line}: column {name!r} holds {cell!r}")
            values.append(number)
        vector = list((np.asarray(values) - mean) / scale) if numeric else []
        for name in categorical:
            cell = row[header.index(name)].strip()
            vector.extend(1.0 if cell == seen else 0.0 for seen in table["categories"][name])
        ids.append(f"line {line}")
        encoded.append(vector)
    if not encoded:
        raise ValueError(f"{path} has no data rows")
    return ids, torch.tensor(np.asarray(encoded), dtype=torch.float32)


def _image_inputs(paths: Sequence[Path], shape: Sequence[int]) -> tuple[list[str], Tensor]:
    from emdloss.data import load_image

    images = torch.stack([load_image(p, int(shape[-1])) for p in paths])
    if shape[0] == 1:  # a model trained on grey images
        images = images.mean(dim=1, keepdim=True)
    return [str(p) for p in paths], images


def _expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"no image files found under {path}")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    if not paths:
        raise ValueError("no inputs given")
    return paths


def predict(
    run_dir: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    output: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Predict the classes of new inputs with the best checkpoint of a run.

    Parameters
    ----------
    run_dir : path-like
        A run directory.
    inputs : sequence of path-like
        Image files or folders of images (image runs), or CSV files of rows with the training
        feature columns (tabular runs; other columns are ignored).
    output : path-like, optional
        Write the predictions as CSV there (atomically).
    batch_size : int
        Inference batch size.

    Returns
    -------
    list of dict
        One per input: ``id``, ``prob_<class>`` per class, ``pred_<rule>`` (class name) per rule.
    """
    task, record = load_task(run_dir)
    paths = _expand_inputs(inputs)
    names = record["class_names"]
    if record["kind"] == "tabular":
        bad = [p for p in paths if p.suffix.lower() != ".csv"]
        if bad:
            raise ValueError(f"a tabular run predicts from CSV files, got {bad[0]}")
        ids: list[str] = []
        xs: list[Tensor] = []
        for path in paths:
            file_ids, x = _table_inputs(path, record["table"])
            ids.extend(f"{path}:{i}" if len(paths) > 1 else i for i in file_ids)
            xs.append(x)
        x_all = torch.cat(xs)
    else:
        bad = [p for p in paths if p.suffix.lower() not in _IMAGE_SUFFIXES]
        if bad:
            raise ValueError(
                f"an image run predicts from image files ({', '.join(sorted(_IMAGE_SUFFIXES))}), "
                f"got {bad[0]}"
            )
        ids, x_all = _image_inputs(paths, record["input_shape"])
    expected = tuple(record["input_shape"])
    if tuple(x_all.shape[1:]) != expected:
        raise ValueError(
            f"inputs have shape {tuple(x_all.shape[1:])}, the model expects {expected}"
        )
    with torch.no_grad():
        probs = torch.cat([task.predict_proba(chunk) for chunk in x_all.split(batch_size)])
    decoded = task.decode_all(probs)
    results = []
    for i, sample in enumerate(ids):
        row: dict[str, Any] = {"id": sample}
        row.update({f"prob_{n}": float(probs[i, k]) for k, n in enumerate(names)})
        row.update({f"pred_{rule}": names[int(decoded[rule][i])] for rule in RULES})
        results.append(row)
    if output is not None:
        atomic_write(output, lambda handle: handle.write(predictions_csv(results).encode()))
    return results


def predictions_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Predictions of :func:`predict` as CSV text.

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
