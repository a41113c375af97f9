"""Building blocks shared by train and evaluate: data, the task, the data module, the trainer."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from emdloss.errors import UserError
from emdloss.training._distributed import apply_timeout, strategy_with_timeout
from emdloss.training._io import AtomicCheckpointIO
from emdloss.training._loss_base import refuse_distribution_targets
from emdloss.training._progress import EpochProgressBar
from emdloss.training.config import TrainConfig
from emdloss.training.datamodule import OrdinalDataModule
from emdloss.training.losses import build_loss
from emdloss.training.module import OrdinalTask

__all__ = [
    "build_task",
    "default_model",
    "evaluate_checkpoint",
    "finished_run_config",
    "ignore_expected_warnings",
    "load_data",
    "make_datamodule",
    "make_trainer",
    "quiet_lightning_logs",
    "without_cuda_probe",
]


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
    from emdloss.data import limit_split, load_dataset

    options = dict(config.data_options)
    if config.target is not None:
        options["target"] = config.target
    if config.classes is not None:
        options["classes"] = ",".join(config.classes)
    try:
        dataset = load_dataset(
            config.dataset,
            data_dir=config.data_dir,
            seed=config.seed,
            fold=config.fold,
            num_folds=config.num_folds,
            **options,
        )
    except UserError:
        raise
    except ValueError as error:
        # The loaders' ValueErrors are about the user's data and options (names, cells, splits).
        raise UserError(f"--dataset {config.dataset}: {error}") from error
    for stream, (part, limit) in enumerate(
        (("train", config.limit_train), ("val", config.limit_val), ("test", config.limit_test))
    ):
        split = getattr(dataset, part)
        setattr(dataset, part, limit_split(split, limit, seed=config.seed, stream=50 + stream))
    if not config.soft_targets:
        # Hard labels for every loss: the soft distributions are dropped before any loss sees them.
        for part in ("train", "val", "test"):
            getattr(dataset, part).dists = None
    for part in ("train", "val", "test"):
        if len(getattr(dataset, part)) == 0:
            raise UserError(f"--dataset {config.dataset}: the {part} split is empty")
    return dataset


def finished_run_config(
    path: Path, *, data_dir: str | None = None, accelerator: str | None = None
) -> TrainConfig:
    """The recorded config of the run in ``path``, to be read again (never resumed), with the
    data directory and accelerator a later command may override.

    ``data_dir`` is where the data lives now: the built-in data sets' directory, and for a run
    on a file (``csv:``, ``ldl:``, ``images:``, ``folder:``, recorded by its absolute path)
    whose recorded path is gone, the same name in ``data_dir`` (the data moved; the reloaded
    data is still checked against ``data.json``).
    """
    from emdloss.training import rundir

    config = rundir.read_config(path)
    overrides: dict[str, Any] = {"output": str(path), "resume": False}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
        prefix, sep, recorded = config.dataset.partition(":")
        moved = Path(data_dir).expanduser() / Path(recorded).name
        on_file = sep and prefix in ("csv", "folder", "images", "ldl")
        if on_file and not Path(recorded).exists() and moved.exists():
            overrides["dataset"] = f"{prefix}:{moved.resolve()}"
    if accelerator is not None:
        overrides["accelerator"] = accelerator
    return TrainConfig.from_dict(overrides, base=config)


@contextlib.contextmanager
def opened_run(
    config: TrainConfig,
) -> Iterator[Any]:
    """Load a finished run's data under its recorded implementation and thread setting.

    Yields the dataset; the loss implementation, the torch threads and the warning filters of
    evaluation hold inside the block (the one way evaluate, calibrate and the deferred test
    reopen a run).
    """
    from emdloss import _ordinal
    from emdloss.training import rundir
    from emdloss.training._context import kept_threads, use_threads

    with warnings.catch_warnings():
        ignore_expected_warnings()
        with _ordinal.implementation(config.implementation), kept_threads():
            dataset = load_data(config)
            rundir.check_same_data(config.run_dir, dataset)
            use_threads(config, config.model or default_model(dataset))
            yield dataset


def default_model(dataset: Any) -> str:
    """The network used when ``--model`` is not given: mlp for tables, cnn/resnet18 for images."""
    if dataset.kind == "tabular":
        return "mlp"
    side = int(dataset.input_shape[-1])
    return "cnn" if side <= 64 else "resnet18"


def _load_matrix(path: str, num_classes: int) -> Tensor:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--ground-matrix file not found: {file}")
    try:
        if file.suffix == ".npy":
            values = np.load(file, allow_pickle=False)  # never unpickle objects from a file
        else:
            delimiter = "," if file.suffix == ".csv" else None
            values = np.loadtxt(file, delimiter=delimiter, ndmin=2)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read --ground-matrix {file}: {error}") from None
    if values.shape != (num_classes, num_classes):
        raise UserError(
            f"--ground-matrix {file} has shape {values.shape}; expected ({num_classes}, "
            f"{num_classes}) for the {num_classes} classes"
        )
    return torch.as_tensor(values, dtype=torch.float32)


@contextlib.contextmanager
def _user_options(what: str) -> Iterator[None]:
    # The registries raise ValueError/TypeError for unknown names and bad --*-option values.
    try:
        yield
    except UserError:
        raise
    except (ValueError, TypeError) as error:
        raise UserError(f"{what}: {error}") from error
    except ImportError as error:
        if "pip install" not in str(error):  # not a missing optional extra: a bug
            raise
        raise UserError(f"{what}: {error}") from error


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
    from emdloss.models import OrdinalEnsemble, build_model

    num_classes = dataset.num_classes
    matrix = None
    if config.ground_matrix is not None:
        if config.loss != "ground":
            raise UserError(f"--ground-matrix only applies to --loss ground, not {config.loss!r}")
        matrix = _load_matrix(config.ground_matrix, num_classes)
    with _user_options(f"--loss {config.loss}"):
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
    distribution = bool(getattr(dataset, "distribution_targets", False))
    if distribution:
        refuse_distribution_targets(loss, config.dataset)
    model_name = config.model or default_model(dataset)
    with _user_options(f"--model {model_name}"):
        members = [
            build_model(
                model_name,
                num_outputs=loss.num_outputs,
                input_shape=tuple(dataset.input_shape),
                pretrained=config.pretrained,
                **config.model_options,
            )
            for _ in range(config.ensemble)
        ]
    model = members[0] if len(members) == 1 else OrdinalEnsemble(members)
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
        config=config,
        tta=config.tta and image,
        input_mean=dataset.mean if image and dataset.mean is not None else None,
        input_std=dataset.std if image and dataset.std is not None else None,
        distribution=distribution,
    )


def make_datamodule(config: TrainConfig, dataset: Any) -> OrdinalDataModule:
    """The data module of ``dataset`` with the batch size, seed and workers of ``config``, and
    the training items' vote counts as sampling weights with ``vote_weights``."""
    weights = None
    if config.vote_weights:
        weights = getattr(dataset.train, "votes", None)
        if weights is None or not getattr(dataset, "distribution_targets", False):
            raise UserError(
                f"--vote-weights needs vote counts; the targets of {config.dataset} are "
                "class labels or proportions without counts"
            )
    return OrdinalDataModule(
        dataset.train,
        dataset.val,
        dataset.test,
        batch_size=config.batch_size,
        seed=config.seed,
        num_workers=config.num_workers,
        weights=weights,
    )


def quiet_lightning_logs() -> None:
    """Hide Lightning's hardware banner and tips (the CLI calls this; they drown the bars)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def ignore_expected_warnings() -> None:
    """Silence warnings that are expected in every run (call inside ``catch_warnings``)."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # Logged values are already reduced across processes by the torchmetrics metrics.
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed.*")
    # Expected when resuming: the directory holds the run's own checkpoints.
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")


def make_trainer(
    config: TrainConfig,
    run_dir: Path,
    callbacks: list[Callback],
    *,
    fitting: bool,
    progress: bool,
) -> pl.Trainer:
    """A Lightning trainer for fitting (``config``'s devices) or for evaluation (one device)."""
    all_callbacks = list(callbacks)
    if progress:
        all_callbacks.append(EpochProgressBar(refresh_rate=1))
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
            # torch's default collective timeout is 30 minutes: a stopped process would freeze
            # its partners that long.
            strategy=strategy_with_timeout(config.strategy, config.dist_timeout),
            num_nodes=config.num_nodes,
            enable_checkpointing=True,
        )
    else:
        # Evaluation runs in one process so that per-sample outputs stay in this process.
        kwargs.update(devices=1, strategy="auto", num_nodes=1, enable_checkpointing=False)
    try:
        trainer = pl.Trainer(**kwargs)
    except (MisconfigurationException, ValueError) as error:
        # Lightning's answer to a bad --accelerator, --devices, --precision or --strategy (its
        # other arguments are emdloss's own).
        raise UserError(str(error)) from error
    if fitting:
        apply_timeout(trainer, config.dist_timeout)  # a DDP strategy that "auto" chose
    return trainer


#: Set by ``import lightning`` so that CUDA checks do not poison forks; with torch 2.14 each
#: ``torch.cuda.is_available()`` then tries to load the NVIDIA driver library, twice per
#: optimiser step (issue 20: 502 us against 222 us per step of a toy model).
_NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


@contextlib.contextmanager
def without_cuda_probe(trainer: pl.Trainer) -> Iterator[None]:
    """On a CPU trainer, leave out Lightning's NVML-based CUDA check inside the block.

    The check only keeps a CUDA driver out of the processes that fork; a CPU run uses none.
    """
    from lightning.pytorch.accelerators import CPUAccelerator

    value = os.environ.get(_NVML_CHECK)
    if value is None or not isinstance(trainer.accelerator, CPUAccelerator):
        yield
        return
    del os.environ[_NVML_CHECK]
    try:
        yield
    finally:
        os.environ[_NVML_CHECK] = value


def evaluate_checkpoint(
    config: TrainConfig,
    dataset: Any,
    checkpoint: dict[str, Any],
    *,
    progress: bool,
    splits: tuple[str, ...] = ("val", "test"),
    task: OrdinalTask | None = None,
    datamodule: OrdinalDataModule | None = None,
) -> tuple[dict[str, Any], OrdinalTask]:
    """Metrics of ``checkpoint`` on ``splits`` (validation and test by default), and the task
    that holds its test outputs when the test split is among them.

    ``task`` and ``datamodule``: those of the training that wrote the checkpoint (``train``
    passes them, so a run builds its network and data module once); the checkpoint's weights
    and buffers replace the task's. Else both are built. The trainer is always a new one:
    evaluation runs in one process, whatever devices the training used.
    """
    from emdloss.training import rundir

    task = build_task(config, dataset) if task is None else task
    rundir.load_weights(task, checkpoint)
    task.on_load_checkpoint(checkpoint)
    trainer = make_trainer(config, config.run_dir, [], fitting=False, progress=progress)
    datamodule = make_datamodule(config, dataset) if datamodule is None else datamodule
    metrics: dict[str, Any] = {}
    with without_cuda_probe(trainer):
        if "val" in splits:
            trainer.validate(task, datamodule=datamodule, verbose=False)
            metrics["val"] = task.results["val"]
        if "test" in splits:
            trainer.test(task, datamodule=datamodule, verbose=False)
            metrics["test"] = task.results["test"]
    if task.distribution:
        # The distribution measures of the same splits (keys named after the measures).
        metrics["distribution"] = {part: task.distribution_results[part] for part in splits}
    return metrics, task
