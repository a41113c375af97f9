"""Epochs are numbered from 1 in the progress bar as everywhere else (issue 10)."""

from __future__ import annotations

import io

import pytest

# The train extra.
pytest.importorskip("lightning")

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from emdloss.training._progress import EpochProgressBar


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_progress_bar_counts_epochs_from_one() -> None:
    seen: list[str] = []

    class Recording(EpochProgressBar):
        def init_train_tqdm(self):  # type: ignore[no-untyped-def]
            bar = super().init_train_tqdm()
            bar.fp = io.StringIO()  # keep the test output clean
            original = bar.set_description

            def record(desc: str | None = None, refresh: bool = True) -> None:
                seen.append(str(desc))  # every label ever shown, not just the last one
                original(desc, refresh)

            bar.set_description = record
            return bar

    data = DataLoader(TensorDataset(torch.randn(4, 2), torch.randn(4, 1)), batch_size=2)
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[Recording()],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(_Tiny(), data)
    assert seen == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
