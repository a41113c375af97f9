r"""Measures for distribution targets (vote histograms): functional and stateful.

A prediction ``probs`` and a target ``target`` are both distributions over :math:`C` ordered
levels, tensors of shape ``(N, C)`` whose rows are non-negative and sum to 1. Every measure is
computed per item and averaged over items, except ``mean_rmse``, ``lcc`` and ``srcc``, which are
computed over all items at once. :data:`emdloss.vocabulary.DISTRIBUTION_METRIC_MODES` is the one table of the keys
and their directions:

================= ========= =========================================================
key               better    per item (``t`` target, ``p`` prediction)
================= ========= =========================================================
``chebyshev``     lower     :math:`\max_j |t_j - p_j|`
``clark``         lower     :math:`\sqrt{\sum_j (t_j - p_j)^2 / (t_j + p_j)^2}`
``canberra``      lower     :math:`\sum_j |t_j - p_j| / (t_j + p_j)`
``kl``            lower     :math:`\sum_j t_j \ln(t_j / p_j)`
``cosine``        higher    :math:`\langle t, p\rangle / (\|t\| \|p\|)`
``intersection``  higher    :math:`\sum_j \min(t_j, p_j)`
``emd2``          lower     :math:`\frac1C \sum_k (T_k - P_k)^2` (CDFs :math:`T, P`)
``nima_emd``      lower     :math:`\sqrt{\frac1C \sum_k (T_k - P_k)^2}`
``mean_mae``      lower     :math:`|\mu(p) - \mu(t)|`, :math:`\mu(q) = \sum_j x_j q_j`
``mean_rmse``     lower     :math:`\sqrt{\operatorname{mean}_n (\mu(p_n) - \mu(t_n))^2}`
``lcc``           higher    Pearson's r of :math:`\mu(p_n)` against :math:`\mu(t_n)`
``srcc``          higher    Spearman's rho of the same (mid-ranks for ties)
``mode_accuracy`` higher    :math:`[\arg\max_j p_j \in \arg\max_j t_j]`
================= ========= =========================================================

The first six are the measures of Geng's label-distribution-learning survey (IEEE TKDE 2016),
computed exactly as ``pyldl.metrics`` does: Clark, Canberra and KL clip both distributions to
:math:`[\epsilon, 1]` with :math:`\epsilon` = :data:`EPS` (float64's machine epsilon) first, so a
zero in the target contributes :math:`\approx 0` and a zero in the prediction a large but finite
term; Chebyshev, cosine and intersection use the values as given (intersection as
:math:`1 - \frac12 \sum_j |t_j - p_j|`, equal to :math:`\sum_j \min(t_j, p_j)` for distributions).

``emd2`` is the paper's squared EMD (Hou, Yu & Samaras), :func:`emdloss.functional.squared_emd`
with ``normalization="class_mean"`` (the :math:`1/C` form; the sum form
:math:`\sum_k (T_k - P_k)^2` is ``C * emd2``, the ranked probability score ``C/(C-1) * emd2``).
``nima_emd`` is NIMA's EMD with :math:`r = 2` (Talebi & Milanfar 2018), the square root of
``emd2`` per item, then averaged. Both use the level *indices* (unit gaps), whatever the
``positions``.

The mean score :math:`\mu(q) = \sum_j x_j q_j` uses the level values :math:`x_j`: ``positions``
when given, else the indices :math:`0, \dots, C-1` (as the rest of :mod:`emdloss.metrics`).
``mean_mae``, ``mean_rmse``, ``lcc`` and ``srcc`` do not change when the positions are shifted,
so ``1, ..., C`` (PyLDL's and NIMA's convention) gives the same values as the default.
``lcc`` and ``srcc`` are 0 when either side is constant (a single item, or a model that predicts
one distribution for all), never NaN. The mean scores are summed level by level and correlated
in float64, so an item's score does not depend on the items batched with it, and ``srcc`` ties
scores that are equal up to rounding (22/6 reached from two vote histograms): batches,
processes and the whole data rank alike. Half-precision inputs are measured in float32 and the
square roots have gradient 0 where a prediction equals its target. ``mode_accuracy`` counts an item as right when the
predicted mode (first :math:`\arg\max`) is one of the target's modes: a level within
:data:`MODE_TOLERANCE` of the target's maximum (vote histograms often have tied modes).

:func:`distribution_metrics` gives every measure at once as floats, :class:`DistributionMetrics`
the same from batches, synchronised under DDP. :func:`noise_floor` estimates what a model that
knew each item's true distribution would score, given vote counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from emdloss import _validation as V
from emdloss.errors import UserError
from emdloss.metrics._checks import _as_tensor, check_positions, check_probs
from emdloss.vocabulary import DISTRIBUTION_METRIC_MODES

__all__ = [
    "DISTRIBUTION_METRIC_KEYS",
    "EPS",
    "MODE_TOLERANCE",
    "DistributionMetrics",
    "NoiseFloor",
    "canberra",
    "chebyshev",
    "check_distribution",
    "check_distributions",
    "clark",
    "cosine_similarity",
    "distribution_metrics",
    "emd2",
    "intersection",
    "kl_divergence",
    "lcc",
    "mean_score",
    "mean_score_mae",
    "mean_score_rmse",
    "mode_accuracy",
    "nima_emd",
    "noise_floor",
    "srcc",
]

DISTRIBUTION_METRIC_KEYS: tuple[str, ...] = tuple(DISTRIBUTION_METRIC_MODES)

#: Lower clip of Clark, Canberra and KL, as ``pyldl.metrics`` (``np.finfo(np.float64).eps``).
EPS: float = float(torch.finfo(torch.float64).eps)
#: A target level within this of the row's maximum is one of its modes (``mode_accuracy``).
MODE_TOLERANCE: float = 1e-6

Reduction = Literal["mean", "sum", "none"]
_SUM_HINT = "give distributions (proportions, or a softmax), not counts or logits"


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------
def check_distribution(x: Any, name: str = "probs") -> Tensor:
    """Validate one matrix of distributions ``(N, C)``: floating, finite, non-negative, rows
    summing to 1 (within ``emdloss._validation.sum_tolerance`` of the dtype), by
    ``emdloss.metrics.functional.check_probs``; a :class:`~emdloss.errors.UserError` naming
    ``name``, the row (and column) and the value. Returns ``x`` as a tensor, still attached to
    autograd.

    Examples
    --------
    >>> check_distribution([[0.2, 0.8]], "target")
    tensor([[0.2000, 0.8000]])
    >>> check_distribution([[0.2, -0.1, 0.9]], "target")
    Traceback (most recent call last):
    ...
    emdloss.errors.UserError: target[0, 1] = -0.1 is negative; expected probabilities
    """
    tensor = _as_tensor(x, name)
    try:
        check_probs(tensor, name, hint=_SUM_HINT)
    except (TypeError, ValueError) as error:
        raise UserError(str(error)) from error
    return tensor


def check_distributions(probs: Any, target: Any) -> tuple[Tensor, Tensor]:
    """Validate a prediction and a target: the same shape ``(N, C)``, finite, non-negative,
    rows summing to 1 (within :func:`emdloss._validation.sum_tolerance` of the dtype).

    Returns both as tensors of one floating dtype, still attached to autograd. Raises
    :class:`~emdloss.errors.UserError` naming the offending row (and column) and value.

    Examples
    --------
    >>> p, t = check_distributions([[0.5, 0.5]], torch.tensor([[1.0, 0.0]]))
    >>> p.dtype, t.dtype
    (torch.float32, torch.float32)
    >>> check_distributions([[0.5, 0.6]], [[1.0, 0.0]])
    Traceback (most recent call last):
    ...
    emdloss.errors.UserError: probs row 0 sums to 1.1, expected 1 (within 0.0001); give distributions (proportions, or a softmax), not counts or logits
    """
    p, t = check_distribution(probs, "probs"), check_distribution(target, "target")
    if p.shape != t.shape:
        raise UserError(
            f"probs and target must have the same shape (N, C), got {tuple(p.shape)} and "
            f"{tuple(t.shape)}"
        )
    if p.device != t.device:
        raise UserError(f"probs is on {p.device} but target is on {t.device}")
    dtype = torch.promote_types(p.dtype, t.dtype)
    return p.to(dtype), t.to(dtype)


def _positions(positions: Sequence[float] | Tensor | None, like: Tensor) -> Tensor:
    c = like.shape[1]
    if positions is None:
        return torch.arange(c, dtype=like.dtype, device=like.device)
    try:
        pos = check_positions(positions, c)
    except ValueError as error:
        raise UserError(str(error)) from error
    return pos.to(dtype=like.dtype, device=like.device)


def _per_item_measure(
    formula: Callable[[Tensor, Tensor], Tensor], probs: Any, target: Any, reduction: str
) -> Tensor:
    p, t = check_distributions(probs, target)
    # Half precision computes in float32 (EPS underflows to 0 in float16: 0/0, 0 log 0).
    work = torch.promote_types(p.dtype, torch.float32)
    return _reduce(formula(p.to(work), t.to(work)), reduction).to(p.dtype)


def _mean_scores(q: Tensor, pos: Tensor) -> Tensor:
    r""":math:`\sum_j x_j q_j` per row, accumulated level by level: a row's value does not depend
    on the rows batched with it (a matrix product rounds them differently), so tied mean scores
    stay tied and batches, processes and the whole data give the same ranks."""
    total = q[:, 0] * pos[0]
    for j in range(1, q.shape[1]):
        total = total + q[:, j] * pos[j]
    return total


def _mean_scores64(
    p: Tensor, t: Tensor, positions: Sequence[float] | Tensor | None
) -> tuple[Tensor, Tensor]:
    """Both sides' mean scores in float64: correlations of half-precision scores overflow or
    read a spread as constant."""
    p, t = p.double(), t.double()
    pos = _positions(positions, p)
    return _mean_scores(p, pos), _mean_scores(t, pos)


def _sqrt(x: Tensor) -> Tensor:
    """Square root whose gradient at 0 is 0, not NaN (a prediction equal to its target)."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), 0.0 * x)


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise UserError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# --------------------------------------------------------------------------------------------
# per-item formulas (inputs already checked)
# --------------------------------------------------------------------------------------------
def _clip(x: Tensor) -> Tensor:
    return x.clamp(EPS, 1.0)


def _chebyshev(p: Tensor, t: Tensor) -> Tensor:
    return (t - p).abs().amax(dim=1)


def _clark(p: Tensor, t: Tensor) -> Tensor:
    p, t = _clip(p), _clip(t)
    return _sqrt((((t - p) / (t + p)) ** 2).sum(dim=1))


def _canberra(p: Tensor, t: Tensor) -> Tensor:
    p, t = _clip(p), _clip(t)
    return ((t - p).abs() / (t + p)).sum(dim=1)


def _kl(p: Tensor, t: Tensor) -> Tensor:
    p, t = _clip(p), _clip(t)
    return (t * (t.log() - p.log())).sum(dim=1)


def _cosine(p: Tensor, t: Tensor) -> Tensor:
    return (p * t).sum(dim=1) / (p.norm(dim=1) * t.norm(dim=1))


def _intersection(p: Tensor, t: Tensor) -> Tensor:
    return 1.0 - 0.5 * (t - p).abs().sum(dim=1)


def _emd2(p: Tensor, t: Tensor) -> Tensor:
    # The losses' unchecked core: the inputs were checked at their own dtype's tolerance, and
    # squared_emd would check them again at their cast dtype's (a float16 softmax, cast to
    # float64, is off 1 by more than 1e-6).
    from emdloss import _ordinal

    return _ordinal.cdf_loss(p, t, None, squared=True, input_type="probs") / p.shape[1]


def _nima_emd(p: Tensor, t: Tensor) -> Tensor:
    return _sqrt(_emd2(p, t))


def _mode_hit(p: Tensor, t: Tensor) -> Tensor:
    d = t.detach()
    modes = d >= d.amax(dim=1, keepdim=True) - MODE_TOLERANCE
    return modes.gather(1, p.detach().argmax(dim=1, keepdim=True)).squeeze(1).to(p.dtype)


#: Per-item formulas of the additive measures, by key.
_PER_ITEM = {
    "chebyshev": _chebyshev,
    "clark": _clark,
    "canberra": _canberra,
    "kl": _kl,
    "cosine": _cosine,
    "intersection": _intersection,
    "emd2": _emd2,
}


def _rounding(x: Tensor) -> Tensor:
    """How far apart two values of ``x`` (along the last dim) may be and still be equal up to
    rounding: 64 units in the last place of its largest magnitude (at least 1)."""
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1.0)
    return 64 * torch.finfo(x.dtype).eps * scale


def _mid_ranks(x: Tensor) -> Tensor:
    """Ranks 1..N along the last dim, ties sharing their average rank (any leading dims); values
    equal up to rounding (:func:`_rounding`) are tied: 22/6 reached by two sums of votes."""
    values, order = x.sort(dim=-1)
    n = x.shape[-1]
    index = torch.arange(n, device=x.device).expand_as(values)
    new = torch.ones_like(values, dtype=torch.bool)
    # The first of a run of equal values.
    new[..., 1:] = values[..., 1:] - values[..., :-1] > _rounding(x)
    first = torch.where(new, index, torch.zeros_like(index)).cummax(dim=-1).values
    last_new = torch.ones_like(new)
    last_new[..., :-1] = new[..., 1:]  # the last of a run
    last = torch.where(last_new, index, torch.full_like(index, n - 1)).flip(-1).cummin(-1).values
    mid = (first + last.flip(-1)).to(x.dtype) / 2.0 + 1.0
    return torch.empty_like(mid).scatter_(-1, order, mid)


def _pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson's r along the last dim; 0 where either side is constant (or a single item)."""
    xc = x - x.mean(dim=-1, keepdim=True)
    yc = y - y.mean(dim=-1, keepdim=True)
    den = ((xc * xc).sum(dim=-1) * (yc * yc).sum(dim=-1)).sqrt()
    constant = _constant(x) | _constant(y)
    r = (xc * yc).sum(dim=-1) / torch.where(constant, torch.ones_like(den), den)
    return torch.where(constant, torch.zeros_like(r), r.clamp(-1.0, 1.0))


def _constant(x: Tensor) -> Tensor:
    """Whether ``x`` is constant along the last dim up to rounding: one distribution predicted
    for every item gives mean scores that differ in the last bits (a matrix product rounds rows
    differently), and their Pearson's r is then noise, not 0."""
    span = x.amax(dim=-1) - x.amin(dim=-1)
    return span <= _rounding(x).squeeze(-1)


def _spearman(x: Tensor, y: Tensor) -> Tensor:
    x, y = x.detach(), y.detach()
    r = _pearson(_mid_ranks(x), _mid_ranks(y))
    return torch.where(_constant(x) | _constant(y), torch.zeros_like(r), r)


# --------------------------------------------------------------------------------------------
# functional measures
# --------------------------------------------------------------------------------------------
def chebyshev(probs: Any, target: Any, *, reduction: Reduction = "mean") -> Tensor:
    r"""Chebyshev distance :math:`\max_j |t_j - p_j|` per item (lower is better).

    Parameters
    ----------
    probs, target : Tensor or array-like
        Predicted and target distributions ``(N, C)``, checked by :func:`check_distributions`.
    reduction : {"mean", "sum", "none"}
        Mean or sum over items, or the ``(N,)`` values.

    Returns
    -------
    Tensor
        In the inputs' (promoted) dtype, differentiable.

    Examples
    --------
    >>> chebyshev(torch.tensor([[0.2, 0.3, 0.5]]), torch.tensor([[0.5, 0.5, 0.0]]))
    tensor(0.5000)
    """
    return _per_item_measure(_chebyshev, probs, target, reduction)


def clark(probs: Any, target: Any, *, reduction: Reduction = "mean") -> Tensor:
    r"""Clark distance per item (lower is better), both sides clipped to :math:`[\epsilon, 1]`.

    .. math:: \mathrm{Clark}(t, p) = \sqrt{\sum_j \frac{(t_j - p_j)^2}{(t_j + p_j)^2}}

    Parameters and returns as :func:`chebyshev`.

    Examples
    --------
    >>> clark(torch.tensor([[0.25, 0.75]]), torch.tensor([[0.75, 0.25]]))
    tensor(0.7071)
    """
    return _per_item_measure(_clark, probs, target, reduction)


def canberra(probs: Any, target: Any, *, reduction: Reduction = "mean") -> Tensor:
    r"""Canberra distance per item (lower is better), both sides clipped to :math:`[\epsilon, 1]`.

    .. math:: \mathrm{Canberra}(t, p) = \sum_j \frac{|t_j - p_j|}{t_j + p_j}

    Parameters and returns as :func:`chebyshev`.

    Examples
    --------
    >>> canberra(torch.tensor([[0.25, 0.75]]), torch.tensor([[0.75, 0.25]]))
    tensor(1.)
    """
    return _per_item_measure(_canberra, probs, target, reduction)


def kl_divergence(probs: Any, target: Any, *, reduction: Reduction = "mean") -> Tensor:
    r"""Kullback-Leibler divergence of the prediction from the target (lower is better).

    .. math:: \mathrm{KL}(t \,\|\, p) = \sum_j t_j \ln \frac{t_j}{p_j}

    with both sides clipped to :math:`[\epsilon, 1]` first (:data:`EPS`, as ``pyldl``), so a
    zero target level adds :math:`\approx 0` and a zero predicted level where the target has mass
    a large finite term. Soft cross-entropy minus the target's entropy.

    Parameters and returns as :func:`chebyshev`.

    Examples
    --------
    >>> kl_divergence(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]]))  # ln 2
    tensor(0.6931)
    """
    return _per_item_measure(_kl, probs, target, reduction)


def cosine_similarity(probs: Any, target: Any, *, reduction: Reduction = "mean") -> Tensor:
    r"""Cosine similarity :math:`\langle t, p\rangle / (\|t\|_2 \|p\|_2)` per item (higher is
    better).

    Parameters and returns as :func:`chebyshev`.

    Examples
    --------
    >>> cosine_similarity(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]]))
    tensor(0.7071)
    """
    return _per_item_measure(_cosine, probs, target, reduction)


def intersection(probs: Any, target: Any, *, reduction: Reduction = "mean") -> Tensor:
    r"""Intersection :math:`\sum_j \min(t_j, p_j) = 1 - \frac12 \sum_j |t_j - p_j|` per item
    (higher is better; one minus the total-variation distance).

    Parameters and returns as :func:`chebyshev`.

    Examples
    --------
    >>> intersection(torch.tensor([[0.2, 0.3, 0.5]]), torch.tensor([[0.5, 0.5, 0.0]]))
    tensor(0.5000)
    """
    return _per_item_measure(_intersection, probs, target, reduction)


def emd2(probs: Any, target: Any, *, reduction: Reduction = "mean") -> Tensor:
    r"""The paper's squared EMD per item (lower is better), with :math:`P, T` the CDFs:

    .. math:: \mathrm{EMD}^2(t, p) = \frac{1}{C} \sum_{k=1}^{C} (T_k - P_k)^2

    :func:`emdloss.functional.squared_emd` on probabilities with
    ``normalization="class_mean"``; multiply by :math:`C` for the sum form (dlordinal, the
    reference table), by :math:`C/(C-1)` for the ranked probability score.

    Parameters and returns as :func:`chebyshev`.

    Examples
    --------
    >>> emd2(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[0.0, 0.0, 1.0]]))  # (0.25+0.64)/3
    tensor(0.2967)
    """
    return _per_item_measure(_emd2, probs, target, reduction)


def nima_emd(probs: Any, target: Any, *, reduction: Reduction = "mean") -> Tensor:
    r"""NIMA's EMD (:math:`r = 2`) per item, the square root of :func:`emd2` (lower is better):

    .. math:: \mathrm{EMD}_{\mathrm{NIMA}}(t, p) = \Big(\frac{1}{C} \sum_{k=1}^{C}
              |T_k - P_k|^2\Big)^{1/2}

    averaged over items *after* the root (so not the root of the mean :func:`emd2`).

    Parameters and returns as :func:`chebyshev`.

    Examples
    --------
    >>> nima_emd(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    tensor(0.3536)
    """
    return _per_item_measure(_nima_emd, probs, target, reduction)


def mean_score(probs: Any, positions: Sequence[float] | Tensor | None = None) -> Tensor:
    r"""Mean score :math:`\mu(q) = \sum_j x_j q_j` of each distribution ``(N, C)`` -> ``(N,)``,
    with level values :math:`x` = ``positions`` (default the indices :math:`0, \dots, C-1`).

    Examples
    --------
    >>> mean_score(torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]), positions=[1.0, 2.0, 3.0])
    tensor([2., 2.])
    """
    q = check_distribution(probs, "probs")
    return _mean_scores(q, _positions(positions, q))


def mean_score_mae(
    probs: Any,
    target: Any,
    *,
    positions: Sequence[float] | Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Absolute error of the mean score, :math:`|\mu(p) - \mu(t)|` per item (lower is better);
    the key ``mean_mae``. See :func:`mean_score` for ``positions``.

    Examples
    --------
    >>> p = torch.tensor([[0.5, 0.5, 0.0]])
    >>> mean_score_mae(p, torch.tensor([[0.0, 0.0, 1.0]]))  # |0.5 - 2|
    tensor(1.5000)
    """
    p, t = check_distributions(probs, target)
    pos = _positions(positions, p)
    return _reduce((_mean_scores(p, pos) - _mean_scores(t, pos)).abs(), reduction)


def mean_score_rmse(
    probs: Any, target: Any, *, positions: Sequence[float] | Tensor | None = None
) -> Tensor:
    r"""Root mean squared error of the mean score over items (lower is better); the key
    ``mean_rmse``:

    .. math:: \sqrt{\frac1N \sum_n (\mu(p_n) - \mu(t_n))^2}

    Examples
    --------
    >>> p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    >>> mean_score_rmse(p, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # sqrt((0 + 1) / 2)
    tensor(0.7071)
    """
    p, t = check_distributions(probs, target)
    pos = _positions(positions, p)
    return _sqrt(((_mean_scores(p, pos) - _mean_scores(t, pos)) ** 2).mean())


def lcc(probs: Any, target: Any, *, positions: Sequence[float] | Tensor | None = None) -> Tensor:
    r"""Linear correlation coefficient (Pearson's r) of the predicted against the target mean
    scores over items (higher is better; NIMA's LCC); 0 when either side is constant.

    .. math:: r = \frac{\sum_n (\mu_n - \bar\mu)(\nu_n - \bar\nu)}
              {\sqrt{\sum_n (\mu_n - \bar\mu)^2 \sum_n (\nu_n - \bar\nu)^2}},
              \quad \mu_n = \mu(p_n),\ \nu_n = \mu(t_n)

    Examples
    --------
    >>> p = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    >>> t = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    >>> lcc(p, t)
    tensor(0.9966)
    """
    p, t = check_distributions(probs, target)
    return _pearson(*_mean_scores64(p, t, positions)).to(p.dtype)


def srcc(probs: Any, target: Any, *, positions: Sequence[float] | Tensor | None = None) -> Tensor:
    r"""Spearman's rank correlation of the predicted against the target mean scores (higher is
    better; NIMA's SRCC): Pearson's r of their mid-ranks (ties share the average rank); 0 when
    either side is constant. Not differentiable.

    Examples
    --------
    >>> p = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    >>> t = torch.tensor([[1.0, 0.0], [0.6, 0.4], [0.0, 1.0]])
    >>> srcc(p, t)
    tensor(1.)
    """
    p, t = check_distributions(probs, target)
    return _spearman(*_mean_scores64(p, t, positions)).to(p.dtype)


def mode_accuracy(probs: Any, target: Any, *, reduction: Reduction = "mean") -> Tensor:
    r"""Whether the predicted mode (first :math:`\arg\max_j p_j`) is a mode of the target (a level
    within :data:`MODE_TOLERANCE` of :math:`\max_j t_j`), per item (higher is better). Not
    differentiable. Parameters and returns as :func:`chebyshev`.

    Examples
    --------
    >>> p = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.3, 0.2]])
    >>> t = torch.tensor([[0.0, 0.5, 0.5], [0.2, 0.4, 0.4]])  # the first has two modes
    >>> mode_accuracy(p, t)
    tensor(0.5000)
    """
    return _per_item_measure(_mode_hit, probs, target, reduction)


def _per_item(p: Tensor, t: Tensor, pos: Tensor) -> dict[str, Tensor]:
    """Every additive measure per item, plus the mean scores (checked float inputs)."""
    values = {key: f(p, t) for key, f in _PER_ITEM.items()}
    values["nima_emd"] = _sqrt(values["emd2"])
    mu_p, mu_t = _mean_scores(p, pos), _mean_scores(t, pos)
    values["mean_mae"] = (mu_p - mu_t).abs()
    values["mean_se"] = (mu_p - mu_t) ** 2
    values["mode_accuracy"] = _mode_hit(p, t)
    values["mu_pred"], values["mu_target"] = mu_p, mu_t
    return values


def _finish(means: dict[str, Tensor], mu_pred: Tensor, mu_target: Tensor) -> dict[str, Tensor]:
    """The dict of :data:`DISTRIBUTION_METRIC_KEYS` from item means and all mean scores."""
    out = dict(means)
    out["mean_rmse"] = _sqrt(out.pop("mean_se"))
    out["lcc"] = _pearson(mu_pred, mu_target)
    out["srcc"] = _spearman(mu_pred, mu_target)
    return {key: out[key] for key in DISTRIBUTION_METRIC_KEYS}


#: Keys averaged over items (the states of :class:`DistributionMetrics`), in order.
_ADDITIVE: tuple[str, ...] = (*_PER_ITEM, "nima_emd", "mean_mae", "mean_se", "mode_accuracy")


def distribution_metrics(
    probs: Any, target: Any, *, positions: Sequence[float] | Tensor | None = None
) -> dict[str, float]:
    """Every distribution measure of a prediction against a target, as floats (float64 maths).

    Parameters
    ----------
    probs, target : Tensor or array-like
        Predicted and target distributions ``(N, C)``.
    positions : sequence of float, optional
        Level values for the mean score (default the indices ``0 .. C-1``).

    Returns
    -------
    dict
        The keys of :data:`DISTRIBUTION_METRIC_KEYS`, in that order (see the module's table).

    Examples
    --------
    >>> p = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.8, 0.1]])
    >>> t = torch.tensor([[0.0, 0.5, 0.5], [0.0, 1.0, 0.0]])
    >>> scores = distribution_metrics(p, t, positions=[1.0, 2.0, 3.0])
    >>> list(scores) == list(DISTRIBUTION_METRIC_KEYS)
    True
    >>> round(scores["chebyshev"], 4), round(scores["emd2"], 4), scores["mode_accuracy"]
    (0.2, 0.01, 1.0)
    """
    p, t = check_distributions(probs, target)
    p, t = p.detach().double(), t.detach().double()
    values = _per_item(p, t, _positions(positions, p))
    means = {key: values[key].mean() for key in _ADDITIVE}
    out = _finish(means, values["mu_pred"], values["mu_target"])
    return {key: float(v) for key, v in out.items()}


# --------------------------------------------------------------------------------------------
# stateful
# --------------------------------------------------------------------------------------------
class DistributionMetrics(Metric):
    r"""Every distribution measure from batches, synchronised under DDP.

    ``compute()`` returns a dict with the keys of :data:`DISTRIBUTION_METRIC_KEYS`, 0-dim float64
    tensors equal to :func:`distribution_metrics` on all the items seen, across processes. The
    per-item sums are reduced by summation; ``lcc`` and ``srcc`` need every item, so the predicted
    and target mean scores are kept (two floats per item, concatenated across processes).

    Parameters
    ----------
    num_classes : int
        ``C`` (the number of levels).
    positions : sequence of float, optional
        Level values for the mean score (default the indices ``0 .. C-1``).
    validate_args : bool
        Check shapes and that rows are distributions (costs a device sync per batch).
    **kwargs
        Passed to :class:`torchmetrics.Metric`.

    Examples
    --------
    >>> m = DistributionMetrics(num_classes=3)
    >>> m.update(torch.tensor([[0.2, 0.3, 0.5]]), torch.tensor([[0.0, 0.5, 0.5]]))
    >>> m.update(torch.tensor([[0.1, 0.8, 0.1]]), torch.tensor([[0.0, 1.0, 0.0]]))
    >>> round(float(m.compute()["chebyshev"]), 4)
    0.2
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False
    sums: Tensor
    count: Tensor
    mu_pred: list[Tensor]
    mu_target: list[Tensor]

    def __init__(
        self,
        num_classes: int,
        positions: Sequence[float] | Tensor | None = None,
        *,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        try:
            self.num_classes = V.check_num_classes(num_classes, minimum=2)
        except (TypeError, ValueError) as error:
            raise UserError(str(error)) from error
        self.positions: list[float] | None = (
            None
            if positions is None
            else _positions(positions, torch.zeros(1, num_classes, dtype=torch.float64)).tolist()
        )
        self.validate_args = validate_args
        self.add_state(
            "sums", default=torch.zeros(len(_ADDITIVE), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("mu_pred", default=[], dist_reduce_fx="cat")
        self.add_state("mu_target", default=[], dist_reduce_fx="cat")

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The keys of :meth:`compute`'s dict, in order."""
        return DISTRIBUTION_METRIC_KEYS

    @property
    def dtype(self) -> torch.dtype:
        """float64, the dtype of the states: torchmetrics gives a process that saw no item an
        empty mean-score state of this dtype, and a float32 one beside the others' float64
        would make the all-gather abort (gloo: "data size doesn't match")."""
        return torch.float64

    def update(self, probs: Any, target: Any) -> None:
        """Add a batch of predicted and target distributions ``(N, C)``."""
        if self.validate_args:
            p, t = check_distributions(probs, target)
        else:
            p, t = _as_tensor(probs, "probs"), _as_tensor(target, "target")
        if p.shape[-1] != self.num_classes:
            raise UserError(f"probs has {p.shape[-1]} levels but num_classes is {self.num_classes}")
        p, t = p.detach().double(), t.detach().double()
        values = _per_item(p, t, _positions(self.positions, p))
        sums = torch.stack([values[key].sum() for key in _ADDITIVE])
        self.sums += sums.to(self.sums.device)
        self.count += p.shape[0]
        self.mu_pred.append(values["mu_pred"])
        self.mu_target.append(values["mu_target"])

    def compute(self) -> dict[str, Tensor]:
        """The measures of all the items seen, as a dict of 0-dim float64 tensors."""
        count = int(self.count)
        if count == 0:
            raise RuntimeError("DistributionMetrics.compute() called before any item was added")
        means = {key: self.sums[i] / count for i, key in enumerate(_ADDITIVE)}

        def cat(x: Tensor | list[Tensor]) -> Tensor:
            return torch.cat(x) if isinstance(x, list) else x  # a list before sync, else a tensor

        return _finish(means, cat(self.mu_pred), cat(self.mu_target))


# --------------------------------------------------------------------------------------------
# noise floor
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseFloor:
    """What a model that predicted each item's true distribution would score (see
    :func:`noise_floor`): per measure, the ``mean`` over resampled vote sets, its Monte-Carlo
    standard error ``se`` and the draw-to-draw standard deviation ``sd`` (how much a perfect
    model's score would vary between data sets of this size), from ``draws`` draws of
    ``mean_votes`` votes per item on average."""

    mean: dict[str, float]
    se: dict[str, float]
    sd: dict[str, float]
    draws: int
    items: int
    mean_votes: float


def _check_counts(counts: Any) -> Tensor:
    x = _as_tensor(counts, "counts").detach().cpu()
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] < 2:
        raise UserError(f"counts must have shape (N, C) with N >= 1, C >= 2, got {tuple(x.shape)}")
    x = x.double()
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        i, j = (int(v) for v in (~finite).nonzero()[0])
        raise UserError(f"counts[{i}, {j}] = {float(x[i, j])} is not finite")
    bad = (x < 0) | (x != x.round())
    if bool(bad.any()):
        i, j = (int(v) for v in bad.nonzero()[0])
        raise UserError(
            f"counts[{i}, {j}] = {float(x[i, j]):g} is not a vote count (an integer >= 0)"
        )
    empty = x.sum(dim=1) == 0
    if bool(empty.any()):
        raise UserError(f"counts row {int(empty.nonzero()[0, 0])} has no votes")
    return x


def noise_floor(
    counts: Any,
    *,
    positions: Sequence[float] | Tensor | None = None,
    draws: int = 200,
    seed: int = 0,
    pseudocount: float = 0.0,
) -> NoiseFloor:
    r"""Expected score of a model that knew each item's true distribution, given ``n_i`` votes.

    With vote counts :math:`c_i` (:math:`n_i = \sum_j c_i{}_j` votes on item :math:`i`), the
    targets are noisy: even the true distribution :math:`q_i` scores
    :math:`\mathbb{E}\,M(q_i, \hat t_i) \ne 0` against the histogram
    :math:`\hat t_i = \mathrm{Mult}(n_i, q_i) / n_i`. A parametric bootstrap estimates it with the
    observed proportions :math:`\hat q_i = c_i / n_i` in the role of the truth: each draw
    :math:`b` resamples :math:`t^{(b)}_i \sim \mathrm{Mult}(n_i, \hat q_i) / n_i` for every item
    and scores the *prediction* :math:`\hat q_i` against the *target* :math:`t^{(b)}_i` with
    :func:`distribution_metrics` (prediction = the bootstrap world's truth, target = a fresh
    histogram of it, as the real model's prediction is scored against the real histogram;
    the other way round would score a noisy prediction against a clean target, which for KL and
    the clipped measures is a different and much larger number).

    The floor is the mean over draws; ``se`` its Monte-Carlo standard error
    (:math:`\mathrm{sd}/\sqrt{B}`). It is a plug-in estimate: :math:`\hat q_i` is rougher than
    :math:`q_i` (a level nobody voted for has probability 0, so it is never resampled), which
    makes the floor optimistic for small :math:`n_i`: for KL about :math:`(C_i - 1)/(2 n_i)` per
    item with :math:`C_i` the levels that got votes, against :math:`(C - 1)/(2 n_i)` when the
    truth puts mass on every level; for Clark and Canberra, which charge a full term for every
    level that one side gives 0 and the other does not, far more. For :math:`n_i = 1` every
    resample equals :math:`\hat q_i` and the floor is the perfect score; as
    :math:`n_i \to \infty` it tends to the perfect score too. A ``pseudocount`` :math:`a > 0`
    plays :math:`\hat q_i = (c_i + a) / (n_i + aC)` as the truth instead (:math:`a = 1/2`:
    Jeffreys' prior), which gives every level some mass; the resamples keep :math:`n_i` votes.

    Parameters
    ----------
    counts : Tensor or array-like, shape (N, C)
        Vote counts per item and level: integers :math:`\ge 0`, every row with a vote.
    positions : sequence of float, optional
        Level values for the mean score (as :func:`distribution_metrics`).
    draws : int
        Bootstrap draws :math:`B` (default 200).
    seed : int
        Seed of the resampling (numpy's ``default_rng``); equal seeds give equal floors.
    pseudocount : float
        Added to every count to form the truth (default 0: the observed proportions).

    Returns
    -------
    NoiseFloor
        ``mean``, ``se`` and ``sd`` per key of :data:`DISTRIBUTION_METRIC_KEYS`.

    Examples
    --------
    >>> floor = noise_floor(torch.tensor([[3, 1, 0], [0, 2, 2]]), draws=50, seed=1)
    >>> floor.draws, floor.items, floor.mean_votes
    (50, 2, 4.0)
    >>> 0 < floor.mean["kl"] < 1, floor.se["kl"] < floor.sd["kl"]
    (True, True)
    """
    import numpy as np

    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
        raise UserError(f"draws must be an integer >= 2, got {draws!r}")
    if not isinstance(pseudocount, (int, float)) or not pseudocount >= 0 or pseudocount == math.inf:
        raise UserError(f"pseudocount must be a finite number >= 0, got {pseudocount!r}")
    c = _check_counts(counts)
    n_items, n_levels = c.shape
    votes = c.sum(dim=1)
    truth = (c + pseudocount) / (votes[:, None] + pseudocount * n_levels)
    pos = _positions(positions, truth)
    rng = np.random.default_rng(seed)
    n_np, q_np = votes.numpy().astype(np.int64), truth.numpy()
    per_draw: dict[str, list[float]] = {key: [] for key in DISTRIBUTION_METRIC_KEYS}
    chunk = max(1, 2_000_000 // (n_items * n_levels))  # draws scored together
    for start in range(0, draws, chunk):
        size = min(chunk, draws - start)
        sample = rng.multinomial(n_np, q_np, size=(size, n_items))  # (size, N, C)
        target = torch.from_numpy(sample / n_np[None, :, None]).reshape(-1, n_levels)
        values = _per_item(truth.repeat(size, 1), target, pos)
        means = {key: values[key].view(size, n_items).mean(dim=1) for key in _ADDITIVE}
        mu = (values["mu_pred"].view(size, n_items), values["mu_target"].view(size, n_items))
        for key, value in _finish(means, *mu).items():
            per_draw[key].extend(value.tolist())
    mean, se, sd = {}, {}, {}
    for key, xs in per_draw.items():
        arr = np.asarray(xs)
        mean[key] = float(arr.mean())
        sd[key] = float(arr.std(ddof=1))
        se[key] = sd[key] / float(np.sqrt(draws))
    return NoiseFloor(
        mean=mean,
        se=se,
        sd=sd,
        draws=draws,
        items=n_items,
        mean_votes=float(votes.mean()),
    )
