"""The confusion matrix and the label metrics computed from it (the ``*_from_confmat`` helpers).

Split from :mod:`emdloss.metrics.functional` by job: the functional label metrics and the
stateful metrics of :mod:`emdloss.metrics` share this code path (``confusion_matrix`` is also on
the package's face, :mod:`emdloss.metrics`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from emdloss.metrics._checks import _check_pair, check_positions


# --------------------------------------------------------------------------------------------
# confusion matrix and the metrics derived from it
# --------------------------------------------------------------------------------------------
def _confmat(preds: Tensor, target: Tensor, num_classes: int) -> Tensor:
    flat = target * num_classes + preds
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def confusion_matrix(
    preds: Any, target: Any, *, num_classes: int | None = None, ignore_index: int | None = -100
) -> Tensor:
    r"""Counts of (true, predicted) class pairs.

    .. math:: M_{ij} = \#\{n : t_n = i,\ \hat y_n = j\}

    Parameters
    ----------
    preds, target : Tensor
        Predicted and true class indices, shape ``(N,)``.
    num_classes : int, optional
        ``C``; inferred as ``max(preds, target) + 1`` when omitted.

    Returns
    -------
    Tensor
        ``int64`` matrix ``(C, C)``, rows true classes, columns predicted classes (as
        ``sklearn.metrics.confusion_matrix``).

    Examples
    --------
    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 2]), num_classes=3)
    tensor([[1, 1, 0],
            [0, 0, 0],
            [0, 1, 0]])
    """
    p, t, c, _ = _check_pair(preds, target, num_classes, ignore_index=ignore_index)
    return _confmat(p, t, c)


def _check_confmat(confmat: Tensor) -> Tensor:
    if confmat.ndim != 2 or confmat.shape[0] != confmat.shape[1]:
        raise ValueError(f"confmat must be square (C, C), got shape {tuple(confmat.shape)}")
    if bool((confmat < 0).any()):
        raise ValueError("confmat holds negative counts")
    cm = confmat.double()
    if float(cm.sum()) <= 0:
        raise ValueError("confmat is empty (no samples): the metric is undefined")
    return cm


def _distance(num_classes: int, positions: Tensor | None, device: torch.device) -> Tensor:
    """|x_i - x_j| between classes, in class units or in position units."""
    x = (
        torch.arange(num_classes, dtype=torch.float64, device=device)
        if positions is None
        else positions.to(device=device, dtype=torch.float64)
    )
    return (x[:, None] - x[None, :]).abs()


def accuracy_from_confmat(confmat: Tensor) -> Tensor:
    """Exact accuracy ``trace(M) / sum(M)`` from a confusion matrix (see :func:`~emdloss.metrics.functional.accuracy`).

    Examples
    --------
    >>> accuracy_from_confmat(torch.tensor([[2, 1, 0], [0, 1, 1], [0, 0, 3]]))
    tensor(0.7500, dtype=torch.float64)
    """
    cm = _check_confmat(confmat)
    return cm.diagonal().sum() / cm.sum()


def one_off_accuracy_from_confmat(confmat: Tensor) -> Tensor:
    """Share of samples with ``|pred - true| <= 1`` (see :func:`~emdloss.metrics.functional.one_off_accuracy`).

    Examples
    --------
    >>> one_off_accuracy_from_confmat(torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 1]]))
    tensor(0.7500, dtype=torch.float64)
    """
    cm = _check_confmat(confmat)
    near = _distance(cm.shape[0], None, cm.device) <= 1
    return (cm * near).sum() / cm.sum()


def mean_absolute_error_from_confmat(confmat: Tensor, positions: Any = None) -> Tensor:
    """MAE in class (or position) units from a confusion matrix (see
    :func:`~emdloss.metrics.functional.mean_absolute_error`).

    Examples
    --------
    >>> mean_absolute_error_from_confmat(torch.tensor([[2, 1, 0], [0, 1, 1], [0, 0, 3]]))
    tensor(0.2500, dtype=torch.float64)
    >>> mean_absolute_error_from_confmat(torch.tensor([[2, 1, 0], [0, 1, 1], [0, 0, 3]]), positions=[0.0, 1.0, 5.0])
    tensor(0.6250, dtype=torch.float64)
    """
    cm = _check_confmat(confmat)
    pos = None if positions is None else check_positions(positions, cm.shape[0])
    return (cm * _distance(cm.shape[0], pos, cm.device)).sum() / cm.sum()


def root_mean_squared_error_from_confmat(confmat: Tensor, positions: Any = None) -> Tensor:
    """RMSE in class (or position) units from a confusion matrix (see
    :func:`~emdloss.metrics.functional.root_mean_squared_error`).

    Examples
    --------
    >>> root_mean_squared_error_from_confmat(torch.tensor([[2, 1, 0], [0, 1, 1], [0, 0, 3]]))
    tensor(0.5000, dtype=torch.float64)
    """
    cm = _check_confmat(confmat)
    pos = None if positions is None else check_positions(positions, cm.shape[0])
    return ((cm * _distance(cm.shape[0], pos, cm.device) ** 2).sum() / cm.sum()).sqrt()


def per_class_mae_from_confmat(confmat: Tensor, positions: Any = None) -> Tensor:
    """MAE of each true class; NaN for a class with no sample (see :func:`~emdloss.metrics.functional.per_class_mae`).

    Examples
    --------
    >>> per_class_mae_from_confmat(torch.tensor([[2, 1, 0], [0, 0, 0], [0, 0, 3]]))
    tensor([0.3333,    nan, 0.0000], dtype=torch.float64)
    """
    cm = _check_confmat(confmat)
    pos = None if positions is None else check_positions(positions, cm.shape[0])
    errors = (cm * _distance(cm.shape[0], pos, cm.device)).sum(dim=1)
    counts = cm.sum(dim=1)
    nan = torch.full_like(errors, float("nan"))
    return torch.where(counts > 0, errors / counts.clamp_min(1), nan)


def average_mae_from_confmat(confmat: Tensor, positions: Any = None) -> Tensor:
    """Macro-averaged MAE over the true classes present (see :func:`~emdloss.metrics.functional.average_mae`).

    Examples
    --------
    >>> average_mae_from_confmat(torch.tensor([[2, 1, 0], [0, 0, 0], [0, 0, 3]]))
    tensor(0.1667, dtype=torch.float64)
    """
    per_class = per_class_mae_from_confmat(confmat, positions)
    present = confmat.sum(dim=1) > 0  # at least one class is present: _check_confmat
    return per_class[present].mean()


def quadratic_weighted_kappa_from_confmat(confmat: Tensor) -> Tensor:
    """Cohen's kappa with quadratic weights from a confusion matrix (see
    :func:`~emdloss.metrics.functional.quadratic_weighted_kappa`).

    Examples
    --------
    >>> quadratic_weighted_kappa_from_confmat(torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 1]]))
    tensor(0.8000, dtype=torch.float64)
    """
    cm = _check_confmat(confmat)
    n = cm.sum()
    w = _distance(cm.shape[0], None, cm.device) ** 2
    expected = torch.outer(cm.sum(dim=1), cm.sum(dim=0)) / n
    den = (w * expected).sum()
    if float(den) == 0.0:
        # All targets and predictions in one class: 0/0. Return the value kappa takes for any
        # prediction when the target holds a single class (observed == expected disagreement).
        return torch.zeros((), dtype=torch.float64, device=cm.device)
    return 1.0 - (w * cm).sum() / den


def _mid_ranks(counts: Tensor) -> Tensor:
    """Average (mid) rank of each value given how often each value occurs, in sorted order."""
    return counts.cumsum(0) - counts + (counts + 1.0) / 2.0


def spearman_from_confmat(confmat: Tensor) -> Tensor:
    """Spearman's rho between true and predicted classes from a confusion matrix (ties get
    average ranks, as ``scipy.stats.spearmanr``); 0 when either side is constant.

    Examples
    --------
    >>> spearman_from_confmat(torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 1]]))
    tensor(0.8333, dtype=torch.float64)
    """
    cm = _check_confmat(confmat)
    n = cm.sum()
    rows, cols = cm.sum(dim=1), cm.sum(dim=0)
    a, b = _mid_ranks(rows), _mid_ranks(cols)
    da = a - (rows * a).sum() / n
    db = b - (cols * b).sum() / n
    var_a, var_b = (rows * da**2).sum(), (cols * db**2).sum()
    if float(var_a) <= 0.0 or float(var_b) <= 0.0:
        return torch.zeros((), dtype=torch.float64, device=cm.device)
    cov = (cm * torch.outer(da, db)).sum()
    return (cov / (var_a * var_b).sqrt()).clamp(-1.0, 1.0)
