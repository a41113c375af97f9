"""The registry of loss names, without importing torch (the CLI's help text reads it)."""

from __future__ import annotations

__all__ = ["LOSS_NAMES", "OUR_LOSS_NAMES", "PEER_LOSS_NAMES"]

#: Losses implemented by emdloss (plus the cross-entropy and L2 baselines).
OUR_LOSS_NAMES: tuple[str, ...] = ("ce", "emd2", "w1", "xemd1", "xemd2", "ground", "l2")
#: Losses taken from peer packages (``pip install 'emdloss[peers]'``).
PEER_LOSS_NAMES: tuple[str, ...] = ("dlordinal_emd", "triangular", "sord", "corn", "coral")
#: Every valid ``loss`` name.
LOSS_NAMES: tuple[str, ...] = OUR_LOSS_NAMES + PEER_LOSS_NAMES
