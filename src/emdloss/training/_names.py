"""The registry of loss names, without importing torch (the CLI's help text reads it)."""

from __future__ import annotations

__all__ = ["DISTRIBUTION_LOSS_NAMES", "LOSS_NAMES", "OUR_LOSS_NAMES", "PEER_LOSS_NAMES"]

#: Losses implemented by emdloss (plus the cross-entropy and L2 baselines).
OUR_LOSS_NAMES: tuple[str, ...] = ("ce", "emd2", "w1", "xemd1", "xemd2", "ground", "l2", "nima")
#: Losses taken from peer packages (``pip install 'emdloss[peers]'``).
PEER_LOSS_NAMES: tuple[str, ...] = ("dlordinal_emd", "triangular", "sord", "corn", "coral")
#: Every valid ``loss`` name.
LOSS_NAMES: tuple[str, ...] = OUR_LOSS_NAMES + PEER_LOSS_NAMES
#: The losses that take a distribution target (N, C) (``TrainingLoss.supports_soft_targets``;
#: ``tests/test_distribution_targets.py`` checks this list against the registry).
DISTRIBUTION_LOSS_NAMES: tuple[str, ...] = (
    "ce",
    "emd2",
    "w1",
    "xemd1",
    "xemd2",
    "ground",
    "l2",
    "nima",
    "dlordinal_emd",
)
