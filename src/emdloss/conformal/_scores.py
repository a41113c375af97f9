r"""Conformity scores whose sublevel sets are contiguous ranges of ordered classes.

A score assigns to every candidate class :math:`y` of an example with predicted distribution
:math:`p` a number :math:`s(p, y)`; split conformal prediction keeps the classes with
:math:`s(p, y) \le \hat q`. Both scores below are built so that for every threshold the kept
classes form one contiguous range that grows with the threshold (they are nested), and both have
an *anchor* class (the median or the mode) that is kept whatever the threshold, so a set is
never empty. Adding the anchor keeps the coverage guarantee: the set only grows.

``"cdf"`` (median-centred, CDF-quantile interval)
    With :math:`F(k) = \sum_{j \le k} p_j` and :math:`F(-1) = 0`,

    .. math:: s(p, y) = \max\bigl(0,\; 1 - 2F(y),\; 2F(y-1) - 1\bigr)
              = \max\bigl(0,\; 1 - 2\min(P(Y \le y), P(Y \ge y))\bigr),

    the smallest central probability mass :math:`\tau` whose quantile interval
    :math:`[F^{-1}(\tfrac{1-\tau}{2}), F^{-1}(\tfrac{1+\tau}{2})]` contains :math:`y`. The anchor
    is the median (smallest :math:`k` with :math:`F(k) \ge 1/2`, score 0). The first term is
    non-increasing in :math:`y` and the second non-decreasing, so
    :math:`\{y : s \le q\} = \{1 - 2F(y) \le q\} \cap \{2F(y-1) - 1 \le q\}` is an interval.

``"ordinal_aps"`` (ordinal adaptive prediction sets, Lu et al. 2022)
    Start from the mode and repeatedly add whichever neighbour of the current interval is more
    probable (the lower one on a tie) until every class is in; the score of :math:`y` is the
    probability mass of the interval at the step :math:`y` joins it. The masses only grow along
    the path, so :math:`\{y : s \le q\}` is a prefix of it, a contiguous interval around the mode.
    The class that joins last always scores exactly 1: an atom. When more than a share
    :math:`\alpha` of calibration labels are such last classes (diffuse or miscalibrated
    probabilities), :math:`\hat q = 1` and every set is all classes. ``"cdf"`` has no such atom
    (its only atom, at 0, is the median), which is why it is the default.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from emdloss import _validation as V
from emdloss.vocabulary import CONFORMAL_METHODS

__all__ = ["METHODS", "check_alpha", "check_labels", "check_probs", "label_scores"]

#: Score functions accepted by :func:`emdloss.conformal.calibrate`; the first is the default.
METHODS: tuple[str, ...] = CONFORMAL_METHODS


def to_tensor(x: Any, name: str) -> tuple[Tensor, bool]:
    """``x`` as a tensor and whether it was one (so results can be returned in the same kind)."""
    if isinstance(x, Tensor):
        return x, True
    try:
        return torch.as_tensor(np.asarray(x)), False
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or array-like, got {type(x).__name__}") from err


def check_method(method: object) -> str:
    """``method`` must be one of :data:`METHODS`."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return method


def check_alpha(alpha: object) -> float:
    """``alpha`` is the miscoverage level: a real number strictly between 0 and 1."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
        raise TypeError(f"alpha must be a float in (0, 1), got {type(alpha).__name__} {alpha!r}")
    a = float(alpha)
    if not (0.0 < a < 1.0):  # also rejects NaN
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    return a


def check_probs(probs: Any, num_classes: int | None = None) -> tuple[Tensor, bool]:
    """Validate ``(N, C)`` class probabilities; return them as float64 rows renormalised to sum
    to exactly 1 (they already do within the dtype's tolerance), and whether the input was a
    tensor."""
    t, is_tensor = to_tensor(probs, "probs")
    if not (t.is_floating_point()):
        raise TypeError(f"probs must hold floating-point probabilities, got dtype {t.dtype}")
    if t.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, C), got shape {tuple(t.shape)}")
    c = t.shape[1]
    if c < 2:
        raise ValueError(f"probs must have at least 2 classes (columns), got {c}")
    if num_classes is not None and c != num_classes:
        raise ValueError(f"probs have {c} classes (columns) but the calibrator has {num_classes}")
    p = t.detach().to(torch.float64)
    bad = ~(p >= 0) | ~torch.isfinite(p)  # NaN fails ``>= 0``
    if bool(bad.any()):
        i, j = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"probs[{i}, {j}] is {float(p[i, j])!r}; probabilities must be finite and non-negative"
            " (apply softmax to logits first)"
        )
    sums = p.sum(dim=1)
    tol = V.sum_tolerance(t.dtype)  # the library's one policy, see emdloss._validation
    off = ~((sums - 1).abs() <= tol)
    if bool(off.any()):
        i = int(off.nonzero()[0, 0])
        raise ValueError(
            f"probs row {i} sums to {float(sums[i]):.6g}; each row must sum to 1 within {tol:g} "
            "(apply softmax to logits first)"
        )
    return p / sums.unsqueeze(1), is_tensor


def check_labels(labels: Any, n: int, num_classes: int) -> Tensor:
    """Validate ``(N,)`` integer class indices in ``[0, num_classes)``; return them as int64."""
    t, _ = to_tensor(labels, "labels")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"labels must hold integer class indices, got dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {tuple(t.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"labels have {t.shape[0]} entries but probs have {n} rows")
    out = ~((t >= 0) & (t < num_classes))
    if bool(out.any()):
        i = int(out.nonzero()[0, 0])
        raise ValueError(
            f"labels[{i}] is {int(t[i])}; class indices must lie in [0, {num_classes - 1}]"
        )
    return t.to(torch.int64)


def _cdf_scores(p: Tensor) -> Tensor:
    cdf = p.cumsum(dim=1)
    # F(y - 1) as a shifted copy of the cumulative sum (not cdf - p) keeps it exactly monotone
    below = torch.cat([torch.zeros_like(cdf[:, :1]), cdf[:, :-1]], dim=1)
    return torch.maximum(1 - 2 * cdf, 2 * below - 1).clamp(min=0.0)


def _ordinal_aps_scores(p: Tensor) -> Tensor:
    n, c = p.shape
    rows = torch.arange(n, device=p.device)
    lo = p.argmax(dim=1)  # first maximum on ties
    hi = lo.clone()
    mass = p[rows, lo]
    scores = torch.empty_like(p)
    scores[rows, lo] = mass
    for _ in range(c - 1):  # one class joins each row's interval per step
        left = torch.where(lo > 0, p[rows, (lo - 1).clamp(min=0)], -1.0)
        right = torch.where(hi < c - 1, p[rows, (hi + 1).clamp(max=c - 1)], -1.0)
        go_left = left >= right
        new = torch.where(go_left, lo - 1, hi + 1)
        lo = torch.where(go_left, new, lo)
        hi = torch.where(go_left, hi, new)
        mass = mass + p[rows, new]
        scores[rows, new] = mass
    # The class that joins last completes the row: its score is 1 exactly, not 1 +- rounding,
    # so a threshold of 1 keeps it for every row alike (this atom at 1 is common: see the docs).
    scores[rows, new] = 1.0  # c >= 2, so the loop ran
    return scores.clamp(max=1.0)


def label_scores(probs: Any, method: str = "cdf") -> Any:
    r"""Conformity score of every class for every example: ``(N, C)``, lower is more conforming.

    Parameters
    ----------
    probs : Tensor or array-like, shape (N, C)
        Class probabilities (rows sum to 1).
    method : {"cdf", "ordinal_aps"}
        The score function (see :mod:`emdloss.conformal`).

    Returns
    -------
    Tensor or numpy.ndarray, float64, shape (N, C)
        A tensor when ``probs`` is a tensor, else a numpy array. For every row and threshold
        :math:`q`, :math:`\{y : s_y \le q\}` is a contiguous range of classes.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.1, 0.6, 0.2, 0.1]])
    >>> label_scores(p, "ordinal_aps")  # mode 1, then 2 (0.2 > 0.1), then 0, then 3
    array([[0.9, 0.6, 0.8, 1. ]])
    >>> label_scores(p, "cdf")  # median 1; 1 - 2 * 0.1 and 2 * 0.9 - 1
    array([[0.8, 0. , 0.4, 0.8]])
    """
    method = check_method(method)
    p, is_tensor = check_probs(probs)
    s = _cdf_scores(p) if method == "cdf" else _ordinal_aps_scores(p)
    return s if is_tensor else s.numpy()


def scores_tensor(p: Tensor, method: str) -> Tensor:
    """:func:`label_scores` on probabilities already checked by :func:`check_probs`."""
    return _cdf_scores(p) if method == "cdf" else _ordinal_aps_scores(p)


def anchor(p: Tensor, method: str) -> Tensor:
    """The class every set keeps: the median for ``"cdf"``, the mode for ``"ordinal_aps"``."""
    if method == "cdf":
        # smallest k with F(k) >= 1/2: the first class whose score is 0
        return (_cdf_scores(p) <= 0).to(torch.int8).argmax(dim=1)
    return p.argmax(dim=1)
