"""Coverage and size of contiguous prediction sets ``[lower, upper]`` (see
:mod:`emdloss.conformal`): a functional version and a torchmetrics class synchronised under DDP.

Both quantities are sums over examples divided by a count, so the states are three integer sums
reduced by summation across processes, which gives exactly the values of one process on all the
data.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from emdloss.conformal import check_sets, mean_set_size, set_coverage

__all__ = ["ConformalCoverage", "prediction_set_metrics"]


def prediction_set_metrics(lower: Any, upper: Any, target: Any) -> dict[str, float]:
    """Coverage (share of true classes inside their set) and mean set size in one dict.

    Examples
    --------
    >>> prediction_set_metrics([0, 1, 2], [1, 1, 4], [1, 2, 3])
    {'coverage': 0.6666666666666666, 'mean_set_size': 2.0}
    """
    return {
        "coverage": set_coverage(lower, upper, target),
        "mean_set_size": mean_set_size(lower, upper),
    }


class ConformalCoverage(Metric):
    """Coverage and mean set size of prediction sets, accumulated over batches and processes.

    ``compute()`` returns ``{"coverage": ..., "mean_set_size": ...}`` as 0-dim float64 tensors,
    equal to :func:`prediction_set_metrics` on all the examples seen (under DDP, on every
    process's examples).

    Parameters
    ----------
    num_classes : int, optional
        When given, :meth:`update` also checks that ``0 <= lower`` and ``upper < num_classes``.
    **kwargs
        Passed to :class:`torchmetrics.Metric`.

    Examples
    --------
    >>> m = ConformalCoverage(num_classes=5)
    >>> m.update(torch.tensor([0, 1]), torch.tensor([1, 1]), torch.tensor([1, 2]))
    >>> m.update(torch.tensor([2]), torch.tensor([4]), torch.tensor([3]))
    >>> {k: round(float(v), 4) for k, v in m.compute().items()}
    {'coverage': 0.6667, 'mean_set_size': 2.0}
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False
    covered: Tensor
    size_sum: Tensor
    total: Tensor

    def __init__(self, num_classes: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        for name in ("covered", "size_sum", "total"):
            self.add_state(name, torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, lower: Any, upper: Any, target: Any) -> None:
        """Add a batch of sets ``[lower, upper]`` (inclusive class indices, ``(N,)``) and their
        true classes ``target`` ``(N,)``."""
        lo, hi, t = check_sets(lower, upper, target)
        if self.num_classes is not None and lo.numel() > 0:
            if int(lo.min()) < 0 or int(hi.max()) >= self.num_classes:
                raise ValueError(
                    f"sets span {int(lo.min())}..{int(hi.max())}, outside the classes "
                    f"0..{self.num_classes - 1}"
                )
        dev = self.total.device
        lo, hi, t = lo.to(dev), hi.to(dev), t.to(dev)
        self.covered += ((lo <= t) & (t <= hi)).sum()
        self.size_sum += (hi - lo + 1).sum()
        self.total += lo.numel()

    def compute(self) -> dict[str, Tensor]:
        """Coverage and mean set size of all the examples seen (NaN before any)."""
        n = self.total.to(torch.float64)
        return {
            "coverage": self.covered.to(torch.float64) / n,
            "mean_set_size": self.size_sum.to(torch.float64) / n,
        }
