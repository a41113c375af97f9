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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from emdloss import _validation as V

__all__ = [
    "accuracy",
    "accuracy_from_confmat",
    "average_mae",
    "average_mae_from_confmat",
    "confusion_matrix",
    "mean_absolute_error",
    "mean_absolute_error_from_confmat",
    "one_off_accuracy",
    "one_off_accuracy_from_confmat",
    "per_class_mae",
    "per_class_mae_from_confmat",
    "quadratic_weighted_kappa",
    "quadratic_weighted_kappa_from_confmat",
    "ranked_probability_score",
    "root_mean_squared_error",
    "root_mean_squared_error_from_confmat",
    "spearman",
    "spearman_from_confmat",
]

# Rows of a probability matrix must sum to 1 within this tolerance (per dtype).


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


def check_probs(probs: Any, name: str = "probs") -> Tensor:
    """Validate a probability matrix ``(N, C)``: finite, non-negative, rows summing to 1.

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
            f"{name} row {i} sums to {float(sums[i]):.6g}, expected 1 (within {tol}); "
            "pass probabilities (softmax of the logits), not logits"
        )
    return x


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
    """Exact accuracy ``trace(M) / sum(M)`` from a confusion matrix (see :func:`accuracy`).

    Examples
    --------
    >>> accuracy_from_confmat(torch.tensor([[2, 1, 0], [0, 1, 1], [0, 0, 3]]))
    tensor(0.7500, dtype=torch.float64)
    """
    cm = _check_confmat(confmat)
    return cm.diagonal().sum() / cm.sum()


def one_off_accuracy_from_confmat(confmat: Tensor) -> Tensor:
    """Share of samples with ``|pred - true| <= 1`` (see :func:`one_off_accuracy`).

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
    :func:`mean_absolute_error`).

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
    :func:`root_mean_squared_error`).

    Examples
    --------
    >>> root_mean_squared_error_from_confmat(torch.tensor([[2, 1, 0], [0, 1, 1], [0, 0, 3]]))
    tensor(0.5000, dtype=torch.float64)
    """
    cm = _check_confmat(confmat)
    pos = None if positions is None else check_positions(positions, cm.shape[0])
    return ((cm * _distance(cm.shape[0], pos, cm.device) ** 2).sum() / cm.sum()).sqrt()


def per_class_mae_from_confmat(confmat: Tensor, positions: Any = None) -> Tensor:
    """MAE of each true class; NaN for a class with no sample (see :func:`per_class_mae`).

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
    """Macro-averaged MAE over the true classes present (see :func:`average_mae`).

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
    :func:`quadratic_weighted_kappa`).

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
    return accuracy_from_confmat(_confmat(p, t, c))


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
    return one_off_accuracy_from_confmat(_confmat(p, t, c))


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
    return mean_absolute_error_from_confmat(_confmat(p, t, c), pos)


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
    return root_mean_squared_error_from_confmat(_confmat(p, t, c), pos)


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
    return per_class_mae_from_confmat(_confmat(p, t, c), pos)


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
    return average_mae_from_confmat(_confmat(p, t, c), pos)


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
    return quadratic_weighted_kappa_from_confmat(_confmat(p, t, c))


def _ranks(x: Tensor) -> Tensor:
    """Average ranks (1-based, ties averaged) of a 1-D tensor."""
    _, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    return _mid_ranks(counts.double())[inverse]


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
    p = check_probs(probs)
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
        t_cdf = check_probs(t, "target").double().cumsum(dim=1)
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
