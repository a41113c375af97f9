"""The training progress bar, with epochs numbered from 1 as everywhere else in emdloss."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

__all__ = ["EpochProgressBar"]


class EpochProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar showing ``Epoch 1/30`` where Lightning shows ``Epoch 0``.

    ``history.csv``, "best epoch N of M", ``metrics.json`` and ``evaluate`` count epochs from 1;
    Lightning's bar counts from 0, so the first epoch of a run read as "Epoch 0" beside a best
    epoch of 1.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        # Lightning's method with only the description changed: calling it and relabelling
        # afterwards would print "Epoch 0" first wherever the bar is not redrawn (logs).
        if getattr(self, "_leave", False):
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        bar.reset()
        bar.total = convert_inf(self.total_train_batches)
        bar.initial = 0
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        bar.set_description(f"Epoch {trainer.current_epoch + 1}" + (f"/{total}" if total else ""))
