r"""Math kernels for ordered classes: CDF distances and Wasserstein distances on the line.

All kernels take the class scores ``x`` with the class dimension at dim 1, shaped
:math:`(N, C)` or :math:`(N, C, S)` (spatial positions flattened), in the compute dtype
(float32 or float64; the callers upcast half inputs), and return one value per row,
:math:`(N,)` or :math:`(N, S)`. Targets are class indices :math:`(N,)` / :math:`(N, S)`
(int64, all in range) or class distributions of ``x``'s shape.

The CDF losses. With :math:`p` the predicted distribution, :math:`t` the target,
:math:`P = \operatorname{cumsum}(p)`, :math:`T = \operatorname{cumsum}(t)`,
:math:`D = P - T` and per-class gap weights :math:`w` (all ones by default; with class
positions :math:`w_k = x_{k+1} - x_k` and :math:`w_C = 0`):

.. math::

    L_2 = \sum_k w_k D_k^2, \qquad L_1 = \sum_k w_k |D_k| .

The fused path computes them without a :math:`C \times C` intermediate and with an analytic
backward. With :math:`E_k = w_k D_k` (:math:`L_2`, factor :math:`f = 2`) or
:math:`E_k = w_k \operatorname{sign} D_k` (:math:`L_1`, :math:`f = 1`), the gradient with
respect to the probabilities is a reverse cumulative sum,

.. math::

    \frac{\partial L}{\partial p_j} = f R_j, \qquad R_j = \sum_{k \ge j} E_k
    = \Sigma - X_j, \qquad X_j = \sum_{k < j} E_k, \quad \Sigma = \sum_k E_k,

and through a softmax :math:`\partial L / \partial z_j = f\, p_j (a - X_j)` with
:math:`a = \langle p, X\rangle`. For a class-index target :math:`y`, :math:`a = X_y - L` exactly
(because :math:`\langle p, R\rangle = \sum_k E_k P_k = L + \sum_{k \ge y} E_k`), so no extra
pass over the classes is needed. Passes over the :math:`N \times C` data: forward softmax,
one cumulative sum and one norm; backward one cumulative sum and two in-place updates.
Index targets never materialise :math:`T`: the step :math:`T_k = [k \ge y]` is folded in by
subtracting 1 at :math:`p_y` before the scan and restoring :math:`p_y` afterwards.

The same kernels are registered as the ``torch.library`` custom ops ``emdloss::cdf_loss`` and
``emdloss::cdf_loss_backward`` (with fake implementations), which is what runs under
:func:`torch.compile`; in eager mode a plain :class:`torch.autograd.Function` calls them
directly because its dispatch costs less. :func:`cdf_loss_reference` is the pure-PyTorch
path (autograd through ``cumsum``) that gives the same numbers; select it with
:func:`implementation`.

On the CPU, :func:`emdloss.functional.squared_emd` with logits and class-index targets runs the
compiled one-pass kernel of :mod:`emdloss._cpu_kernel` when it is built (see there for when it
is built and used; :func:`squared_emd_cpu` is the dispatch), and these kernels otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from emdloss import _cpu_kernel

__all__ = [
    "IMPLEMENTATIONS",
    "cdf_loss",
    "cdf_loss_reference",
    "gap_weights",
    "implementation",
    "linear_loss",
    "probabilities",
    "quantile_wasserstein",
    "squared_emd_cpu",
]

IMPLEMENTATIONS = ("fused", "cpp", "library", "reference")
_impl = "fused"

# Below this many classes a hand-written softmax beats torch.softmax on the CPU (rows shorter
# than a vector register fall off the library kernel's vectorised path).
_SMALL_C = 16


@contextmanager
def implementation(name: str) -> Iterator[None]:
    """Select the implementation of :func:`cdf_loss` inside a block.

    ``"fused"`` (default): the analytic kernels, through an ``autograd.Function`` in eager
    mode and the ``torch.library`` op under ``torch.compile``, and the compiled C++ CPU kernel
    for :func:`~emdloss.functional.squared_emd` where it is built and applies (see
    :mod:`emdloss._cpu_kernel`); ``"cpp"``: as ``"fused"``, but the C++ kernel is built if
    needed (a ``RuntimeError`` if that fails); ``"library"``: the ``torch.library`` op always;
    ``"reference"``: plain autograd through ``cumsum``. Only ``"fused"`` and ``"cpp"`` use the
    C++ kernel.

    Examples
    --------
    >>> import torch
    >>> x, y = torch.zeros(1, 3), torch.tensor([0])
    >>> with implementation("reference"):
    ...     cdf_loss(x, y, None, squared=True, input_type="logits")
    tensor([0.5556])
    """
    global _impl
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {name!r}")
    if name == "cpp" and not _cpu_kernel.build():
        raise RuntimeError("the C++ CPU kernel could not be built (see the warning above)")
    previous, _impl = _impl, name
    try:
        yield
    finally:
        _impl = previous


def gap_weights(positions: Tensor) -> Tensor:
    r"""Gap weights :math:`w_k = x_{k+1} - x_k` (:math:`k < C`) and :math:`w_C = 0`.

    Examples
    --------
    >>> gap_weights(torch.tensor([1.0, 5.0, 10.5]))
    tensor([4.0000, 5.5000, 0.0000])
    """
    return torch.cat([positions[1:] - positions[:-1], positions.new_zeros(1)])


def _class_view(vector: Tensor, ndim: int) -> Tensor:
    """A length-C vector shaped to broadcast along dim 1 of an ``ndim``-d tensor."""
    return vector.view(1, -1) if ndim == 2 else vector.view(1, -1, 1)


def _l1_gaps(x: Tensor, gaps: Tensor | None, squared: bool) -> Tensor | None:
    """For the L1 form the last term is dropped (w_C = 0): |D_C| = |sum p - sum t| is rounding
    noise for distributions, and its sign would add a spurious constant to the gradient."""
    if squared or gaps is not None:
        return gaps
    ones = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
    ones[-1] = 0
    return ones


def _softmax(x: Tensor) -> Tensor:
    if x.dim() == 2 and x.shape[1] < _SMALL_C:
        e = (x - x.amax(dim=1, keepdim=True)).exp_()
        return e.div_(e.sum(dim=1, keepdim=True))
    return torch.softmax(x, dim=1)


def probabilities(x: Tensor, input_type: str) -> Tensor:
    """Class probabilities from ``logits`` (softmax), ``log_probs`` (exp) or ``probs`` (as is).

    Differentiable; log-sum-exp stable for logits of any magnitude.

    Examples
    --------
    >>> probabilities(torch.tensor([[0.0, 0.0]]), "logits")
    tensor([[0.5000, 0.5000]])
    """
    if input_type == "logits":
        return torch.softmax(x, dim=1)
    if input_type == "log_probs":
        return torch.exp(x)
    return x


# ----------------------------------------------------------------------------- fused kernels

# A gradient shared by all rows is read to a Python float on the CPU (free there) and folded
# into one pass; elsewhere it stays a tensor (no host sync). Tests switch it off to cover both.
_READ_SCALAR_ON_CPU = True

# For (N, C, S) inputs on the CPU torch.cumsum along dim 1 is a strided scalar loop; a Python
# loop over the C classes of vectorised (N, S) additions is ~2.5x faster once N * S is this large.
_LOOP_SCAN_MIN = 4096


def _scan(src: Tensor, out: Tensor | None = None) -> Tensor:
    """Inclusive cumulative sum of ``src`` along dim 1 (into ``out``, which may be ``src``)."""
    if (
        src.dim() == 3
        and src.device.type == "cpu"  # on a GPU torch.cumsum is a parallel scan: keep it
        and src.shape[0] * src.shape[2] >= _LOOP_SCAN_MIN
    ):
        if out is None:
            out = torch.empty_like(src)
        if out is not src:
            out.select(1, 0).copy_(src.select(1, 0))
        for k in range(1, src.shape[1]):
            torch.add(out.select(1, k - 1), src.select(1, k), out=out.select(1, k))
        return out
    if out is None:
        return torch.cumsum(src, dim=1)
    return torch.cumsum(src, dim=1, out=out)


def _cdf_forward(
    x: Tensor, target: Tensor, gaps: Tensor | None, squared: bool, input_type: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row loss with a kept class dim, (N, 1[, S]); the probabilities; ``E``."""
    if input_type == "logits":
        p = _softmax(x)
    elif input_type == "log_probs":
        p = torch.exp(x)
    else:
        p = x
    if not target.is_floating_point():
        index = target.unsqueeze(1)
        p_y = p.gather(1, index)
        if p is x:  # the caller's tensor: work on a copy
            d = x.clone()
            d.scatter_(1, index, p_y - 1)
            _scan(d, d)
        else:
            # D = cumsum(p - e_y): subtract 1 at y, scan, restore p_y exactly (T is never built).
            p.scatter_(1, index, p_y - 1)
            d = _scan(p)
            p.scatter_(1, index, p_y)
    else:
        d = torch.sub(p, target)
        _scan(d, d)
    if squared and gaps is None:
        e = d
        loss = torch.linalg.vector_norm(d, dim=1, keepdim=True).square_()
    elif gaps is None:  # L1 with unit gaps; the last term is dropped as in _l1_gaps
        last = d.shape[1] - 1
        loss = torch.linalg.vector_norm(d.narrow(1, 0, last), ord=1, dim=1, keepdim=True)
        e = torch.sign(d)
        e.narrow(1, last, 1).zero_()
    else:
        e = (d if squared else torch.sign(d)) * _class_view(gaps, d.dim())
        loss = torch.linalg.vecdot(e, d, dim=1).unsqueeze(1)
    return loss, p, e


def _cdf_backward(
    grad: Tensor,
    p: Tensor | None,
    e: Tensor,
    target: Tensor,
    loss: Tensor,
    squared: bool,
    input_type: str,
    target_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """Gradients with respect to the scores and (for soft targets, if asked) the target.

    ``grad`` is the gradient of the per-row losses, shaped like them, or a 0-dim tensor when
    every row gets the same one (a sum or mean reduction). ``loss`` has the kept class dim.
    """
    num_classes = e.shape[1]
    factor = 2.0 if squared else 1.0
    # X = exclusive cumulative sum of E, written straight into the gradient buffer.
    xs = torch.empty_like(e)
    xs.narrow(1, 0, 1).zero_()
    _scan(e.narrow(1, 0, num_classes - 1), xs.narrow(1, 1, num_classes - 1))
    if input_type == "logits" and not target.is_floating_point():
        a = xs.gather(1, target.unsqueeze(1)).sub_(loss)  # <p, X> = X_y - L
    elif input_type == "logits":
        assert p is not None
        a = torch.linalg.vecdot(p, xs, dim=1).unsqueeze(1)
    else:
        a = xs.narrow(1, num_classes - 1, 1) + e.narrow(1, num_classes - 1, 1)  # sum of E
    grad_target = None
    if target_grad:  # dL/dt_j = -f g R_j = f g (X_j - sum E)
        total = xs.narrow(1, num_classes - 1, 1) + e.narrow(1, num_classes - 1, 1)
        g = grad if grad.dim() == 0 else grad.unsqueeze(1)
        grad_target = (xs - total).mul_(g * factor)
    # grad = f g (a - X) [* p], in place in the X buffer, with binary ops only: one operand
    # broadcast per row vectorises on the CPU, where a ternary addcmul with two does not.
    uniform = grad.dim() == 0 or all(st == 0 for st in grad.stride())
    if uniform and grad.numel() > 0:
        g0 = grad if grad.dim() == 0 else grad[(0,) * grad.dim()]
        if grad.device.type == "cpu" and _READ_SCALAR_ON_CPU:  # a free read: fold it in
            scale = g0.item() * factor
            torch.sub(a.mul_(scale), xs, alpha=scale, out=xs)  # `a` is a fresh (N, 1[, S])
            if input_type != "probs":
                assert p is not None
                xs.mul_(p)
            return xs, grad_target
        row_scale = g0 * factor
    else:
        row_scale = grad.unsqueeze(1) * factor
    torch.sub(a, xs, out=xs)
    if input_type != "probs":
        assert p is not None
        xs.mul_(p)
    xs.mul_(row_scale)
    return xs, grad_target


class _CdfLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        target: Tensor,
        gaps: Tensor | None,
        squared: bool,
        input_type: str,
        sum_scale: float | None,
    ) -> Tensor:
        loss, p, e = _cdf_forward(x, target, gaps, squared, input_type)
        ctx.save_for_backward(p if input_type != "probs" else None, e, target, loss)
        ctx.squared, ctx.input_type, ctx.sum_scale = squared, input_type, sum_scale
        if sum_scale is not None:
            return loss.sum() * sum_scale
        return loss.squeeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        p, e, target, loss = ctx.saved_tensors
        if ctx.sum_scale is not None:
            grad = grad * ctx.sum_scale
        target_grad = bool(ctx.needs_input_grad[1]) and target.is_floating_point()
        grad_x, grad_target = _cdf_backward(
            grad, p, e, target, loss, ctx.squared, ctx.input_type, target_grad
        )
        return grad_x if ctx.needs_input_grad[0] else None, grad_target, None, None, None, None


# ------------------------------------------------------------------- torch.library registration


@torch.library.custom_op("emdloss::cdf_loss", mutates_args=())
def _cdf_loss_op(
    x: Tensor, target: Tensor, gaps: Tensor | None, squared: bool, input_type: str
) -> tuple[Tensor, Tensor, Tensor]:
    loss, p, e = _cdf_forward(x, target, gaps, squared, input_type)
    if p is x:  # custom ops may not return an alias of an input
        p = x.new_empty(0)
    return loss.squeeze(1), p, e


@_cdf_loss_op.register_fake
def _cdf_loss_fake(
    x: Tensor, target: Tensor, gaps: Tensor | None, squared: bool, input_type: str
) -> tuple[Tensor, Tensor, Tensor]:
    rows = (x.shape[0], *x.shape[2:])
    p = x.new_empty(0) if input_type == "probs" else torch.empty_like(x)
    return x.new_empty(rows), p, torch.empty_like(x)


@torch.library.custom_op("emdloss::cdf_loss_backward", mutates_args=())
def _cdf_loss_backward_op(
    grad: Tensor,
    p: Tensor,
    e: Tensor,
    target: Tensor,
    loss: Tensor,
    squared: bool,
    input_type: str,
    target_grad: bool,
) -> tuple[Tensor, Tensor]:
    grad_x, grad_target = _cdf_backward(grad, p, e, target, loss, squared, input_type, target_grad)
    return grad_x, grad_target if grad_target is not None else e.new_empty(0)


@_cdf_loss_backward_op.register_fake
def _cdf_loss_backward_fake(
    grad: Tensor,
    p: Tensor,
    e: Tensor,
    target: Tensor,
    loss: Tensor,
    squared: bool,
    input_type: str,
    target_grad: bool,
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(e), torch.empty_like(e) if target_grad else e.new_empty(0)


def _op_setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    _x, target, _gaps, squared, input_type = inputs
    loss, p, e = output
    ctx.save_for_backward(p, e, target, loss.unsqueeze(1))
    ctx.squared, ctx.input_type = squared, input_type
    ctx.target_grad = bool(target.requires_grad) and target.is_floating_point()


def _op_backward(ctx: Any, grad: Tensor, _grad_p: Any, _grad_e: Any) -> tuple[Any, ...]:
    p, e, target, loss = ctx.saved_tensors
    grad_x, grad_target = _cdf_loss_backward_op(
        grad, p, e, target, loss, ctx.squared, ctx.input_type, ctx.target_grad
    )
    return grad_x, grad_target if ctx.target_grad else None, None, None, None


_cdf_loss_op.register_autograd(_op_backward, setup_context=_op_setup_context)


# ----------------------------------------------------------------------------- public kernels


def cdf_loss_reference(
    x: Tensor, target: Tensor, gaps: Tensor | None, *, squared: bool, input_type: str
) -> Tensor:
    r"""Pure-PyTorch :math:`\sum_k w_k D_k^2` or :math:`\sum_k w_k |D_k|` (autograd through cumsum).

    Examples
    --------
    >>> x = torch.tensor([[0.5, 0.3, 0.2]])
    >>> cdf_loss_reference(x, torch.tensor([2]), None, squared=True, input_type="probs")
    tensor([0.8900])
    """
    gaps = _l1_gaps(x, gaps, squared)
    p = probabilities(x, input_type)
    if not target.is_floating_point():
        t = F.one_hot(target, p.shape[1]).movedim(-1, 1).to(p.dtype)
    else:
        t = target
    d = torch.cumsum(p, dim=1) - torch.cumsum(t, dim=1)
    terms = d.square() if squared else d.abs()
    if gaps is not None:
        terms = terms * _class_view(gaps, d.dim())
    return terms.sum(dim=1)


def cdf_loss(
    x: Tensor,
    target: Tensor,
    gaps: Tensor | None,
    *,
    squared: bool,
    input_type: str,
    sum_scale: float | None = None,
) -> Tensor:
    r"""Per-row CDF distance :math:`\sum_k w_k D_k^2` (``squared``) or :math:`\sum_k w_k |D_k|`.

    ``gaps`` is the vector :math:`w` (None: all ones; for the L1 form the last term is always
    dropped). No normalisation constant is applied. With ``sum_scale`` the result is the sum
    over rows times ``sum_scale`` (a plain sum/mean reduction, folded into the fused kernel so
    that its backward needs no per-row gradient). Gradients flow to ``x`` and to a floating
    ``target``.

    Examples
    --------
    >>> x = torch.tensor([[0.5, 0.3, 0.2]])
    >>> cdf_loss(x, torch.tensor([2]), None, squared=True, input_type="probs")
    tensor([0.8900])
    >>> cdf_loss(x, torch.tensor([2]), None, squared=False, input_type="probs")
    tensor([1.3000])
    """
    if _impl == "reference":
        rows = cdf_loss_reference(x, target, gaps, squared=squared, input_type=input_type)
    elif _impl == "library" or torch.compiler.is_compiling():
        rows = _cdf_loss_op(x, target, gaps, squared, input_type)[0]
    else:
        loss: Tensor = _CdfLoss.apply(x, target, gaps, squared, input_type, sum_scale)
        return loss
    return rows if sum_scale is None else rows.sum() * sum_scale


def linear_loss(
    x: Tensor, cost_rows: Tensor, input_type: str, *, sum_scale: float | None = None
) -> Tensor:
    r"""Per-row :math:`\sum_i p_i G_i`: the EMD to a one-hot target :math:`y` when :math:`G_i = D_{iy}`.

    ``cost_rows`` has ``x``'s shape. With ``sum_scale`` the result is the sum over rows times
    ``sum_scale``. Analytic backward (plain autograd when ``cost_rows`` itself needs a gradient).

    Examples
    --------
    >>> linear_loss(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[2.0, 1.0, 0.0]]), "probs")
    tensor([1.3000])
    """
    if _impl == "reference" or cost_rows.requires_grad or torch.compiler.is_compiling():
        rows = (probabilities(x, input_type) * cost_rows).sum(dim=1)
        return rows if sum_scale is None else rows.sum() * sum_scale
    loss: Tensor = _LinearLoss.apply(x, cost_rows, input_type, sum_scale)
    return loss


class _LinearLoss(torch.autograd.Function):
    r""":math:`L = \sum_i p_i G_i`; through a softmax :math:`\partial L / \partial z = p (G - L)`."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, cost_rows: Tensor, input_type: str, sum_scale: float | None
    ) -> Tensor:
        p = _softmax(x) if input_type == "logits" else probabilities(x, input_type)
        loss = torch.linalg.vecdot(p, cost_rows, dim=1).unsqueeze(1)
        ctx.save_for_backward(p if input_type != "probs" else None, cost_rows, loss)
        ctx.input_type, ctx.sum_scale = input_type, sum_scale
        return loss.sum() * sum_scale if sum_scale is not None else loss.squeeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        p, cost_rows, loss = ctx.saved_tensors
        if ctx.sum_scale is not None:
            grad = grad * ctx.sum_scale
        else:
            grad = grad.unsqueeze(1)
        if ctx.input_type == "logits":
            out = torch.sub(cost_rows, loss).mul_(p).mul_(grad)
        elif ctx.input_type == "log_probs":
            out = torch.mul(cost_rows, p).mul_(grad)
        else:
            out = cost_rows * grad
        return out, None, None, None


def quantile_wasserstein(p: Tensor, t: Tensor, positions: Tensor, power: float) -> Tensor:
    r"""Exact :math:`W_p^p` between rows of ``p`` and ``t`` (M, C) on the support ``positions``.

    Through the quantile functions, as POT's ``wasserstein_1d``:

    .. math::

        W_p^p = \int_0^1 |x_{F_p^{-1}(q)} - x_{F_t^{-1}(q)}|^p \, dq
        = \sum_m (q_m - q_{m-1})\, |x_{i_m} - x_{j_m}|^p,

    with :math:`q_m` the merged, sorted CDF values of both rows and :math:`i_m, j_m` the
    quantile indices on :math:`(q_{m-1}, q_m]`. Differentiable (through the sorted CDF
    values) in ``p`` and ``t``; :math:`O(C \log C)` per row.

    Examples
    --------
    >>> p, t = torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    >>> quantile_wasserstein(p, t, torch.tensor([0.0, 1.0, 2.0]), 2.0)  # (4 + 1) / 2
    tensor([2.5000])
    """
    num_classes = p.shape[-1]
    cdf_p, cdf_t = torch.cumsum(p, dim=-1), torch.cumsum(t, dim=-1)
    qs = torch.sort(torch.cat([cdf_p, cdf_t], dim=-1), dim=-1).values
    with torch.no_grad():
        # first class whose CDF reaches q; rounding can leave the last CDF value just under 1
        i = torch.searchsorted(cdf_p.detach().contiguous(), qs.detach().contiguous())
        j = torch.searchsorted(cdf_t.detach().contiguous(), qs.detach().contiguous())
        cost = positions[i.clamp_(max=num_classes - 1)] - positions[j.clamp_(max=num_classes - 1)]
        cost = cost.abs().pow(power)
    delta = torch.diff(qs, dim=-1, prepend=qs.new_zeros(*qs.shape[:-1], 1))
    return (delta * cost).sum(dim=-1)


# ------------------------------------------------------------------------- compiled CPU kernel

_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_KERNEL_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_REDUCTION_CODE = {"none": 0, "mean": 1, "sum": 2}
_NORMALIZATIONS = ("mean", "sum", "rps")


def squared_emd_cpu(
    input: Tensor,
    target: Tensor,
    *,
    positions: Tensor | Sequence[float] | None,
    normalization: str,
    input_type: str,
    weight: Tensor | Sequence[float] | None,
    reduction: str,
    ignore_index: int,
) -> Tensor | None:
    r""":func:`emdloss.functional.squared_emd` through the C++ CPU kernel, or None.

    None (the caller then takes the PyTorch path, which also raises every input error) unless
    the implementation is ``"fused"`` or ``"cpp"``, the kernel is available (see
    :mod:`emdloss._cpu_kernel`), nothing is being traced, and the call is the supported case:
    a CPU floating input of shape :math:`(N, C)` or :math:`(N, C, d_1, \dots)`,
    ``input_type="logits"``, integer class-index targets of the matching shape and known
    option names. Half and bfloat16 inputs are computed in float32. Class indices are checked
    inside the kernel (always, at no cost); a bad one also returns None so that the PyTorch
    path raises its usual ``ValueError``.

    Examples
    --------
    >>> x, y = torch.zeros(2, 3), torch.tensor([0, 2])
    >>> out = squared_emd_cpu(x, y, positions=None, normalization="mean", input_type="logits",
    ...                       weight=None, reduction="mean", ignore_index=-100)
    >>> out is None or bool(torch.isclose(out, torch.tensor(5 / 27)))
    True
    """
    if _impl not in ("fused", "cpp") or not (
        _cpu_kernel._state.get("loaded") or _cpu_kernel.ensure()
    ):
        return None
    if (
        input_type != "logits"
        or not isinstance(input, Tensor)
        or not isinstance(target, Tensor)
        or input.device.type != "cpu"
        or target.device.type != "cpu"
        or input.dtype not in _KERNEL_DTYPES
        or target.dtype not in _INDEX_DTYPES
        or input.dim() < 2
        or input.shape[1] < 2
        or target.shape != (input.shape[0], *input.shape[2:])
        or normalization not in _NORMALIZATIONS
        or reduction not in _REDUCTION_CODE
        or isinstance(ignore_index, bool)
        or not isinstance(ignore_index, int)
        or torch.compiler.is_compiling()
    ):
        return None
    from emdloss import _validation as V  # the package imports _ordinal first

    n, c, spatial = input.shape[0], input.shape[1], math.prod(input.shape[2:])
    x = input if input.dtype in (torch.float32, torch.float64) else input.float()
    gaps = w = None
    if positions is not None:
        pos = V.as_class_vector(positions, "positions", c, x)
        V.check_positions_values(pos)
        gaps = gap_weights(pos)
    if weight is not None:
        w = V.as_class_vector(weight, "weight", c, x)
        V.check_weight_values(w)
    scale = {"mean": 1.0 / c, "sum": 1.0, "rps": 1.0 / (c - 1)}[normalization]
    try:
        out: Tensor = torch.ops.emdloss_cpu.squared_emd(
            x.reshape(n, c, spatial),
            target.reshape(n, spatial).long(),
            gaps,
            w,
            ignore_index,
            scale,
            _REDUCTION_CODE[reduction],
        )
    except ValueError:  # a class index out of range: let the PyTorch path word the error
        return None
    if reduction == "none":
        out = out.reshape(target.shape)
    return out if out.dtype == input.dtype else out.to(input.dtype)
