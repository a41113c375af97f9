"""Shared figure plumbing of :mod:`emdloss.plots`: figures outside pyplot, atomic PNG writes.

matplotlib is imported only when a figure is made, so importing this module costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emdloss._atomic import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["save_figure"]

_DPI = 120


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


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and return the path.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to save.
    path : str or PathLike
        Destination; its directory is created if needed.

    Returns
    -------
    Path
        The destination.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> fig = _new_figure((2.0, 2.0))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     out = save_figure(fig, pathlib.Path(d) / "curve.png")
    ...     out.read_bytes()[:4]
    b'\\x89PNG'
    """
    dest = Path(path)
    atomic_write(
        dest, lambda handle: fig.savefig(handle, format="png", dpi=_DPI, bbox_inches="tight")
    )
    return dest


def _finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig
