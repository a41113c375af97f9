r"""Functional EMD losses for ordered classes and for any ground distance.

Kept in one module: the four public functional losses share one argument preparation and one
reduction, mirroring :mod:`torch.nn.functional`, and about 40% of its 600 lines is their
numpydoc docstrings and examples.

Every function takes the network's output ``input`` of shape :math:`(N, C)` or
:math:`(N, C, d_1, \dots)` (as :func:`torch.nn.functional.cross_entropy`) and a ``target``
holding either class indices (integer dtype, shape :math:`(N)` or :math:`(N, d_1, \dots)`) or
class distributions (floating dtype, the input's shape; soft labels such as rating
histograms). Options are keyword-only and share their names and meaning across functions:

``input_type``
    ``"logits"`` (softmax applied, log-sum-exp stable), ``"probs"`` (used as is: no second
    softmax for heads that already output probabilities) or ``"log_probs"`` (exponentiated).
``weight``
    Per-class weights, applied like ``F.cross_entropy`` applies them: with class-index targets
    each element's loss is multiplied by :math:`w_{y}` and ``reduction="mean"`` divides by the
    sum of :math:`w_{y}` over the non-ignored elements. With distribution targets the element
    weight is :math:`\sum_c w_c t_c` (so a one-hot row gives exactly the class-index result)
    and ``"mean"`` divides by the sum of those element weights. (``F.cross_entropy`` divides
    by :math:`N` for probability targets; here one-hot distributions and indices agree.)
``ignore_index``
    Class-index targets equal to it contribute neither loss nor gradient, and are left out of
    the ``"mean"`` denominator; not used with distribution targets.
``reduction``
    ``"none"`` (shape :math:`(N)` or :math:`(N, d_1, \dots)`; ignored elements are 0),
    ``"mean"`` (over all elements, or weighted as above; NaN on an empty batch like
    ``F.cross_entropy``) or ``"sum"``.

Float16 and bfloat16 inputs are computed in float32 and the result is returned in the input's
dtype; inside a :func:`torch.autocast` region the losses behave like ``F.cross_entropy`` (on
autocast's float32 list): half arguments are cast to float32 and the result is float32. See
``docs/losses.md`` for how each quantity relates to dlordinal, the RPS, NIMA, SciPy and POT,
and :mod:`emdloss._validation` for the input checks and how to switch off the ones that
synchronise with the GPU.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar, cast

import torch
from torch import Tensor

from emdloss import _ordinal
from emdloss import _validation as V
from emdloss._ordinal_cpu import squared_emd_cpu
from emdloss._ordinal_fused import _class_view, one_hot, probabilities

__all__ = ["cost_matrix_emd", "emd", "ground_emd", "squared_emd"]

ClassVector = Tensor | Sequence[float]

_SINKHORN_HINT = (
    "with soft targets the EMD under a general ground distance has no closed form: use "
    "method='sinkhorn' (an entropic approximation) or an exact LP solver such as POT's ot.emd2"
)


@dataclass
class _Batch:
    """An input/target pair reshaped to (N, C[, S]) in the compute dtype, plus what reduces it."""

    x: Tensor  # (N, C) or (N, C, S), float32/float64
    target: Tensor  # int64 (N,)/(N, S) with ignored entries set to 0, or distributions like x
    index: bool
    num_classes: int
    valid: Tensor | None  # bool (N,)/(N, S); None when no entry is ignored
    element_weight: Tensor | None  # (N,)/(N, S), zero on ignored entries; None: all ones
    class_weight: Tensor | None  # the checked length-C ``weight`` in x's dtype, or None
    reduction: str
    out_shape: tuple[int, ...]
    out_dtype: torch.dtype


_Loss = TypeVar("_Loss", bound=Callable[..., Tensor])


def _half_to_float(value: object) -> object:
    if isinstance(value, Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


def _float32_under_autocast(loss: _Loss) -> _Loss:
    """Run ``loss`` as autocast runs ``F.cross_entropy`` (on its float32 list).

    Inside an autocast region for the input's device, float16/bfloat16 tensor arguments are
    cast to float32, autocast is switched off inside, and the result is float32 (float64 stays
    float64). Outside autocast nothing changes: half inputs are computed in float32 and the
    result comes back in the input's dtype.
    """

    @functools.wraps(loss)
    def run(input: Tensor, *args: object, **kwargs: object) -> Tensor:
        device = input.device.type if isinstance(input, Tensor) else "cpu"
        if not torch.is_autocast_enabled(device):
            return loss(input, *args, **kwargs)
        with torch.autocast(device, enabled=False):
            return loss(
                _half_to_float(input),
                *(_half_to_float(a) for a in args),
                **{k: _half_to_float(v) for k, v in kwargs.items()},
            )

    return cast(_Loss, run)


def _prepare(
    input: Tensor,
    target: Tensor,
    *,
    input_type: str,
    weight: ClassVector | None,
    reduction: str,
    ignore_index: int,
) -> _Batch:
    num_classes = V.check_input(input)
    index = V.target_is_index(input, target)
    V.check_choice("input_type", input_type, V.INPUT_TYPES)
    V.check_choice("reduction", reduction, V.REDUCTIONS)
    ignore_index = V.check_ignore_index(ignore_index)
    V.check_input_values(input, input_type)

    dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    n = input.shape[0]
    m = math.prod(input.shape[2:])  # not -1: an empty batch (N = 0) of (N, C, d1, ...) input
    x = input.to(dtype)
    if input.dim() > 2:
        x = x.reshape(n, num_classes, m)

    valid: Tensor | None = None
    if index:
        tgt = target.long()
        has_ignored = V.check_index_values(tgt, num_classes, ignore_index)
        if has_ignored is None and tgt.device.type == "cpu" and V.values_readable():
            has_ignored = bool((tgt == ignore_index).any())  # no host sync to fear on the CPU
        if has_ignored is not False:  # True, or unknown without a host sync
            valid = tgt != ignore_index
            tgt = tgt.masked_fill(~valid, 0)
        if input.dim() > 2:
            tgt = tgt.reshape(n, m)
            valid = valid.reshape(n, m) if valid is not None else None
    else:
        V.check_distribution_values(target)
        tgt = target.to(dtype)
        if input.dim() > 2:
            tgt = tgt.reshape(n, num_classes, m)

    element_weight: Tensor | None = None
    w: Tensor | None = None
    if weight is not None:
        w = V.as_class_vector(weight, "weight", num_classes, x)
        V.check_weight_values(w)
        if index:
            element_weight = w[tgt]
            if valid is not None:
                element_weight = element_weight * valid
        else:
            element_weight = (tgt * _class_view(w, tgt.dim())).sum(dim=1)
    return _Batch(
        x=x,
        target=tgt,
        index=index,
        num_classes=num_classes,
        valid=valid,
        element_weight=element_weight,
        class_weight=w,
        reduction=reduction,
        out_shape=(n, *input.shape[2:]),
        out_dtype=input.dtype,
    )


def _reduce(rows: Tensor, batch: _Batch, scale: float) -> Tensor:
    """Apply ignore mask, element weights, the constant ``scale`` and the reduction."""
    if batch.valid is not None:
        rows = torch.where(batch.valid, rows, 0.0)  # where, not *: a NaN row stays out
    w = batch.element_weight
    if batch.reduction == "none":
        out = (rows * w if w is not None else rows) * scale
        return out.reshape(batch.out_shape).to(batch.out_dtype)
    if w is not None:
        total = (rows * w).sum()
        out = total * scale if batch.reduction == "sum" else total / w.sum() * scale
    elif batch.reduction == "sum":
        out = rows.sum() * scale
    elif batch.valid is not None:
        out = rows.sum() / batch.valid.sum() * scale
    elif rows.numel() == 0:
        out = rows.sum() * float("nan")
    else:
        # sum() then a constant: its backward hands one broadcast gradient to every row,
        # which the fused kernel folds in without an extra pass.
        out = rows.sum() * (scale / rows.numel())
    return out.to(batch.out_dtype)


def _folded_scale(batch: _Batch, scale: float) -> float | None:
    """The factor that turns a plain row sum into the reduction, if the reduction is that plain.

    Unweighted sums and means with no ignored element are folded into the fused kernels, whose
    backward then needs no per-row gradient.
    """
    n = batch.x.numel() // batch.num_classes
    if batch.valid is not None or batch.element_weight is not None or n == 0:
        return None
    if batch.reduction == "sum":
        return scale
    if batch.reduction == "mean":
        return scale / n
    return None


def _cdf_reduced(
    batch: _Batch,
    gaps: Tensor | None,
    *,
    squared: bool,
    input_type: str,
    scale: float,
    chosen: str | None = None,
) -> Tensor:
    """The CDF loss of a batch, reduced (``chosen``: the implementation, if already chosen)."""
    folded = _folded_scale(batch, scale)
    out = _ordinal.cdf_loss(
        batch.x,
        batch.target,
        gaps,
        squared=squared,
        input_type=input_type,
        sum_scale=folded,
        chosen=chosen,
    )
    return out.to(batch.out_dtype) if folded is not None else _reduce(out, batch, scale)


def _linear_reduced(batch: _Batch, cost_rows: Tensor, input_type: str) -> Tensor:
    """The linear loss sum_i p_i G_i of a batch, reduced."""
    folded = _folded_scale(batch, 1.0)
    out = _ordinal.linear_loss(batch.x, cost_rows, input_type, sum_scale=folded)
    return out.to(batch.out_dtype) if folded is not None else _reduce(out, batch, 1.0)


def _positions(positions: ClassVector | None, batch: _Batch) -> Tensor | None:
    if positions is None:
        return None
    pos = V.as_class_vector(positions, "positions", batch.num_classes, batch.x)
    V.check_positions_values(pos)
    return pos


def _class_last(t: Tensor) -> Tensor:
    """(N, C[, S]) -> (M, C) with the class dimension last."""
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def _target_rows(matrix: Tensor, index: Tensor) -> Tensor:
    """``matrix[index]`` laid out like the scores: (N, C) or (N, C, S)."""
    rows = matrix.index_select(0, index.reshape(-1))  # much faster than matrix[index]
    return rows if index.dim() == 1 else rows.view(*index.shape, matrix.shape[1]).movedim(-1, 1)


# One cached transposed copy of the last ground distance: gathering its columns directly gives
# a layout that the elementwise kernels read slowly, and a transposing copy costs more than
# the loss at C = 1000. The weak reference and the version counter make a stale hit
# impossible (a new tensor, or an in-place change, is a miss). The cache is a ContextVar, so
# each thread (and asyncio task) has its own and none can see another's half-written entry.
_TRANSPOSED: ContextVar[tuple[weakref.ReferenceType[Tensor], int, Tensor] | None] = ContextVar(
    "emdloss_transposed", default=None
)


def _transposed(matrix: Tensor) -> Tensor:
    """``matrix.t()`` as a contiguous tensor, cached for an unchanged, gradient-free matrix."""
    if matrix.requires_grad or torch.compiler.is_compiling():
        return matrix.t().contiguous()
    cached = _TRANSPOSED.get()
    if cached is not None and cached[0]() is matrix and cached[1] == matrix._version:
        return cached[2]
    out = matrix.t().contiguous()
    _TRANSPOSED.set((weakref.ref(matrix), matrix._version, out))
    return out


@_float32_under_autocast
def squared_emd(
    input: Tensor,
    target: Tensor,
    *,
    positions: ClassVector | None = None,
    normalization: str = "class_mean",
    input_type: str = "logits",
    weight: ClassVector | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    r"""Squared EMD for ordered classes (Hou, Yu & Samaras): squared L2 distance of the CDFs.

    With :math:`P = \operatorname{cumsum}(p)` the predicted and :math:`T` the target
    cumulative distribution over the :math:`C` ordered classes, per element

    .. math::

        \ell(p, t) = c \sum_{k=1}^{C} w_k \, (P_k - T_k)^2,
        \qquad c = \begin{cases} 1/C & \text{"class_mean"} \\ 1 & \text{"sum"} \\
        1/(C-1) & \text{"rps"} \end{cases}

    with :math:`w_k = 1` (the :math:`k = C` term is 0 for distributions) or, given class
    positions :math:`x_1 < \dots < x_C`, the gaps :math:`w_k = x_{k+1} - x_k`
    (:math:`w_C = 0`). ``"class_mean"`` is the authors' loss, ``"sum"`` is dlordinal's ``EMDLoss``,
    ``"rps"`` the ranked probability score; they differ by a constant factor only.

    This is the Cramér distance (half the energy distance on positions :math:`0, \dots, C-1`),
    **not** :math:`W_2^2`, the EMD with squared ground distance (see :func:`emd` with ``p=2``).
    The gradient with respect to the logits vanishes for confidently wrong predictions.

    Parameters
    ----------
    input : Tensor
        Scores of shape :math:`(N, C)` or :math:`(N, C, d_1, \dots)`, :math:`C \ge 2`.
    target : Tensor
        Class indices (integer) or class distributions (floating, the input's shape).
    positions : Tensor or sequence of float, optional
        Strictly increasing class coordinates (e.g. age-group midpoints), length :math:`C`.
    normalization : {"class_mean", "sum", "rps"}
        The constant :math:`c` above. ``"mean"``, its former name, is a deprecated alias of
        ``"class_mean"`` (it read like ``reduction="mean"``, a mean over the batch).
    input_type : {"logits", "probs", "log_probs"}
        What ``input`` holds.
    weight : Tensor or sequence of float, optional
        Per-class weights (see the module notes).
    reduction : {"mean", "sum", "none"}
    ignore_index : int
        Class index whose elements are ignored (class-index targets only).

    Returns
    -------
    Tensor
        Scalar, or shape :math:`(N, d_1, \dots)` with ``reduction="none"``; input dtype.

    Examples
    --------
    >>> import torch
    >>> probs = torch.tensor([[0.5, 0.3, 0.2]])
    >>> target = torch.tensor([2])  # CDFs (0.5, 0.8, 1) and (0, 0, 1)
    >>> squared_emd(probs, target, input_type="probs", normalization="sum")  # 0.25 + 0.64
    tensor(0.8900)
    >>> squared_emd(probs, target, input_type="probs")  # the authors' 1/C
    tensor(0.2967)
    """
    batch = _prepare(
        input,
        target,
        input_type=input_type,
        weight=weight,
        reduction=reduction,
        ignore_index=ignore_index,
    )
    scale = V.normalization_scale(normalization, batch.num_classes)
    pos = _positions(positions, batch)
    gaps = _ordinal.gap_weights(pos) if pos is not None else None
    chosen = _ordinal.choose(gaps)  # once per call: the C++ kernel or the table's
    if chosen == "cpp" and batch.index and input_type == "logits":
        out = _squared_emd_kernel(batch, target, gaps, scale, ignore_index)
        if out is not None:
            return out
    return _cdf_reduced(
        batch, gaps, squared=True, input_type=input_type, scale=scale, chosen=chosen
    )


def _squared_emd_kernel(
    batch: _Batch, target: Tensor, gaps: Tensor | None, scale: float, ignore_index: int
) -> Tensor | None:
    """``squared_emd`` of checked logits and class indices through the C++ kernel, or None."""

    out = squared_emd_cpu(
        batch.x,
        target,
        gaps=gaps,
        weight=batch.class_weight,
        scale=scale,
        reduction=batch.reduction,
        ignore_index=ignore_index,
    )
    if out is None:
        return None
    return out.reshape(batch.out_shape if batch.reduction == "none" else ()).to(batch.out_dtype)


@_float32_under_autocast
def emd(
    input: Tensor,
    target: Tensor,
    *,
    p: float = 1,
    positions: ClassVector | None = None,
    input_type: str = "logits",
    weight: ClassVector | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    r"""Exact :math:`W_p^p`, the EMD with ground distance :math:`|x_i - x_j|^p`, on the line.

    Classes sit at positions :math:`x_1 < \dots < x_C` (default :math:`0, \dots, C-1`). For
    :math:`p = 1` this is the CDF form

    .. math::

        W_1(p, t) = \sum_{k=1}^{C-1} |P_k - T_k| \, (x_{k+1} - x_k),

    equal to ``scipy.stats.wasserstein_distance`` and POT's ``ot.wasserstein_1d(p=1)``. For
    :math:`p > 1` it is computed exactly: for class-index targets as
    :math:`\sum_i p_i |x_i - x_y|^p` (the only feasible plan moves all mass to :math:`y`), for
    distribution targets through the quantile functions,

    .. math::

        W_p^p(p, t) = \int_0^1 \bigl|x_{P^{-1}(q)} - x_{T^{-1}(q)}\bigr|^p \, dq,

    as POT's ``ot.wasserstein_1d`` (which also returns :math:`W_p^p`, not its :math:`p`-th
    root). No normalisation constant is applied.

    Parameters
    ----------
    input, target, input_type, weight, reduction, ignore_index
        As in :func:`squared_emd`.
    p : float
        Order :math:`p \ge 1` of the ground distance.
    positions : Tensor or sequence of float, optional
        Strictly increasing class coordinates, length :math:`C`.

    Returns
    -------
    Tensor
        Scalar, or shape :math:`(N, d_1, \dots)` with ``reduction="none"``.

    Examples
    --------
    >>> import torch
    >>> probs = torch.tensor([[0.5, 0.3, 0.2]])
    >>> emd(probs, torch.tensor([2]), input_type="probs")  # 0.5 * 2 + 0.3 * 1
    tensor(1.3000)
    >>> emd(probs, torch.tensor([2]), p=2, input_type="probs")  # 0.5 * 4 + 0.3 * 1
    tensor(2.3000)
    """
    power = V.check_power(p)
    batch = _prepare(
        input,
        target,
        input_type=input_type,
        weight=weight,
        reduction=reduction,
        ignore_index=ignore_index,
    )
    pos = _positions(positions, batch)
    if power == 1.0:
        gaps = _ordinal.gap_weights(pos) if pos is not None else None
        return _cdf_reduced(batch, gaps, squared=False, input_type=input_type, scale=1.0)
    if pos is None:
        pos = torch.arange(batch.num_classes, dtype=batch.x.dtype, device=batch.x.device)
    if batch.index:
        view = _class_view(pos, batch.x.dim())
        cost = (view - pos[batch.target].unsqueeze(1)).abs().pow(power)
        return _linear_reduced(batch, cost, input_type)
    probs = probabilities(batch.x, input_type)
    flat = _ordinal.quantile_wasserstein(_class_last(probs), _class_last(batch.target), pos, power)
    return _reduce(flat.reshape(batch.x.shape[0], *batch.x.shape[2:]), batch, 1.0)


@_float32_under_autocast
def ground_emd(
    input: Tensor,
    target: Tensor,
    ground_distance: Tensor,
    *,
    method: str = "exact",
    epsilon: float = 0.01,
    max_iter: int = 1000,
    tol: float = 1e-6,
    input_type: str = "logits",
    weight: ClassVector | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    r"""EMD under any :math:`C \times C` ground distance :math:`D`.

    .. math::

        \mathrm{EMD}(p, t) = \min_{F \ge 0,\; F \mathbf 1 = p,\; F^\top \mathbf 1 = t}
        \sum_{ij} F_{ij} D_{ij} .

    ``method="exact"``: for class-index targets (and one-hot distribution targets) the only
    feasible plan moves all mass to the true class :math:`y`, so the EMD is exactly

    .. math::

        \mathrm{EMD}(p, e_y) = \sum_i p_i \, D_{i y},

    for any :math:`D` (equal to POT's ``ot.emd2``). Soft targets have no closed form and raise
    a ``ValueError``; with validation switched off they are *not* inspected and are read as
    one-hot at their argmax. ``method="sinkhorn"``: the batched, differentiable, log-domain
    Sinkhorn of :func:`emdloss._sinkhorn.sinkhorn_emd`, for soft targets: the transport cost
    of the entropic plan, an **approximation** from above of the exact EMD whose gap shrinks
    with ``epsilon`` (exact for one-hot targets).

    Parameters
    ----------
    input, target, input_type, weight, reduction, ignore_index
        As in :func:`squared_emd`.
    ground_distance : Tensor
        :math:`D`, shape :math:`(C, C)`, finite and non-negative. Row :math:`i` is the source
        (predicted) class, column :math:`j` the target class.
    method : {"exact", "sinkhorn"}
    epsilon : float
        Sinkhorn regularisation, relative to :math:`\max D`.
    max_iter : int
        Sinkhorn iteration cap.
    tol : float
        Sinkhorn stopping threshold on the marginal error.

    Returns
    -------
    Tensor
        Scalar, or shape :math:`(N, d_1, \dots)` with ``reduction="none"``.

    Examples
    --------
    >>> import torch
    >>> d = torch.tensor([[0.0, 1.0, 4.0], [1.0, 0.0, 1.0], [4.0, 1.0, 0.0]])
    >>> probs = torch.tensor([[0.5, 0.3, 0.2]])
    >>> ground_emd(probs, torch.tensor([2]), d, input_type="probs")  # 0.5 * 4 + 0.3 * 1
    tensor(2.3000)
    """
    batch = _prepare(
        input,
        target,
        input_type=input_type,
        weight=weight,
        reduction=reduction,
        ignore_index=ignore_index,
    )
    V.check_choice("method", method, V.METHODS)
    c = batch.num_classes
    V.check_square_matrix(ground_distance, "ground_distance", c)
    dist = ground_distance.to(device=batch.x.device, dtype=batch.x.dtype)
    V.check_matrix_values(dist, "ground_distance", allow_negative=False)
    if method == "exact":
        if batch.index:
            y = batch.target
        else:
            V.check_one_hot_values(target, _SINKHORN_HINT)
            y = batch.target.argmax(dim=1)
        return _linear_reduced(batch, _target_rows(_transposed(dist), y), input_type)

    from emdloss._sinkhorn import sinkhorn_emd  # lazy: only this path needs it

    probs = probabilities(batch.x, input_type)
    if batch.index:
        goal = one_hot(batch.target.reshape(-1), c, probs.dtype)
    else:
        goal = _class_last(batch.target)
    flat = sinkhorn_emd(_class_last(probs), goal, dist, epsilon=epsilon, max_iter=max_iter, tol=tol)
    return _reduce(flat.reshape(batch.x.shape[0], *batch.x.shape[2:]), batch, 1.0)


@_float32_under_autocast
def cost_matrix_emd(
    input: Tensor,
    target: Tensor,
    cost_matrix: Tensor,
    *,
    input_type: str = "logits",
    weight: ClassVector | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    r"""The authors' loss for classes without an order (their ``cost_matrix_loss``).

    A squared surrogate of the EMD weighted by the cost-matrix row of the true class :math:`y`:

    .. math::

        \ell(p, y) = \frac{1}{C} \sum_{i=1}^{C} (p_i - t_i)^2 \, CM_{y i},
        \qquad t = e_y .

    ``cost_matrix`` may have negative entries: the matrices learned by
    :class:`emdloss.ground.LearnedGroundDistance` do (near classes get negative cost, so mass on
    a near neighbour *lowers* the loss), and then the loss can be negative. It is a training
    surrogate, not a distance. With distribution targets the row :math:`CM_{y \cdot}` is
    replaced by the target-weighted mixture :math:`\sum_j t_j CM_{j \cdot}` (identical for
    one-hot rows).

    Parameters
    ----------
    input, target, input_type, weight, reduction, ignore_index
        As in :func:`squared_emd`.
    cost_matrix : Tensor
        :math:`CM`, shape :math:`(C, C)`, finite; row :math:`y` weighs the errors when the
        true class is :math:`y`.

    Returns
    -------
    Tensor
        Scalar, or shape :math:`(N, d_1, \dots)` with ``reduction="none"``.

    Examples
    --------
    >>> import torch
    >>> cm = torch.tensor([[1.0, -0.5, 0.5], [-0.5, 1.0, -0.5], [0.5, -0.5, 1.0]])
    >>> probs = torch.tensor([[0.5, 0.3, 0.2]])
    >>> cost_matrix_emd(probs, torch.tensor([2]), cm, input_type="probs")
    tensor(0.2400)
    """
    batch = _prepare(
        input,
        target,
        input_type=input_type,
        weight=weight,
        reduction=reduction,
        ignore_index=ignore_index,
    )
    c = batch.num_classes
    V.check_square_matrix(cost_matrix, "cost_matrix", c)
    cm = cost_matrix.to(device=batch.x.device, dtype=batch.x.dtype)
    V.check_matrix_values(cm, "cost_matrix", allow_negative=True)
    probs = probabilities(batch.x, input_type)
    if batch.index:
        goal = one_hot(batch.target, c, probs.dtype)
        row = _target_rows(cm, batch.target)
    else:
        goal = batch.target
        row = torch.matmul(goal.movedim(1, -1), cm).movedim(-1, 1)
    rows = ((probs - goal).square() * row).sum(dim=1)
    return _reduce(rows, batch, 1.0 / c)
