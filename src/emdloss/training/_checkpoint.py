"""The run's two checkpoints: kept in memory, both files written at an interval.

Writing ``best.ckpt`` whenever validation improved and ``last.ckpt`` after every epoch, each with
an fsync, cost about 7 % of a short tabular run (issue 20). :class:`RunCheckpoints` instead keeps
the checkpoints of the best and of the latest epoch in memory (serialised, as they would have
been written) and writes ``checkpoints/best.ckpt`` then ``checkpoints/last.ckpt`` once at least
:data:`CHECKPOINT_SECONDS` of training have passed since the previous write, at the end of
fitting, and when fitting stops on an exception (Ctrl-C included: the finished epochs are kept). A run stopped between two writes resumes from the previous ``last.ckpt`` and, since
every epoch is reseeded from ``(seed, epoch)`` and the learning rate set from the epoch number,
follows the same path as an uninterrupted run: it loses at most that interval of training.

Model selection is that of Lightning's ``ModelCheckpoint(save_top_k=1, mode=...)``, which this
replaces: the first epoch is always kept, a later one only when its value of ``val_select`` is
strictly better (ties keep the earlier epoch), a NaN counts as the worst value.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint

from emdloss._atomic import write_bytes
from emdloss.training import rundir

__all__ = ["CHECKPOINT_SECONDS", "RunCheckpoints"]

#: Seconds of training between two writes of the checkpoints (and at the end of fitting).
CHECKPOINT_SECONDS = 60.0


class RunCheckpoints(Checkpoint):
    """Keep the best epoch's checkpoint in memory; write ``best.ckpt`` and ``last.ckpt`` every
    :data:`CHECKPOINT_SECONDS` and at the end of fitting.

    Parameters
    ----------
    dirpath : path-like
        The run's ``checkpoints/`` directory.
    monitor : str
        The logged value that selects the best epoch.
    mode : {"min", "max"}
        Its direction.
    every_seconds : float, optional
        Training seconds between two writes (0: after every epoch); default
        :data:`CHECKPOINT_SECONDS`, read when the callback is made.

    The state saved in ``last.ckpt`` (``best_score``, ``best_epoch``) holds no paths, so a run
    directory that moved resumes exactly.
    """

    def __init__(
        self,
        dirpath: str | Path,
        monitor: str,
        mode: str,
        every_seconds: float | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = mode
        self.every_seconds = float(CHECKPOINT_SECONDS if every_seconds is None else every_seconds)
        self.best_score: torch.Tensor | None = None
        self.best_epoch: int | None = None
        # The serialised checkpoints of the best and of the latest epoch, not yet written.
        self._best_bytes: bytes | None = None
        self._last_bytes: bytes | None = None
        self._last_write = time.monotonic()

    # ------------------------------------------------------------------ state in last.ckpt
    def state_dict(self) -> dict[str, Any]:
        """The best score and epoch so far (no paths: a moved run resumes alike)."""
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the best score and epoch of a resumed run (its best.ckpt is on disk)."""
        self.best_score = state_dict.get("best_score")
        self.best_epoch = state_dict.get("best_epoch")

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_write = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        current = trainer.callback_metrics.get(self.monitor)
        improved = current is not None and self._improved(trainer, current.detach().float().cpu())
        # The full state (optimizer and loops too), as ModelCheckpoint would have saved it,
        # serialised now: it holds views of the weights that the next epoch changes.
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(False)
        if trainer.is_global_zero:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            self._last_bytes = buffer.getvalue()
            if improved:
                self._best_bytes = self._last_bytes
        final = trainer.should_stop or trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        if final or time.monotonic() - self._last_write >= self.every_seconds:
            self._write(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)  # stopped after an epoch that did not know it was the last

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # Ctrl-C or an error: the epochs finished so far are kept for --resume.
        self._write(trainer)

    # ------------------------------------------------------------------ helpers
    def _improved(self, trainer: pl.Trainer, current: torch.Tensor) -> bool:
        if torch.isnan(current):
            current = torch.tensor(float("inf") if self.mode == "min" else float("-inf"))
        if self.best_score is None:
            better = True
        else:
            better = bool((torch.lt if self.mode == "min" else torch.gt)(current, self.best_score))
            better = trainer.strategy.reduce_boolean_decision(better)
        if better:
            self.best_score = current
            self.best_epoch = trainer.current_epoch
        return better

    def _write(self, trainer: pl.Trainer) -> None:
        """Write what is not on disk yet (rank 0): best.ckpt first, so that last.ckpt never
        records a best score whose state is not in best.ckpt."""
        self._last_write = time.monotonic()
        if not trainer.is_global_zero or self._last_bytes is None:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        if self._best_bytes is not None:
            write_bytes(self.dirpath / rundir.BEST_CHECKPOINT, self._best_bytes)
            self._best_bytes = None
        write_bytes(self.dirpath / rundir.LAST_CHECKPOINT, self._last_bytes)
        self._last_bytes = None
