"""Input checks of the functional metrics (:mod:`emdloss.metrics.functional`).

Split from :mod:`emdloss.metrics.functional` by job; private to the metrics package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from emdloss import _validation as V


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or array-like, got {type(x).__name__}") from err


def _check_num_classes(num_classes: int) -> int:
    return V.check_num_classes(num_classes, minimum=1)


def _check_labels(x: Tensor, name: str) -> Tensor:
    """A 1-D integer tensor of class indices (range checked later)."""
    if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
        raise TypeError(
            f"{name} must hold integer class indices, got dtype {x.dtype}; "
            "decode probabilities first (e.g. probs.argmax(dim=1))"
        )
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(x.shape)}")
    return x


def _check_range(x: Tensor, name: str, num_classes: int) -> None:
    bad = (x < 0) | (x >= num_classes)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name}[{i}] = {int(x[i])} is not a class index in [0, {num_classes - 1}] "
            f"(num_classes={num_classes})"
        )


def check_positions(positions: Sequence[float] | Tensor, num_classes: int | None) -> Tensor:
    """Validate class positions: ``C`` finite, strictly increasing numbers (float64 tensor).

    Examples
    --------
    >>> check_positions([1.0, 5.0, 10.5], 3)
    tensor([ 1.0000,  5.0000, 10.5000], dtype=torch.float64)
    """
    pos = torch.as_tensor(positions, dtype=torch.float64).detach()
    if pos.ndim != 1 or pos.numel() < 1:
        raise ValueError(
            f"positions must be a non-empty 1-D sequence, got shape {tuple(pos.shape)}"
        )
    if num_classes is not None and pos.numel() != num_classes:
        raise ValueError(
            f"positions has {pos.numel()} entries but num_classes is {num_classes}: "
            "give one position per class"
        )
    if not bool(torch.isfinite(pos).all()):
        raise ValueError(f"positions must be finite, got {pos.tolist()}")
    if pos.numel() > 1 and not bool((pos[1:] > pos[:-1]).all()):
        raise ValueError(f"positions must be strictly increasing, got {pos.tolist()}")
    return pos


def _flat_valid(p: Tensor, t: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """Same-shape labels (N, d1, ...) flattened to (M,), elements whose target equals
    ``ignore_index`` left out (as the losses do)."""
    if p.shape != t.shape:
        raise ValueError(
            f"preds and target must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}"
        )
    if p.ndim > 1:
        p, t = p.reshape(-1), t.reshape(-1)
    if ignore_index is not None and not t.is_floating_point():
        keep = t != V.check_ignore_index(ignore_index)
        p, t = p[keep], t[keep]
    return p, t


def _check_pair(
    preds: Any,
    target: Any,
    num_classes: int | None,
    positions: Any = None,
    ignore_index: int | None = None,
) -> tuple[Tensor, Tensor, int, Tensor | None]:
    """Validate predicted and true class indices; infer ``num_classes`` when not given."""
    p, t = _flat_valid(_as_tensor(preds, "preds"), _as_tensor(target, "target"), ignore_index)
    p, t = _check_labels(p, "preds"), _check_labels(t, "target")
    if p.numel() == 0:
        raise ValueError("preds and target are empty: a metric needs at least one sample")
    if p.device != t.device:
        raise ValueError(f"preds is on {p.device} but target is on {t.device}")
    pos = None
    if positions is not None:
        if num_classes is None:
            num_classes = len(positions)
        pos = check_positions(positions, num_classes)
    if num_classes is None:
        lo = int(torch.minimum(p.min(), t.min()))
        if lo < 0:
            which, x = ("preds", p) if int(p.min()) < 0 else ("target", t)
            i = int((x < 0).nonzero()[0, 0])
            raise ValueError(f"{which}[{i}] = {int(x[i])} is negative; class indices start at 0")
        num_classes = int(torch.maximum(p.max(), t.max())) + 1
    _check_num_classes(num_classes)
    _check_range(t, "target", num_classes)
    _check_range(p, "preds", num_classes)
    return p.long(), t.long(), num_classes, pos


def check_probs(
    probs: Any,
    name: str = "probs",
    *,
    hint: str = "pass probabilities (softmax of the logits), not logits",
) -> Tensor:
    """Validate a probability matrix ``(N, C)``: finite, non-negative, rows summing to 1
    (``hint`` ends the message of a row that does not sum to 1). Returns it detached.

    Examples
    --------
    >>> check_probs(torch.tensor([[0.25, 0.75]]))
    tensor([[0.2500, 0.7500]])
    """
    x = _as_tensor(probs, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, C), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] < 2:
        raise ValueError(f"{name} needs N >= 1 rows and C >= 2 classes, got {tuple(x.shape)}")
    x = x.detach()
    if not bool(torch.isfinite(x).all()):
        i = int((~torch.isfinite(x)).nonzero()[0, 0])
        raise ValueError(f"{name} row {i} is not finite: {x[i].tolist()}")
    tol = V.sum_tolerance(x.dtype)  # the library's one policy, see emdloss._validation
    if bool((x < -tol).any()):
        i, j = (int(v) for v in (x < -tol).nonzero()[0])
        raise ValueError(f"{name}[{i}, {j}] = {float(x[i, j])} is negative; expected probabilities")
    sums = x.double().sum(dim=1)
    bad = (sums - 1.0).abs() > tol
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name} row {i} sums to {float(sums[i]):.6g}, expected 1 (within {tol}); {hint}"
        )
    return x
