"""Shared figure plumbing of :mod:`emdloss.plots`: figures outside pyplot, argument checks.

matplotlib is imported only when a figure is made, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure outside pyplot: rendered by Agg, never shown, nothing to close or leak."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("emdloss.plots needs matplotlib: pip install 'emdloss[train]'") from exc
    return Figure(figsize=figsize, layout="constrained")


def _as_matrix(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square (C, C) matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite")
    return arr


def _check_names(class_names: Sequence[str], count: int) -> list[str]:
    names = [str(n) for n in class_names]
    if len(names) != count:
        raise ValueError(f"class_names must have {count} entries, got {len(names)}")
    return names
