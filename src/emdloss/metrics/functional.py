"""Functional ordinal metrics on tensors.

Label metrics take predicted and true class indices, ``preds`` and ``target``: integer tensors
of the same shape, ``(N,)`` or ``(N, d1, ...)`` (scored element-wise, as flattened), with values
in ``0 .. C-1``. :func:`ranked_probability_score` takes probabilities ``(N, C)`` or
``(N, C, d1, ...)``. Like the losses, every metric takes ``ignore_index`` (default -100): the
elements whose target equals it are left out (``None``: none is). Every metric returns a 0-dim
``float64`` tensor on the input's device.

All label metrics are functions of the confusion matrix, so the stateful metrics of
:mod:`emdloss.metrics` reproduce them exactly from a summed (DDP-reducible) confusion matrix.
The ``*_from_confmat`` helpers are that shared code path.

Conventions (where tools differ):

- Confusion matrix: rows are true classes, columns predicted classes (scikit-learn's).
- Quadratic weighted kappa uses the class *indices* ``0 .. C-1`` as scores, for every class of
  ``0 .. C-1`` whether present or not. scikit-learn's ``cohen_kappa_score`` numbers only the labels
  it sees, so it agrees only when given ``labels=range(C)`` (or when all classes occur).
- Undefined values are never NaN in the summary metrics: kappa is 0 when the expected disagreement
  is zero, Spearman's rho is 0 when either side is constant (see each function).

The input checks live in :mod:`emdloss.metrics._checks` and the confusion matrix with its
``*_from_confmat`` helpers in :mod:`emdloss.metrics.confmat` (split by job).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from emdloss import _validation as V
from emdloss._deprecation import moved_attribute
from emdloss.metrics import _checks
from emdloss.metrics import confmat as CM
from emdloss.metrics._checks import (
    _as_tensor,
    _check_labels,
    _check_pair,
    _check_range,
    _flat_valid,
)

__all__ = [
    "accuracy",
    "average_mae",
    "mean_absolute_error",
    "one_off_accuracy",
    "per_class_mae",
    "quadratic_weighted_kappa",
    "ranked_probability_score",
    "root_mean_squared_error",
    "spearman",
]

# Rows of a probability matrix must sum to 1 within this tolerance (per dtype).


# --------------------------------------------------------------------------------------------
# functional metrics on labels
# --------------------------------------------------------------------------------------------
def accuracy(
    preds: Any, target: Any, *, num_classes: int | None = None, ignore_index: int | None = -100
) -> Tensor:
    r"""Exact accuracy.

    .. math:: \mathrm{acc} = \frac{1}{N}\sum_n [\hat y_n = t_n]

    Parameters
    ----------
    preds, target : Tensor
        Predicted and true class indices ``(N,)`` or ``(N, d1, ...)`` (flattened).
    num_classes : int, optional
        ``C``, checked against the labels; inferred when omitted.

    Returns
    -------
    Tensor
        0-dim float64.

    Examples
    --------
    >>> accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    tensor(0.7500, dtype=torch.float64)
    """
    p, t, c, _ = _check_pair(preds, target, num_classes, ignore_index=ignore_index)
    return CM.accuracy_from_confmat(CM._confmat(p, t, c))


def one_off_accuracy(
    preds: Any, target: Any, *, num_classes: int | None = None, ignore_index: int | None = -100
) -> Tensor:
    r"""1-off accuracy: the share of predictions at most one class away from the truth.

    .. math:: \mathrm{acc}_{\pm 1} = \frac{1}{N}\sum_n [|\hat y_n - t_n| \le 1]

    Parameters
    ----------
    preds, target : Tensor
        Predicted and true class indices ``(N,)`` or ``(N, d1, ...)`` (flattened).
    num_classes : int, optional
        ``C``; inferred when omitted.

    Returns
    -------
    Tensor
        0-dim float64.

    Notes
    -----
    ``dlordinal.metrics.accuracy_off1`` agrees when given ``labels=range(C)``; by default it
    builds its confusion matrix over the labels of ``y_true`` only, which silently drops samples
    predicted as a class absent from ``y_true``.

    Examples
    --------
    >>> one_off_accuracy(torch.tensor([0, 2, 4]), torch.tensor([0, 1, 1]))
    tensor(0.6667, dtype=torch.float64)
    """
    p, t, c, _ = _check_pair(preds, target, num_classes, ignore_index=ignore_index)
    return CM.one_off_accuracy_from_confmat(CM._confmat(p, t, c))


def mean_absolute_error(
    preds: Any,
    target: Any,
    *,
    num_classes: int | None = None,
    positions: Sequence[float] | Tensor | None = None,
    ignore_index: int | None = -100,
) -> Tensor:
    r"""Mean absolute error in class units, or in position units when ``positions`` are given.

    .. math:: \mathrm{MAE} = \frac{1}{N}\sum_n |x_{\hat y_n} - x_{t_n}|

    with :math:`x_k = k` (class units) or :math:`x_k` = ``positions[k]``.

    Parameters
    ----------
    preds, target : Tensor
        Predicted and true class indices ``(N,)`` or ``(N, d1, ...)`` (flattened).
    num_classes : int, optional
        ``C``; taken from ``len(positions)`` or inferred when omitted.
    positions : sequence of float, optional
        Strictly increasing position of each class (e.g. age-group midpoints).

    Returns
    -------
    Tensor
        0-dim float64.

    Examples
    --------
    >>> mean_absolute_error(torch.tensor([0, 2]), torch.tensor([1, 2]))
    tensor(0.5000, dtype=torch.float64)
    >>> mean_absolute_error(torch.tensor([0, 2]), torch.tensor([1, 2]), positions=[1.0, 5.0, 10.0])
    tensor(2., dtype=torch.float64)
    """
    p, t, c, pos = _check_pair(preds, target, num_classes, positions, ignore_index)
    return CM.mean_absolute_error_from_confmat(CM._confmat(p, t, c), pos)


def root_mean_squared_error(
    preds: Any,
    target: Any,
    *,
    num_classes: int | None = None,
    positions: Sequence[float] | Tensor | None = None,
    ignore_index: int | None = -100,
) -> Tensor:
    r"""Root mean squared error in class units, or in position units when ``positions`` are given.

    .. math:: \mathrm{RMSE} = \Big(\frac{1}{N}\sum_n (x_{\hat y_n} - x_{t_n})^2\Big)^{1/2}

    Parameters
    ----------
    preds, target : Tensor
        Predicted and true class indices ``(N,)`` or ``(N, d1, ...)`` (flattened).
    num_classes : int, optional
        ``C``; taken from ``len(positions)`` or inferred when omitted.
    positions : sequence of float, optional
        Strictly increasing position of each class.

    Returns
    -------
    Tensor
        0-dim float64.

    Examples
    --------
    >>> root_mean_squared_error(torch.tensor([0, 2]), torch.tensor([2, 2]))
    tensor(1.4142, dtype=torch.float64)
    """
    p, t, c, pos = _check_pair(preds, target, num_classes, positions, ignore_index)
    return CM.root_mean_squared_error_from_confmat(CM._confmat(p, t, c), pos)


def per_class_mae(
    preds: Any,
    target: Any,
    *,
    num_classes: int | None = None,
    positions: Sequence[float] | Tensor | None = None,
    ignore_index: int | None = -100,
) -> Tensor:
    r"""MAE of the samples of each true class.

    .. math:: \mathrm{MAE}_k = \frac{1}{N_k}\sum_{n: t_n = k} |x_{\hat y_n} - x_k|

    Parameters
    ----------
    preds, target : Tensor
        Predicted and true class indices ``(N,)`` or ``(N, d1, ...)`` (flattened).
    num_classes : int, optional
        ``C``; taken from ``len(positions)`` or inferred when omitted.
    positions : sequence of float, optional
        Strictly increasing position of each class.

    Returns
    -------
    Tensor
        float64 ``(C,)``; NaN for a class with no sample in ``target`` (its MAE is undefined).

    Examples
    --------
    >>> per_class_mae(torch.tensor([1, 1, 0]), torch.tensor([0, 0, 2]), num_classes=3)
    tensor([1., nan, 2.], dtype=torch.float64)
    """
    p, t, c, pos = _check_pair(preds, target, num_classes, positions, ignore_index)
    return CM.per_class_mae_from_confmat(CM._confmat(p, t, c), pos)


def average_mae(
    preds: Any,
    target: Any,
    *,
    num_classes: int | None = None,
    positions: Sequence[float] | Tensor | None = None,
    ignore_index: int | None = -100,
) -> Tensor:
    r"""Average MAE (AMAE, Baccianella et al. 2009): the MAE of each true class, averaged over the
    classes present in ``target``.

    .. math:: \mathrm{AMAE} = \frac{1}{|K|}\sum_{k \in K} \mathrm{MAE}_k,
              \quad K = \{k : N_k > 0\}

    A class absent from ``target`` is left out of the average (never NaN).

    Parameters
    ----------
    preds, target : Tensor
        Predicted and true class indices ``(N,)`` or ``(N, d1, ...)`` (flattened).
    num_classes : int, optional
        ``C``; taken from ``len(positions)`` or inferred when omitted.
    positions : sequence of float, optional
        Strictly increasing position of each class.

    Returns
    -------
    Tensor
        0-dim float64.

    Notes
    -----
    ``dlordinal.metrics.amae`` measures errors by the index of each label among the labels that
    occur in ``y_true`` or ``y_pred``: when a class in between occurs in neither, its distances
    shrink. Here distances are always ``|i - j|`` over ``0 .. C-1``.

    Examples
    --------
    >>> average_mae(torch.tensor([1, 1, 0]), torch.tensor([0, 0, 2]), num_classes=3)
    tensor(1.5000, dtype=torch.float64)
    """
    p, t, c, pos = _check_pair(preds, target, num_classes, positions, ignore_index)
    return CM.average_mae_from_confmat(CM._confmat(p, t, c), pos)


def quadratic_weighted_kappa(
    preds: Any, target: Any, *, num_classes: int | None = None, ignore_index: int | None = -100
) -> Tensor:
    r"""Cohen's kappa with quadratic weights.

    .. math::

        \kappa = 1 - \frac{\sum_{ij} w_{ij} O_{ij}}{\sum_{ij} w_{ij} E_{ij}},\quad
        w_{ij} = (i - j)^2,\quad E_{ij} = \frac{O_{i\cdot}\, O_{\cdot j}}{N}

    with :math:`O` the confusion matrix.

    Parameters
    ----------
    preds, target : Tensor
        Predicted and true class indices ``(N,)`` or ``(N, d1, ...)`` (flattened).
    num_classes : int, optional
        ``C``; inferred when omitted (the value does not depend on it).

    Returns
    -------
    Tensor
        0-dim float64 in ``[-1, 1]``.

    Notes
    -----
    When every target and every prediction is the same class the ratio is 0/0; this returns 0,
    the value kappa has for *any* prediction once the target holds a single class (then observed
    and expected disagreement are equal). scikit-learn returns NaN there with a warning. Equals
    ``sklearn.metrics.cohen_kappa_score(target, preds, weights="quadratic", labels=range(C))``.

    Examples
    --------
    >>> quadratic_weighted_kappa(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    tensor(0.8000, dtype=torch.float64)
    """
    p, t, c, _ = _check_pair(preds, target, num_classes, ignore_index=ignore_index)
    return CM.quadratic_weighted_kappa_from_confmat(CM._confmat(p, t, c))


def _ranks(x: Tensor) -> Tensor:
    """Average ranks (1-based, ties averaged) of a 1-D tensor."""
    _, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    return CM._mid_ranks(counts.double())[inverse]


def spearman(preds: Any, target: Any, *, ignore_index: int | None = -100) -> Tensor:
    r"""Spearman's rank correlation between predictions and targets.

    .. math:: \rho = \mathrm{corr}(\mathrm{rank}(\hat y), \mathrm{rank}(t))

    Ties get the average of their ranks (as ``scipy.stats.spearmanr``).

    Parameters
    ----------
    preds, target : Tensor
        1-D tensors of the same length: class indices, or any real scores (e.g. the expected
        class under the predicted distribution).

    Returns
    -------
    Tensor
        0-dim float64 in ``[-1, 1]``; 0 when either side is constant (where SciPy returns NaN).

    Examples
    --------
    >>> spearman(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    tensor(0.8333, dtype=torch.float64)
    """
    p, t = _flat_valid(_as_tensor(preds, "preds"), _as_tensor(target, "target"), ignore_index)
    for name, x in (("preds", p), ("target", t)):
        if x.ndim != 1 or x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} must be a 1-D real tensor, got {x.dtype} {tuple(x.shape)}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} holds non-finite values")
    if p.shape != t.shape:
        raise ValueError(
            f"preds and target must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}"
        )
    if p.numel() == 0:
        raise ValueError("preds and target are empty: a metric needs at least one sample")
    a, b = _ranks(p.detach()), _ranks(t.detach())
    da, db = a - a.mean(), b - b.mean()
    var_a, var_b = (da**2).sum(), (db**2).sum()
    if float(var_a) <= 0.0 or float(var_b) <= 0.0:
        return torch.zeros((), dtype=torch.float64, device=a.device)
    return ((da * db).sum() / (var_a * var_b).sqrt()).clamp(-1.0, 1.0)


# --------------------------------------------------------------------------------------------
# probabilistic metric
# --------------------------------------------------------------------------------------------
def _flat_probs(probs: Any, target: Any, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """Probabilities (N, C, d1, ...) to (M, C) with the class dim last, and the target alike
    (indices (N, d1, ...) to (M,), distributions to (M, C)); ignored index targets left out."""
    x, t = _as_tensor(probs, "probs"), _as_tensor(target, "target")
    if x.ndim > 2:
        c = x.shape[1]
        if t.shape == x.shape:
            t = t.movedim(1, -1).reshape(-1, c)
        elif t.shape == (x.shape[0], *x.shape[2:]):
            t = t.reshape(-1)
        else:
            raise ValueError(
                f"target must be class indices {(x.shape[0], *x.shape[2:])} or distributions "
                f"{tuple(x.shape)} for probs of shape {tuple(x.shape)}, got {tuple(t.shape)}"
            )
        x = x.movedim(1, -1).reshape(-1, c)
    if ignore_index is not None and t.ndim == 1 and not t.is_floating_point():
        keep = t != V.check_ignore_index(ignore_index)
        if x.ndim == 2 and x.shape[0] == t.shape[0]:
            x, t = x[keep], t[keep]
    return x, t


def _rps_per_sample(probs: Tensor, target: Any, ignore_index: int | None = None) -> Tensor:
    """Validated per-sample RPS (float64, shape (M,))."""
    probs, target = _flat_probs(probs, target, ignore_index)
    p = _checks.check_probs(probs)
    n, c = p.shape
    t = _as_tensor(target, "target")
    if t.ndim == 1:
        t = _check_labels(t, "target")
        if t.shape[0] != n:
            raise ValueError(
                f"probs has {n} rows but target has {t.shape[0]} labels (shape {tuple(t.shape)})"
            )
        _check_range(t, "target", c)
        t_cdf = (torch.arange(c, device=p.device)[None, :] >= t.long()[:, None]).double()
    else:
        if t.shape != p.shape:
            raise ValueError(
                f"target must be class indices (N,) = ({n},) or distributions of the shape of "
                f"probs {tuple(p.shape)}, got shape {tuple(t.shape)}"
            )
        t_cdf = _checks.check_probs(t, "target").double().cumsum(dim=1)
    p_cdf = p.double().cumsum(dim=1)
    # The last CDF term is 1 - 1 = 0 and is left out: the classical RPS averages C - 1 terms.
    return ((p_cdf - t_cdf)[:, :-1] ** 2).sum(dim=1) / (c - 1)


def ranked_probability_score(
    probs: Any,
    target: Any,
    *,
    reduction: Literal["mean", "sum", "none"] = "mean",
    ignore_index: int | None = -100,
) -> Tensor:
    r"""Ranked probability score (Epstein 1969): the squared distance between the predicted and the
    true cumulative distributions, averaged over the ``C - 1`` thresholds.

    .. math::

        \mathrm{RPS}(p, t) = \frac{1}{C-1}\sum_{k=1}^{C-1} (P_k - T_k)^2,\quad
        P_k = \sum_{i \le k} p_i,\ T_k = \sum_{i \le k} t_i

    It is the squared EMD of Hou et al. with the ``1/(C-1)`` normalisation: equal to
    ``emdloss.functional.squared_emd(probs, target, input_type="probs", normalization="rps")``,
    to ``C/(C-1)`` times the authors' ``emd_l2`` (``normalization="class_mean"``), and to
    ``1/(C-1)`` times ``dlordinal.metrics.ranked_probability_score`` (which sums the terms).
    0 for a perfect prediction, at most 1.

    Parameters
    ----------
    probs : Tensor
        Predicted probabilities ``(N, C)`` or ``(N, C, d1, ...)``, ``C >= 2``; rows must sum
        to 1.
    target : Tensor
        True class indices ``(N,)`` / ``(N, d1, ...)`` or true distributions of ``probs``'s
        shape.
    reduction : {"mean", "sum", "none"}
        Mean over samples, sum, or per-sample values ``(M,)``: the valid elements, flattened.
    ignore_index : int or None
        Class-index targets equal to it are left out.

    Returns
    -------
    Tensor
        float64, 0-dim (or ``(N,)`` for ``reduction="none"``).

    Examples
    --------
    >>> ranked_probability_score(torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([2]))
    tensor(0.6250, dtype=torch.float64)
    """
    per_sample = _rps_per_sample(probs, target, ignore_index)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# Public names of this module in emdloss 0.1.0 that now live elsewhere: accessing them here warns.
_MOVED = {
    "confusion_matrix": "emdloss.metrics.confmat",
    "accuracy_from_confmat": "emdloss.metrics.confmat",
    "one_off_accuracy_from_confmat": "emdloss.metrics.confmat",
    "mean_absolute_error_from_confmat": "emdloss.metrics.confmat",
    "root_mean_squared_error_from_confmat": "emdloss.metrics.confmat",
    "per_class_mae_from_confmat": "emdloss.metrics.confmat",
    "average_mae_from_confmat": "emdloss.metrics.confmat",
    "quadratic_weighted_kappa_from_confmat": "emdloss.metrics.confmat",
    "spearman_from_confmat": "emdloss.metrics.confmat",
    "check_positions": "emdloss.metrics._checks",  # internal input checks
    "check_probs": "emdloss.metrics._checks",
}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)
