"""A non-finite training loss stops training with a clear message, without a device sync per
step (issue 9): on an accelerator the flag is read on the host every FINITE_CHECK_EVERY steps
and at the end of the epoch; on the CPU (free to read) at once.

Named for emdloss.training.module (where the finite check runs).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

pytest.importorskip("lightning")

from emdloss.training import module as M
from emdloss.training.losses import build_loss


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(2, 4), nn.Linear(4, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _task() -> M.OrdinalTask:
    return M.OrdinalTask(_Net(), build_loss("ce", 3), num_classes=3)


def _batch(nan: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(4, 2)
    if nan:
        x[1, 0] = float("nan")
    return x, torch.tensor([0, 1, 2, 1])


def _step(task: M.OrdinalTask, nan: bool, i: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        task.training_step(_batch(nan), i)


def test_nan_loss_on_the_cpu_stops_at_once() -> None:
    task = _task()
    _step(task, False, 0)
    with pytest.raises(
        FloatingPointError, match=r"training loss is nan at epoch 0, batch 1; lower"
    ):
        _step(task, True, 1)


def test_nan_loss_on_an_accelerator_is_read_without_a_sync_per_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(M, "_host_reads_are_free", lambda device: False)
    monkeypatch.setattr(M, "FINITE_CHECK_EVERY", 5)
    task = _task()
    reads: list[int] = []
    original = task._raise_if_loss_was_nonfinite

    def counting() -> None:
        reads.append(1)
        original()

    monkeypatch.setattr(task, "_raise_if_loss_was_nonfinite", counting)
    for i in range(4):  # the NaN at batch 2 is only remembered on the device
        _step(task, i == 2, i)
    assert reads == []
    with pytest.raises(FloatingPointError, match=r"training loss is nan at epoch 0, batch 2"):
        _step(task, False, 4)  # the 5th step reads the flag
    assert len(reads) == 1


def test_nan_loss_is_reported_at_the_end_of_a_short_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "_host_reads_are_free", lambda device: False)
    task = _task()
    _step(task, True, 0)
    _step(task, False, 1)
    with pytest.raises(FloatingPointError, match=r"batch 0"):
        task.on_train_epoch_end()
