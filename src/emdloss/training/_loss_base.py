"""The base class of the training losses, :class:`emdloss.training.TrainingLoss`.

Split from :mod:`emdloss.training.losses` by job, so that the registry's own losses and the
peer-loss wrappers of :mod:`emdloss.training._peer_losses` share it without an import cycle.
Public as :class:`emdloss.training.TrainingLoss` (the package's face).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TrainingLoss(nn.Module):
    """A loss of the registry: outputs -> loss value, outputs -> class probabilities.

    Parameters
    ----------
    name : str
        Registry name.
    num_classes : int
        Number of ordered classes :math:`C`.
    num_outputs : int
        Width of the network output the loss expects.

    Attributes
    ----------
    needs_features : bool
        Whether :meth:`forward` wants the penultimate features of the training forward pass.
    supports_soft_targets : bool
        Whether the loss takes a distribution target (N, C) (a vote histogram, an LDL target,
        a soft label) and uses it; otherwise it needs the class index, and training it on data
        with distribution targets is refused (``refuse_distribution_targets``).
    """

    needs_features: bool = False
    supports_soft_targets: bool = True

    def __init__(self, name: str, num_classes: int, num_outputs: int) -> None:
        super().__init__()
        self.name = name
        self.num_classes = num_classes
        self.num_outputs = num_outputs

    def forward(
        self,
        outputs: Tensor,
        target: Tensor,
        dist: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        """Loss of ``outputs`` (N, num_outputs) for class indices ``target`` (N,).

        Parameters
        ----------
        outputs : Tensor
            Network outputs.
        target : Tensor
            Class indices.
        dist : Tensor, optional
            Soft target distributions (N, C); used instead of ``target`` where supported.
        features : Tensor, optional
            Penultimate features of the same forward pass (for learned ground distances).
        """
        raise NotImplementedError

    def probabilities(self, outputs: Tensor) -> Tensor:
        """Class probabilities (N, C) from network outputs (N, num_outputs)."""
        return torch.softmax(outputs, dim=1)

    def step_epoch(self) -> None:
        """Called once at the end of every training epoch (recipe warm-up, learned matrix)."""

    def selectable(self, total_epochs: int) -> bool:
        """Whether the model as trained so far may be chosen by model selection."""
        return True

    def ground_distance(self) -> Tensor | None:
        """The ground-distance matrix the loss uses now (learned or given), if any."""
        return None

    def make_head(self, in_features: int) -> nn.Module | None:
        """A replacement for the model's linear head, or ``None`` to keep it."""
        return None

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}, outputs={self.num_outputs}"


def refuse_distribution_targets(loss: TrainingLoss, dataset: str) -> None:
    """Raise a one-line error when ``loss`` cannot take the distribution targets of ``dataset``.

    Examples
    --------
    >>> class Hard(TrainingLoss):
    ...     supports_soft_targets = False
    >>> refuse_distribution_targets(Hard("coral", 3, 2), "ldl:Movie.mat")
    Traceback (most recent call last):
    ...
    emdloss.errors.UserError: loss 'coral' takes class labels only, not the distribution targets of ldl:Movie.mat; choose a loss that takes distributions (ce, emd2, w1, xemd1, xemd2, ground, l2, nima, dlordinal_emd) or train on the median level with --no-soft-targets
    """
    if loss.supports_soft_targets:
        return
    from emdloss.errors import UserError
    from emdloss.vocabulary import DISTRIBUTION_LOSS_NAMES

    raise UserError(
        f"loss {loss.name!r} takes class labels only, not the distribution targets of {dataset}; "
        f"choose a loss that takes distributions ({', '.join(DISTRIBUTION_LOSS_NAMES)}) or train "
        "on the median level with --no-soft-targets"
    )
