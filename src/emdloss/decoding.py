r"""Turning a predicted class distribution into one class: which rule for which metric.

A network trained with an EMD loss outputs a distribution :math:`p` over ordered classes.
The best single prediction depends on what the prediction is judged by; each rule below is the
Bayes-optimal decision for one loss, given that :math:`p` is the true posterior:

================  ================================================  ======================
rule              prediction                                        minimises (expected)
================  ================================================  ======================
``"argmax"``      :math:`\arg\max_k p_k`                            0/1 loss: accuracy
``"median"``      smallest :math:`k` with :math:`P_k \ge 1/2`       absolute error: MAE
``"expected"``    class nearest to :math:`\sum_k p_k x_k`           squared error: MSE/RMSE
``"bayes"``       :math:`\arg\min_j \sum_i p_i D_{ij}`              any cost :math:`D`
================  ================================================  ======================

(:math:`P` is the CDF, :math:`x_k` the class positions, default :math:`x_k = k`.) ``"bayes"``
with :math:`D_{ij} = |i - j|` gives the same risk as ``"median"``, with :math:`(i - j)^2` the
same as ``"expected"`` and with :math:`1 - \delta_{ij}` the same as ``"argmax"``; ties may be
broken differently. The paper (Hou et al.) evaluated with argmax (exact and 1-off accuracy).

Do not use the learned matrix of :class:`emdloss.ground.LearnedGroundDistance` as :math:`D`:
its diagonal is 1 and near classes cost less than 0, so ``"bayes"`` would never predict the
most likely class. It is a training surrogate; decide with a real cost such as
:func:`emdloss.ground.ordinal_ground_distance`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from emdloss import _validation as V
from emdloss.vocabulary import RULES

__all__ = [
    "decode",
    "decode_argmax",
    "decode_bayes",
    "decode_expected",
    "decode_median",
]


def _check_probs(probs: Tensor, dim: int) -> tuple[Tensor, int]:
    """Validate a probability tensor and return it with the class axis moved last."""
    if not isinstance(probs, Tensor):
        raise TypeError(f"probs must be a tensor, got {type(probs).__name__}")
    if not probs.is_floating_point():
        raise TypeError(f"probs must be a floating tensor, got {probs.dtype}")
    if probs.ndim == 0:
        raise ValueError("probs must have a class axis, got a scalar")
    if not -probs.ndim <= dim < probs.ndim:
        raise ValueError(f"dim={dim} is out of range for probs of shape {tuple(probs.shape)}")
    p = probs.detach().movedim(dim, -1)
    if p.shape[-1] == 0:
        raise ValueError("probs must have at least one class")
    if not bool(torch.isfinite(p).all()):
        raise ValueError("probs must be finite (found NaN or inf)")
    if p.numel() > 0:
        low = float(p.min())
        if low < 0.0:
            raise ValueError(
                f"probs must be non-negative, got {low}; pass probabilities, e.g. "
                f"logits.softmax(dim={dim}), not logits"
            )
        sums = p.sum(dim=-1)
        worst = float((sums - 1.0).abs().max())
        tol = V.sum_tolerance(probs.dtype)  # the library's one policy, see emdloss._validation
        if worst > tol:
            raise ValueError(
                f"probs must sum to 1 along dim={dim} (within {tol:g}), found a sum off by "
                f"{worst}; apply softmax first"
            )
    return p, p.shape[-1]


def _restore(index: Tensor) -> Tensor:
    return index.to(torch.long)


def decode_argmax(probs: Tensor, *, dim: int = 1) -> Tensor:
    r"""The most probable class (the Bayes decision for accuracy).

    .. math:: \hat y = \arg\max_k p_k

    Ties go to the lowest index.

    Parameters
    ----------
    probs : Tensor
        Class probabilities, class axis ``dim`` (e.g. ``(N, C)`` or ``(N, C, d1, ...)``).
    dim : int
        The class axis.

    Returns
    -------
    LongTensor
        ``probs.shape`` without ``dim``.

    Examples
    --------
    >>> decode_argmax(torch.tensor([[0.1, 0.5, 0.4], [0.4, 0.2, 0.4]]))
    tensor([1, 0])
    """
    p, _ = _check_probs(probs, dim)
    # Explicit first-index tie-breaking: torch.argmax does not promise it on every device.
    best = p.amax(dim=-1, keepdim=True)
    hits = (p == best).to(torch.uint8)
    return _restore(hits.argmax(dim=-1))


def decode_median(probs: Tensor, *, dim: int = 1) -> Tensor:
    r"""The median class: smallest :math:`k` whose CDF reaches one half.

    .. math:: \hat y = \min\{k : P_k \ge \tfrac12\}, \qquad P_k = \sum_{i \le k} p_i

    It minimises the expected absolute error :math:`\sum_i p_i |x_i - x_j|` for any increasing
    class positions :math:`x` (only the order matters), hence the rule for MAE.

    Parameters
    ----------
    probs : Tensor
        Class probabilities, class axis ``dim``.
    dim : int
        The class axis.

    Returns
    -------
    LongTensor
        ``probs.shape`` without ``dim``.

    Examples
    --------
    >>> decode_median(torch.tensor([[0.4, 0.0, 0.0, 0.6], [0.3, 0.3, 0.1, 0.3]]))
    tensor([3, 1])
    """
    p, c = _check_probs(probs, dim)
    cdf = p.to(torch.float64).cumsum(dim=-1)
    # Half of each row's own total, so a sum of 0.9999 does not shift the median.
    half = cdf[..., -1:] / 2.0
    return _restore((cdf < half).sum(dim=-1).clamp_max(c - 1))


def decode_expected(
    probs: Tensor, *, positions: Sequence[float] | Tensor | None = None, dim: int = 1
) -> Tensor:
    r"""The class nearest to the expected position (the decision for squared error).

    .. math::

        \hat y = \arg\min_j |x_j - \mu|, \qquad \mu = \sum_k p_k x_k

    Since :math:`\sum_i p_i (x_i - x_j)^2 = \operatorname{Var} + (\mu - x_j)^2`, this class
    minimises the expected squared error, hence MSE and RMSE. With the default positions
    :math:`x_k = k` it is ``round(mu)`` (halves round to even), clamped to ``[0, C - 1]``.

    Parameters
    ----------
    probs : Tensor
        Class probabilities, class axis ``dim``.
    positions : sequence of float or Tensor, optional
        Strictly increasing class positions (e.g. age-group midpoints). Default ``0..C-1``.
    dim : int
        The class axis.

    Returns
    -------
    LongTensor
        ``probs.shape`` without ``dim``.

    Examples
    --------
    >>> decode_expected(torch.tensor([[0.5, 0.0, 0.5], [0.1, 0.1, 0.8]]))
    tensor([1, 2])
    >>> decode_expected(torch.tensor([[0.4, 0.0, 0.6]]), positions=[0.0, 1.0, 10.0])
    tensor([2])
    """
    p, c = _check_probs(probs, dim)
    p = p.to(torch.float64)
    if positions is None:
        mean = (p * torch.arange(c, dtype=torch.float64, device=p.device)).sum(-1)
        mean = mean / p.sum(-1)
        return _restore(torch.round(mean).clamp(0, c - 1))
    x = torch.as_tensor(positions, dtype=torch.float64, device=p.device)
    if x.shape != (c,):
        raise ValueError(f"positions must have shape ({c},), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()) or (c > 1 and not bool((x[1:] > x[:-1]).all())):
        raise ValueError(f"positions must be finite and strictly increasing, got {x.tolist()}")
    mean = (p * x).sum(-1) / p.sum(-1)
    return _restore((mean[..., None] - x).abs().argmin(dim=-1))


def decode_bayes(probs: Tensor, ground_distance: Tensor, *, dim: int = 1) -> Tensor:
    r"""The Bayes decision under a cost matrix :math:`D` (cost of predicting ``j`` for ``i``).

    .. math:: \hat y = \arg\min_j \sum_i p_i D_{ij}

    Ties go to the lowest index.

    Parameters
    ----------
    probs : Tensor
        Class probabilities, class axis ``dim``.
    ground_distance : Tensor
        ``(C, C)`` finite cost matrix, rows = true class, columns = prediction.
    dim : int
        The class axis.

    Returns
    -------
    LongTensor
        ``probs.shape`` without ``dim``.

    Examples
    --------
    >>> cost = torch.tensor([[0.0, 1.0, 9.0], [1.0, 0.0, 1.0], [9.0, 1.0, 0.0]])
    >>> decode_bayes(torch.tensor([[0.6, 0.0, 0.4]]), cost)
    tensor([1])
    """
    p, c = _check_probs(probs, dim)
    if not isinstance(ground_distance, Tensor):
        raise TypeError(f"ground_distance must be a tensor, got {type(ground_distance).__name__}")
    if ground_distance.shape != (c, c):
        raise ValueError(
            f"ground_distance must have shape ({c}, {c}) for {c} classes, "
            f"got {tuple(ground_distance.shape)}"
        )
    d = ground_distance.detach().to(device=p.device, dtype=torch.float64)
    if not bool(torch.isfinite(d).all()):
        raise ValueError("ground_distance must be finite")
    risk = p.to(torch.float64) @ d
    best = risk.amin(dim=-1, keepdim=True)
    # Equal risks up to rounding count as ties, broken towards the lowest index.
    scale = d.abs().max().clamp_min(1.0)
    hits = (risk <= best + 1e-12 * scale).to(torch.uint8)
    return _restore(hits.argmax(dim=-1))


def decode(
    probs: Tensor,
    rule: str = "argmax",
    *,
    ground_distance: Tensor | None = None,
    positions: Sequence[float] | Tensor | None = None,
    dim: int = 1,
) -> Tensor:
    """Decode class probabilities into class indices with one of :data:`emdloss.vocabulary.RULES`.

    Parameters
    ----------
    probs : Tensor
        Class probabilities (not logits), class axis ``dim``.
    rule : {"argmax", "median", "expected", "bayes"}
        See the module docstring for which rule suits which metric.
    ground_distance : Tensor, optional
        ``(C, C)`` cost matrix; required by ``"bayes"`` and rejected by the other rules.
    positions : sequence of float or Tensor, optional
        Class positions for ``"expected"``; rejected by the other rules.
    dim : int
        The class axis.

    Returns
    -------
    LongTensor
        Class indices, ``probs.shape`` without ``dim``.

    Examples
    --------
    >>> p = torch.tensor([[0.35, 0.0, 0.3, 0.35]])
    >>> [int(decode(p, rule)) for rule in ("argmax", "median", "expected")]
    [0, 2, 2]
    >>> int(decode(p, "bayes", ground_distance=torch.ones(4, 4) - torch.eye(4)))
    0
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if ground_distance is not None and rule != "bayes":
        raise ValueError(f"ground_distance is only used by rule='bayes', got rule={rule!r}")
    if positions is not None and rule != "expected":
        raise ValueError(
            f"positions are only used by rule='expected' (argmax, median and bayes do not "
            f"depend on them), got rule={rule!r}"
        )
    if rule == "argmax":
        return decode_argmax(probs, dim=dim)
    if rule == "median":
        return decode_median(probs, dim=dim)
    if rule == "expected":
        return decode_expected(probs, positions=positions, dim=dim)
    if ground_distance is None:
        raise ValueError("rule='bayes' needs ground_distance, a (C, C) cost matrix")
    return decode_bayes(probs, ground_distance, dim=dim)
