r"""The peer losses of the training registry: dlordinal's and coral-pytorch's, wrapped.

Split from :mod:`emdloss.training.losses` by job (the registry, :func:`build_loss`, stays
there). The peer packages are imported only when a
peer loss is built, with a message naming the extra to install when one is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from emdloss.training._loss_base import TrainingLoss

_PEERS_EXTRA = "pip install 'emdloss[peers]'"


def _peer(module: str, distribution: str, loss: str) -> Any:
    """Import a peer package module, or explain which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"loss {loss!r} needs the peer package {distribution!r}, which is not installed; "
            f"install it with: {_PEERS_EXTRA}"
        ) from error


class _PeerSoftmax(TrainingLoss):
    """A peer loss on logits: class indices, or also (N, C) distributions when ``soft``."""

    def __init__(
        self, name: str, num_classes: int, module: nn.Module, *, soft: bool = False
    ) -> None:
        super().__init__(name, num_classes, num_classes)
        self.peer = module
        self.supports_soft_targets = soft

    def forward(
        self,
        outputs: Tensor,
        target: Tensor,
        dist: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        use_dist = dist is not None and self.supports_soft_targets
        loss: Tensor = self.peer(outputs, dist if use_dist else target)
        return loss


# ---------------------------------------------------------------------------- cumulative
def _tracing() -> bool:
    """Whether ``torch.compile`` / ``torch.export`` traces (``emdloss export`` included)."""
    return torch.compiler.is_compiling()


def _running(op: Callable[[Tensor, Tensor], Tensor], t: Tensor) -> Tensor:
    """``op`` accumulated along dim 1 with one elementwise op per column.

    What the tracers take where ``torch.cummin`` (no ONNX lowering) and ``torch.cumprod``
    (``prims.prod``) fail: the ONNX export of ``coral`` and ``corn`` runs. The same values,
    in the same order of operations; the column count is fixed when tracing.
    """
    columns = [t[:, 0]]
    for k in range(1, t.shape[1]):
        columns.append(op(columns[-1], t[:, k]))
    return torch.stack(columns, dim=1)


def cumulative_to_probabilities(exceed: Tensor) -> Tensor:
    r"""Class probabilities from exceedance probabilities :math:`S_k = P(y > k)`, k < C - 1.

    .. math::

        \tilde S_k = \min_{j \le k} S_j, \qquad
        p_k = \tilde S_{k-1} - \tilde S_k, \quad \tilde S_{-1} = 1,\ \tilde S_{C-1} = 0

    The running minimum makes the :math:`S_k` non-increasing, so every :math:`p_k \ge 0` and
    they sum to 1.

    Parameters
    ----------
    exceed : Tensor
        Shape (N, C - 1), values in [0, 1].

    Returns
    -------
    Tensor
        Shape (N, C).

    Examples
    --------
    >>> cumulative_to_probabilities(torch.tensor([[0.9, 0.6, 0.7]]))
    tensor([[0.1000, 0.3000, 0.0000, 0.6000]])
    """
    monotone = _running(torch.minimum, exceed) if _tracing() else torch.cummin(exceed, 1).values
    ones = torch.ones_like(monotone[:, :1])
    upper = torch.cat([ones, monotone], dim=1)
    lower = torch.cat([monotone, torch.zeros_like(ones)], dim=1)
    return (upper - lower).clamp_min(0.0)


class _Coral(TrainingLoss):
    supports_soft_targets = False

    def __init__(self, num_classes: int) -> None:
        super().__init__("coral", num_classes, num_classes - 1)
        # Fail at construction, not at the first batch, when the package is missing. Modules
        # are looked up again when used so that the loss stays picklable (DDP spawn).
        _peer("coral_pytorch.losses", "coral-pytorch", "coral")

    def forward(
        self,
        outputs: Tensor,
        target: Tensor,
        dist: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        # Same extended binary labels as coral_pytorch.dataset.levels_from_labelbatch, vectorised.
        thresholds = torch.arange(self.num_classes - 1, device=outputs.device)
        levels = (target[:, None] > thresholds[None, :]).to(outputs.dtype)
        losses = _peer("coral_pytorch.losses", "coral-pytorch", "coral")
        loss: Tensor = losses.coral_loss(outputs, levels)
        return loss

    def probabilities(self, outputs: Tensor) -> Tensor:
        return cumulative_to_probabilities(torch.sigmoid(outputs))

    def make_head(self, in_features: int) -> nn.Module:
        layers = _peer("coral_pytorch.layers", "coral-pytorch", "coral")
        layer: nn.Module = layers.CoralLayer(in_features, self.num_classes)
        return layer


class _Corn(TrainingLoss):
    supports_soft_targets = False

    def __init__(self, num_classes: int) -> None:
        super().__init__("corn", num_classes, num_classes - 1)
        losses = _peer("dlordinal.losses", "dlordinal", "corn")
        self.peer = losses.CORNLoss(num_classes)

    def forward(
        self,
        outputs: Tensor,
        target: Tensor,
        dist: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        loss: Tensor = self.peer(outputs, target)
        return loss

    def probabilities(self, outputs: Tensor) -> Tensor:
        # CORN's outputs are conditional: P(y > k | y > k - 1); their running product is P(y > k).
        conditional = torch.sigmoid(outputs)
        if _tracing():
            return cumulative_to_probabilities(_running(torch.mul, conditional))
        return cumulative_to_probabilities(torch.cumprod(conditional, dim=1))
