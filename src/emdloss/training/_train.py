"""``train``: prepare the run directory (rank 0 only), fit, test the best checkpoint once, write
the run's files through :mod:`emdloss.training.rundir`."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from emdloss import _ordinal
from emdloss._atomic import remove_stale_temporaries
from emdloss.errors import RunInterrupted, UserError
from emdloss.training import rundir
from emdloss.training._build import (
    build_task,
    default_model,
    evaluate_checkpoint,
    finished_run_config,
    ignore_expected_warnings,
    load_data,
    make_datamodule,
    make_trainer,
    opened_run,
    without_cuda_probe,
)
from emdloss.training._checkpoint import RunCheckpoints
from emdloss.training._context import (
    announce_data,
    baseline_scores,
    describe_data,
    distribution_record,
    kept_threads,
    use_threads,
)
from emdloss.training._distributed import explain_timeouts
from emdloss.training.config import RESUMABLE_CHANGES, TrainConfig
from emdloss.training.module import SELECT_KEY, OrdinalTask

__all__ = ["launched_rank", "run_deferred_test", "train", "write_run_plots"]


def _int_env(environ: Mapping[str, str], key: str) -> int | None:
    value = environ.get(key, "").strip()
    return int(value) if value.isdigit() else None


def launched_rank(environ: Mapping[str, str] | None = None) -> int:
    """The global rank of this process inside a real distributed launch, else 0.

    Stray rank variables (``RANK=1`` left in a shell, ``SLURM_PROCID`` of an allocation that
    runs one task) must not make a single process think it is a secondary rank: that would skip
    the run-directory checks and overwrite a run. A launch is recognised only by what its
    launcher sets together: torchrun and Lightning's ``ddp`` launcher set ``WORLD_SIZE > 1``
    with ``MASTER_ADDR`` and ``MASTER_PORT``; ``srun`` sets ``SLURM_NTASKS > 1`` with
    ``SLURM_JOB_ID`` and ``SLURM_PROCID``.

    Examples
    --------
    >>> launched_rank({"RANK": "1"})
    0
    >>> launched_rank({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    1
    """
    env = os.environ if environ is None else environ
    world = _int_env(env, "WORLD_SIZE")
    if world is not None and world > 1 and env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        rank = _int_env(env, "RANK")
        if rank is not None:
            return rank
        # Lightning's ddp launcher: NODE_RANK and LOCAL_RANK, no RANK.
        node, local = _int_env(env, "NODE_RANK") or 0, _int_env(env, "LOCAL_RANK") or 0
        return 1 if node or local else 0
    tasks = _int_env(env, "SLURM_NTASKS")
    if tasks is not None and tasks > 1 and env.get("SLURM_JOB_ID"):
        return _int_env(env, "SLURM_PROCID") or 0
    return 0


def _absolute_paths(config: TrainConfig) -> TrainConfig:
    # config.yaml records absolute paths so that evaluate and predict work from any directory.
    updates: dict[str, Any] = {}
    if config.data_dir:
        updates["data_dir"] = os.path.abspath(os.path.expanduser(config.data_dir))
    if config.ground_matrix:
        updates["ground_matrix"] = os.path.abspath(os.path.expanduser(config.ground_matrix))
    prefix, sep, path = config.dataset.partition(":")
    if sep and path and prefix in ("csv", "folder", "images", "ldl"):
        updates["dataset"] = f"{prefix}:{os.path.abspath(os.path.expanduser(path))}"
    return TrainConfig.from_dict(updates, base=config) if updates else config


def _prepare_run_dir(config: TrainConfig) -> tuple[TrainConfig, Path, Path | None]:
    """Check the run directory (rank 0) and return the config, the directory and the resume
    checkpoint. Secondary ranks run after rank 0 has checked (they start later)."""
    config = _absolute_paths(config)
    run_dir = config.run_dir
    saved_path = run_dir / rundir.CONFIG_FILE
    last = run_dir / rundir.CHECKPOINT_DIR / rundir.LAST_CHECKPOINT
    if launched_rank() != 0:
        return config, run_dir, last if config.resume and last.is_file() else None
    if saved_path.is_file() and config.resume:
        saved = _absolute_paths(TrainConfig.from_yaml(saved_path))
        changed = [name for name in saved.differences(config) if name not in RESUMABLE_CHANGES]
        if changed:
            details = ", ".join(
                f"{name}: {getattr(saved, name)!r} -> {getattr(config, name)!r}" for name in changed
            )
            raise UserError(
                f"cannot resume {run_dir}: options differ from the saved run ({details}); "
                "only " + ", ".join(sorted(RESUMABLE_CHANGES)) + " may change"
            )
        return config, run_dir, last if last.is_file() else None
    if saved_path.is_file() or (run_dir / rundir.CHECKPOINT_DIR).is_dir():
        if not config.overwrite:
            raise UserError(
                f"run directory {run_dir} already holds a run; use resume to continue it, "
                "overwrite to replace it, or choose another output (--resume, --overwrite, "
                "--output)"
            )
        for name in rundir.RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / rundir.CHECKPOINT_DIR, ignore_errors=True)
    return config, run_dir, None


def train(config: TrainConfig, *, callbacks: Sequence[Callback] = ()) -> rundir.RunResult:
    """Train, select on validation data, test the best checkpoint once, write the run directory.

    The loss runs on ``config.implementation`` (recorded in ``config.yaml``; a resume uses the
    recorded one), so results do not depend on what the machine's kernel cache holds.

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
        different run (:class:`emdloss.errors.UserError` where the user can fix it).
    """
    with warnings.catch_warnings():
        ignore_expected_warnings()
        config, run_dir, ckpt_path = _prepare_run_dir(config)
        if ckpt_path is not None:
            # Refuse a checkpoint that is corrupt or holds more than plain data before Lightning
            # reads it (one clear error, whatever Lightning's own loader would do).
            if rundir.load_checkpoint(ckpt_path).get("emdloss_engine") == "grouped":
                raise UserError(
                    f"cannot resume {run_dir}: its checkpoint was written by compare's grouped "
                    "engine, which keeps no training-loop state; train it again (--overwrite)"
                )
            if launched_rank() == 0:
                # The temporaries of the write that the interruption cut short.
                remove_stale_temporaries(run_dir)
        try:
            with _ordinal.implementation(config.implementation), kept_threads():
                return _train(config, run_dir, ckpt_path, callbacks)
        except RunInterrupted:
            raise
        except KeyboardInterrupt:
            raise RunInterrupted(_interrupted(run_dir)) from None


def _interrupted(run_dir: Path) -> str:
    """What to say when Ctrl-C stops the run in ``run_dir``."""
    last = run_dir / rundir.CHECKPOINT_DIR / rundir.LAST_CHECKPOINT
    if last.is_file():
        kept = "its finished epochs are kept in checkpoints/last.ckpt"
    else:
        kept = "it had not finished an epoch"
    return f"run {run_dir} stopped ({kept}); continue it with: emdloss train --output {run_dir} --resume"


@contextlib.contextmanager
def _interrupts_as_keyboard_interrupt(trainer: pl.Trainer) -> Iterator[None]:
    """Lightning turns Ctrl-C into ``sys.exit(1)`` (and ignores SIGINT from then on): turn it
    back into a KeyboardInterrupt, and restore the SIGINT handler."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit as error:
        if error.code == 1 and trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)


def _train(
    config: TrainConfig, run_dir: Path, ckpt_path: Path | None, callbacks: Sequence[Callback]
) -> rundir.RunResult:
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dataset = load_data(config)
    threads = use_threads(config, config.model or default_model(dataset))
    task = build_task(config, dataset)
    datamodule = make_datamodule(config, dataset)
    # The trainer before anything is written: a bad --devices, --accelerator or --precision
    # leaves no run directory behind. The checkpoints of the best and of the latest epoch stay
    # in memory; best.ckpt and last.ckpt are written at an interval and at the end.
    checkpoints = RunCheckpoints(
        run_dir / rundir.CHECKPOINT_DIR, monitor=SELECT_KEY, mode=task.monitor_mode
    )
    trainer = make_trainer(
        config,
        run_dir,
        [checkpoints, *callbacks],
        fitting=True,
        progress=config.progress,
    )
    description = describe_data(config, dataset)
    if launched_rank() == 0:
        if ckpt_path is not None:
            rundir.check_same_data(run_dir, dataset)  # resumed on the data it started on
        else:
            # Before the first epoch: the features, classes, split sizes and warnings (issue
            # 10); a resumed run said it when it started (data.json keeps it either way).
            announce_data(description, verbose=config.progress)
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / rundir.CONFIG_FILE)
        rundir.write_data_record(run_dir, dataset, description=description)
    # A collective that waits past dist_timeout (a stopped or hung process) ends in one line.
    with (
        explain_timeouts(config.dist_timeout),
        _interrupts_as_keyboard_interrupt(trainer),
        without_cuda_probe(trainer),
    ):
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    rank = trainer.global_rank
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if rank != 0:
        return rundir.RunResult(run_dir, config)

    best = rundir.load_checkpoint(run_dir / rundir.CHECKPOINT_DIR / rundir.BEST_CHECKPOINT)
    last = rundir.load_checkpoint(run_dir / rundir.CHECKPOINT_DIR / rundir.LAST_CHECKPOINT)
    history: list[dict[str, float]] = last.get("emdloss_history", [])
    splits = ("val", "test") if config.evaluate_test else ("val",)
    metrics, eval_task = evaluate_checkpoint(
        config,
        dataset,
        best,
        progress=config.progress,
        splits=splits,
        task=task,
        datamodule=datamodule,
    )
    best_epoch = int(best["epoch"]) + 1
    return write_finished_run(config, dataset, threads, history, best_epoch, metrics, eval_task)


def write_finished_run(
    config: TrainConfig,
    dataset: Any,
    threads: int,
    history: list[dict[str, float]],
    best_epoch: int,
    evaluated: dict[str, Any],
    eval_task: OrdinalTask,
) -> rundir.RunResult:
    """Write a fitted run's files from its history and its best state's evaluation (``val``
    and, unless the test is deferred, ``test``): history, predictions, plots, ``metrics.json``
    last. The per-run path and the grouped engine (:mod:`emdloss.training.grouped`) share it."""
    run_dir = config.run_dir
    train_seconds = float(sum(row.get("epoch_seconds", 0.0) for row in history))
    metrics = {
        "dataset": config.dataset,
        "loss": config.loss,
        "model": config.model or default_model(dataset),
        "ensemble": config.ensemble,  # networks averaged (1: a single network)
        "seed": config.seed,
        "best_epoch": best_epoch,
        "epochs": len(history),
        "train_seconds": train_seconds,
        "monitor": f"val_{eval_task.monitor}",
        "monitor_rule": config.monitor_rule,
        "class_names": list(dataset.class_names),
        "threads": threads,
        **evaluated,
        # The constant predictors on the same splits: has the model learned anything?
        "baselines": baseline_scores(dataset),
        **distribution_record(dataset, config.distribution_monitor, baselines=config.ldl_baselines),
    }
    rundir.write_history(run_dir, history)
    if config.evaluate_test:
        _write_test_outputs(run_dir, eval_task, dataset, history, best_epoch, plots=config.plots)
    elif config.plots:  # the test split stays unread: learning curves and ground distance only
        _write_plots(
            run_dir, eval_task.criterion, dataset.class_names, history, None, None, best_epoch
        )
    # Last: a complete metrics.json marks a finished run (compare skips those on resume).
    rundir.write_metrics(run_dir, metrics)
    return rundir.RunResult(run_dir, config, metrics, best_epoch, train_seconds)


def run_deferred_test(
    run_dir: str | os.PathLike[str], *, data_dir: str | None = None, progress: bool = False
) -> dict[str, Any]:
    """Evaluate a run trained with ``evaluate_test=False`` on its test split, once.

    Writes what training writes when it tests (``predictions_test.csv``, the confusion matrix) and
    adds the ``"test"`` metrics to ``metrics.json`` (atomically, last). ``emdloss compare
    --grid`` calls it for the runs of the setting chosen on validation data only, so the test
    split of every other setting is never read.

    Parameters
    ----------
    run_dir : path-like
        A finished run directory (its ``metrics.json`` holds the validation metrics).
    data_dir : str, optional
        Where the data lives now (default: the run's).
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        The new content of ``metrics.json``.
    """
    path = Path(run_dir)
    content = rundir.read_metrics(path)
    if content is None or "val" not in content:
        raise UserError(f"{path} is not a finished run (no metrics.json with validation metrics)")
    config = finished_run_config(path, data_dir=data_dir)
    best = rundir.load_checkpoint(path / rundir.CHECKPOINT_DIR / rundir.BEST_CHECKPOINT)
    with opened_run(config) as dataset:
        metrics, task = evaluate_checkpoint(
            config, dataset, best, progress=progress, splits=("test",)
        )
    content["test"] = metrics["test"]
    if "distribution" in metrics:
        content.setdefault("distribution", {})["test"] = metrics["distribution"]["test"]
    best_epoch = int(content.get("best_epoch", int(best["epoch"]) + 1))
    history = rundir.read_history(path)
    _write_test_outputs(path, task, dataset, history, best_epoch, plots=config.plots)
    rundir.write_metrics(path, content)
    return content


def write_run_plots(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw the plots of a finished run from its files, as training draws them at its end.

    ``emdloss compare`` trains its runs with ``plots=False``; ``emdloss plot RUN_DIR`` and
    ``compare --plots runs`` draw them here from the run's files: the learning curves from
    ``history.csv``, the confusion matrix from ``predictions_test.csv`` (when the run was
    tested), a few test items' predicted and true distributions (distribution targets) and the
    learned ground distance from ``best.ckpt``. Each file is written
    atomically.

    Parameters
    ----------
    run_dir : path-like
        A finished run directory (its ``metrics.json`` names the best epoch).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    from emdloss.training._evaluate import load_task

    path = Path(run_dir)
    task, record = load_task(path)
    content = rundir.read_metrics(path) or {}
    predictions = rundir.read_predictions(path, "argmax")
    targets = preds = None
    if predictions is not None:
        targets, preds = (torch.as_tensor(values) for values in predictions)
    history = rundir.read_history(path)
    best_epoch = int(content.get("best_epoch", 0))
    written = _write_plots(
        path, task.criterion, record["class_names"], history, targets, preds, best_epoch
    )
    distributions = rundir.read_distributions(path)
    if distributions is not None:
        from emdloss.plots import plot_distributions

        names, ids, probs, target_probs = distributions
        written.append(path / rundir.PLOT_FILES[3])
        plot_distributions(probs, target_probs, names, written[-1], ids=ids)
    return written


def _write_test_outputs(
    run_dir: Path,
    task: OrdinalTask,
    dataset: Any,
    history: list[dict[str, float]],
    best_epoch: int,
    *,
    plots: bool,
) -> None:
    """``predictions.csv`` and (when ``plots``) the plots, from the test outputs of the task."""
    probs, targets = _test_outputs(task)
    decoded = task.decode_all(probs)
    ids = list(getattr(dataset.test, "ids", range(len(targets))))
    target_probs = torch.cat(task.test_targets) if task.test_targets else None
    rundir.write_predictions(
        run_dir, targets.tolist(), probs, decoded, dataset.class_names, ids, target_probs
    )
    if plots and target_probs is not None and len(target_probs):
        from emdloss.plots import plot_distributions

        plot_distributions(
            probs, target_probs, list(dataset.class_names), run_dir / rundir.PLOT_FILES[3], ids=ids
        )
    if plots:
        names = dataset.class_names
        _write_plots(
            run_dir, task.criterion, names, history, targets, decoded["argmax"], best_epoch
        )


def _test_outputs(task: OrdinalTask) -> tuple[torch.Tensor, torch.Tensor]:
    if not task.test_outputs:
        return torch.zeros(0, task.num_classes), torch.zeros(0, dtype=torch.long)
    probs = torch.cat([p for p, _ in task.test_outputs])
    targets = torch.cat([t for _, t in task.test_outputs])
    return probs, targets


def _write_plots(
    run_dir: Path,
    criterion: Any,
    class_names: Any,
    history: list[dict[str, float]],
    targets: torch.Tensor | None,
    preds: torch.Tensor | None,
    best_epoch: int,
) -> list[Path]:
    from emdloss.metrics import confusion_matrix
    from emdloss.plots import plot_confusion_matrix, plot_ground_distance, plot_learning_curves

    names = list(class_names)
    series = {}
    for key in (
        "train_loss",
        "val_loss",
        "val_mae",
        "val_qwk",
        "val_accuracy",
        "val_kl",
        "val_emd2",
    ):
        values = [row.get(key, math.nan) for row in history]
        if not all(math.isnan(v) for v in values):  # an empty panel says nothing, costs a tenth
            series[key] = values
    written: list[Path] = []
    if series:
        recipe = getattr(criterion, "recipe", None)
        written.append(run_dir / rundir.PLOT_FILES[0])
        plot_learning_curves(
            series,
            written[-1],
            best_epoch=best_epoch,
            warmup_epochs=getattr(recipe, "warmup_epochs", None),
        )
    if preds is not None and targets is not None:  # None: the test split was not evaluated
        confusion = confusion_matrix(preds, targets, num_classes=len(names))
        written.append(run_dir / rundir.PLOT_FILES[1])
        plot_confusion_matrix(confusion.numpy(), names, written[-1], title="Test (argmax)")
    matrix = criterion.ground_distance()
    if matrix is not None:
        written.append(run_dir / rundir.PLOT_FILES[2])
        plot_ground_distance(matrix, names, written[-1])
    return written
