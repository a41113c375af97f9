"""Shared figure plumbing of :mod:`emdloss.plots`: figures outside pyplot, argument checks.

matplotlib is imported only when a figure is made, so importing this module costs nothing.
"""

from __future__ import annotations

import weakref
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


def _text_inches(text: str, fontsize: float) -> float:
    """A generous estimate of the width of one line of ``text`` in DejaVu Sans (inches)."""
    return 0.62 * fontsize / 72.0 * len(text)


def _fixed_grid(
    rows: int,
    cols: int,
    panel: tuple[float, float],
    *,
    left: float,
    right: float,
    top: float,
    bottom: float,
    wgap: float,
    hgap: float,
    sharey: bool = False,
) -> tuple[Figure, np.ndarray]:
    """A figure of ``rows x cols`` panels of ``panel`` inches with margins and gaps fixed in
    inches, and its axes (a 2-D array).

    No layout engine measures the text at draw time: a figure of many small panels costs about
    half of a constrained layout's (issue 20), so the figures drawn for every comparison use
    this, with margins computed from the lengths of their labels. The figure is recorded in
    :data:`_FIXED`, so :func:`emdloss.plots.save_figure` writes it as it is (a layout engine,
    even a placeholder, would make ``savefig`` draw the figure twice).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("emdloss.plots needs matplotlib: pip install 'emdloss[train]'") from exc
    width = left + right + cols * panel[0] + (cols - 1) * wgap
    height = top + bottom + rows * panel[1] + (rows - 1) * hgap
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1.0 - right / width,
        bottom=bottom / height,
        top=1.0 - top / height,
        wspace=wgap / panel[0],
        hspace=hgap / panel[1],
    )
    axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey)
    _FIXED.add(fig)
    return fig, axes


#: The figures laid out by :func:`_fixed_grid` (written without a "tight" bounding box).
_FIXED: weakref.WeakSet[Any] = weakref.WeakSet()


def _laid_out(fig: Figure) -> bool:
    """Whether ``fig`` is laid out already (a layout engine or :func:`_fixed_grid`)."""
    return fig.get_layout_engine() is not None or fig in _FIXED


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
