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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from emdloss import _cpu_kernel

__all__ = [
    "IMPLEMENTATIONS",
    "cdf_loss",
    "cdf_loss_reference",
    "current_implementation",
    "gap_weights",
    "implementation",
    "linear_loss",
    "linear_loss_reference",
    "probabilities",
    "quantile_wasserstein",
    "squared_emd_cpu",
]

IMPLEMENTATIONS = ("fused", "cpp", "library", "reference")

# The implementation chosen by an enclosing ``implementation()`` block in this thread/task;
# None: the process default (``EMDLOSS_CPU_KERNEL``, see current_implementation()).
_IMPL: ContextVar[str | None] = ContextVar("emdloss_implementation", default=None)

# Below this many classes a hand-written softmax beats torch.softmax on the CPU (rows shorter
# than a vector register fall off the library kernel's vectorised path).
_SMALL_C = 16


@contextmanager
def implementation(name: str) -> Iterator[None]:
    """Select the implementation of the losses inside a block (this thread/task only).

    ``"fused"`` (the default): the analytic kernels of this module, through an
    ``autograd.Function`` in eager mode and the ``torch.library`` op under ``torch.compile``;
    ``"cpp"``: as ``"fused"``, but :func:`~emdloss.functional.squared_emd` on the CPU with
    logits and class-index targets runs the compiled C++ kernel of :mod:`emdloss._cpu_kernel`,
    which is built on entry if needed (a ``RuntimeError`` if that fails); ``"library"``: the
    ``torch.library`` op always; ``"reference"``: plain autograd through ``cumsum``.

    The C++ kernel runs only here or under ``EMDLOSS_CPU_KERNEL=1``, never merely because a
    build exists, so results do not depend on what the machine's cache holds. The setting is a
    :class:`contextvars.ContextVar`: other threads and tasks are not affected.

    Examples
    --------
    >>> import torch
    >>> x, y = torch.zeros(1, 3), torch.tensor([0])
    >>> with implementation("reference"):
    ...     cdf_loss(x, y, None, squared=True, input_type="logits")
    tensor([0.5556])
    """
    if not isinstance(name, str) or name not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {name!r}")
    if name == "cpp" and not _cpu_kernel.build():
        raise RuntimeError("the C++ CPU kernel could not be built (see the warning above)")
    token = _IMPL.set(name)
    try:
        yield
    finally:
        _IMPL.reset(token)


def current_implementation() -> str:
    """The implementation in effect here: the enclosing :func:`implementation` block's, else
    ``"cpp"`` under ``EMDLOSS_CPU_KERNEL=1`` (if the kernel builds; else ``"fused"``, with one
    warning), else ``"fused"``.

    Examples
    --------
    >>> with implementation("reference"):
    ...     current_implementation()
    'reference'
    """
    name = _IMPL.get()
    if name is not None:
        return name
    if _cpu_kernel.mode() == "1" and _cpu_kernel.build():
        return "cpp"
    return "fused"


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
        ctx.save_for_backward(x, p if input_type != "probs" else None, e, target, loss, gaps)
        ctx.squared, ctx.input_type, ctx.sum_scale = squared, input_type, sum_scale
        if sum_scale is not None:
            return loss.sum() * sum_scale
        return loss.squeeze(1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, p, e, target, loss, gaps = ctx.saved_tensors
        target_grad = bool(ctx.needs_input_grad[1]) and target.is_floating_point()
        if torch.is_grad_enabled():  # create_graph=True: a backward that is itself differentiable
            gx, gt = _differentiable_backward(
                lambda: _scaled(
                    cdf_loss_reference(
                        x, target, gaps, squared=ctx.squared, input_type=ctx.input_type
                    ),
                    ctx.sum_scale,
                ),
                x,
                target,
                bool(ctx.needs_input_grad[0]),
                target_grad,
                grad,
            )
            return gx, gt, None, None, None, None
        if ctx.sum_scale is not None:
            grad = grad * ctx.sum_scale
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
    x, target, gaps, squared, input_type = inputs
    loss, p, e = output
    ctx.save_for_backward(x, p, e, target, loss.unsqueeze(1), gaps)
    ctx.squared, ctx.input_type = squared, input_type
    ctx.x_grad = bool(x.requires_grad)
    ctx.target_grad = bool(target.requires_grad) and target.is_floating_point()


def _op_backward(ctx: Any, grad: Tensor, _grad_p: Any, _grad_e: Any) -> tuple[Any, ...]:
    x, p, e, target, loss, gaps = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: differentiate a differentiable backward
        gx, gt = _differentiable_backward(
            lambda: cdf_loss_reference(
                x, target, gaps, squared=ctx.squared, input_type=ctx.input_type
            ),
            x,
            target,
            ctx.x_grad,
            ctx.target_grad,
            grad,
        )
        return gx, gt, None, None, None
    grad_x, grad_target = _cdf_loss_backward_op(
        grad, p, e, target, loss, ctx.squared, ctx.input_type, ctx.target_grad
    )
    return grad_x, grad_target if ctx.target_grad else None, None, None, None


_cdf_loss_op.register_autograd(_op_backward, setup_context=_op_setup_context)


# ------------------------------------------------------------------- exact second-order gradients


def _scaled(rows: Tensor, sum_scale: float | None) -> Tensor:
    return rows if sum_scale is None else rows.sum() * sum_scale


def _differentiable_backward(
    loss_fn: Callable[[], Tensor],
    x: Tensor,
    target: Tensor,
    x_grad: bool,
    target_grad: bool,
    grad: Tensor,
) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of ``loss_fn()`` (a reference formula of ``x`` and ``target``) as a graph.

    The analytic backward kernels are not differentiable (they work in place on buffers that
    carry no history), so when the engine asks for a graph (``create_graph=True``, seen as grad
    mode being on inside ``backward``) the gradient is recomputed by autograd through the pure-
    PyTorch formula: double backward is then exact on every implementation, at the cost of the
    reference path for that call only.
    """
    wanted = [t for t, need in ((x, x_grad), (target, target_grad)) if need]
    if not wanted:
        return None, None
    with torch.enable_grad():
        out = loss_fn()
        grads = torch.autograd.grad(out, wanted, grad, create_graph=True, allow_unused=True)
    filled = [torch.zeros_like(t) if g is None else g for t, g in zip(wanted, grads, strict=True)]
    gx = filled.pop(0) if x_grad else None
    gt = filled.pop(0) if target_grad else None
    return gx, gt


# ------------------------------------------------------------------------------ the dispatch table
#
# One table per formula maps the implementation in effect (current_implementation()) to the code
# that computes it. "cpp" differs from "fused" only for squared_emd (see squared_emd_cpu), so
# both map to the fused kernels here. Two cases override the table: under torch.compile the
# fused eager Function becomes the torch.library op (what the compiler can trace), and a
# class parameter that needs a gradient (gaps from positions, cost rows from a learned ground
# distance) takes the reference path, because the analytic backward differentiates the scores
# and the target only.


def _kernel_for(parameter: Tensor | None) -> str:
    if parameter is not None and parameter.requires_grad:
        return "reference"
    # Under torch.compile the traceable op, decided before current_implementation(): Dynamo in
    # torch 2.5 cannot trace the ContextVar.get behind it.
    if torch.compiler.is_compiling():
        return "library"
    name = current_implementation()
    if name in ("reference", "library"):
        return name
    return "fused"


def _cdf_fused(
    x: Tensor, t: Tensor, gaps: Tensor | None, squared: bool, it: str, ss: float | None
) -> Tensor:
    out: Tensor = _CdfLoss.apply(x, t, gaps, squared, it, ss)
    return out


def _cdf_library(
    x: Tensor, t: Tensor, gaps: Tensor | None, squared: bool, it: str, ss: float | None
) -> Tensor:
    return _scaled(_cdf_loss_op(x, t, gaps, squared, it)[0], ss)


def _cdf_reference(
    x: Tensor, t: Tensor, gaps: Tensor | None, squared: bool, it: str, ss: float | None
) -> Tensor:
    return _scaled(cdf_loss_reference(x, t, gaps, squared=squared, input_type=it), ss)


def _linear_fused(x: Tensor, cost_rows: Tensor, it: str, ss: float | None) -> Tensor:
    out: Tensor = _LinearLoss.apply(x, cost_rows, it, ss)
    return out


def _linear_reference(x: Tensor, cost_rows: Tensor, it: str, ss: float | None) -> Tensor:
    return _scaled(linear_loss_reference(x, cost_rows, it), ss)


_CDF_KERNELS: dict[str, Callable[..., Tensor]] = {
    "fused": _cdf_fused,
    "library": _cdf_library,
    "reference": _cdf_reference,
}
# linear_loss has no torch.library op: under torch.compile its plain formula is traced.
_LINEAR_KERNELS: dict[str, Callable[..., Tensor]] = {
    "fused": _linear_fused,
    "library": _linear_reference,
    "reference": _linear_reference,
}


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
    kernel = _CDF_KERNELS[_kernel_for(gaps)]
    return kernel(x, target, gaps, squared, input_type, sum_scale)


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
    kernel = _LINEAR_KERNELS[_kernel_for(cost_rows)]
    return kernel(x, cost_rows, input_type, sum_scale)


def linear_loss_reference(x: Tensor, cost_rows: Tensor, input_type: str) -> Tensor:
    r"""Pure-PyTorch per-row :math:`\sum_i p_i G_i` (plain autograd).

    Examples
    --------
    >>> linear_loss_reference(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]]), "probs")
    tensor([0.5000])
    """
    return (probabilities(x, input_type) * cost_rows).sum(dim=1)


class _LinearLoss(torch.autograd.Function):
    r""":math:`L = \sum_i p_i G_i`; through a softmax :math:`\partial L / \partial z = p (G - L)`."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, cost_rows: Tensor, input_type: str, sum_scale: float | None
    ) -> Tensor:
        p = _softmax(x) if input_type == "logits" else probabilities(x, input_type)
        loss = torch.linalg.vecdot(p, cost_rows, dim=1).unsqueeze(1)
        ctx.save_for_backward(x, p if input_type != "probs" else None, cost_rows, loss)
        ctx.input_type, ctx.sum_scale = input_type, sum_scale
        return loss.sum() * sum_scale if sum_scale is not None else loss.squeeze(1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, p, cost_rows, loss = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate a differentiable backward
            gx, _ = _differentiable_backward(
                lambda: _scaled(linear_loss_reference(x, cost_rows, ctx.input_type), ctx.sum_scale),
                x,
                cost_rows,
                True,
                False,
                grad,
            )
            return gx, None, None, None
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
_REDUCTION_CODE = {"none": 0, "mean": 1, "sum": 2}


class _SquaredEmdKernel(torch.autograd.Function):
    """The C++ kernel's own autograd op, wrapped so that a differentiable backward exists.

    The C++ backward multiplies a gradient kept from the forward, which carries no history:
    under ``create_graph=True`` it would give silently wrong second-order gradients. Here the
    first-order backward calls the C++ node directly (no engine run, no Python arithmetic) and
    ``create_graph=True`` goes through ``reference``, the same loss in plain autograd.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, run: Callable[[Tensor], Tensor], reference: Callable[[Tensor], Tensor]
    ) -> Tensor:
        with torch.enable_grad():
            xd = x.detach().requires_grad_(bool(ctx.needs_input_grad[0]))
            out = run(xd)
        ctx.node, ctx.reference = out.grad_fn, reference
        ctx.save_for_backward(x)
        return out.detach()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            gx, _ = _differentiable_backward(lambda: ctx.reference(x), x, x, True, False, grad)
            return gx, None, None
        return ctx.node(grad)[0].view(x.shape), None, None


def squared_emd_cpu(
    x: Tensor,
    target: Tensor,
    *,
    gaps: Tensor | None,
    weight: Tensor | None,
    scale: float,
    reduction: str,
    ignore_index: int,
    reference: Callable[[Tensor], Tensor],
) -> Tensor | None:
    r"""The squared EMD of validated arguments through the C++ CPU kernel, or None.

    Called by :func:`emdloss.functional.squared_emd` after it has checked every argument, when
    the implementation in effect is ``"cpp"`` and the input is logits with class-index
    targets. None (the caller then takes the PyTorch path) outside the kernel's case: ``x``
    a CPU float32/float64 tensor shaped (N, C) or (N, C, S), an integer ``target`` (N,) or
    (N, S) holding raw class indices (``ignore_index`` included), ``gaps`` and ``weight``
    (length-C vectors of ``x``'s dtype, or None) that need no gradient, and nothing traced. A
    class index out of range (possible only with validation off) also gives None, so that
    the PyTorch path raises. ``reference(x)`` is the same loss in plain autograd, used for
    exact second-order gradients. Returns the kernel's output: a scalar, or (N, S) for
    ``reduction="none"``.

    Examples
    --------
    >>> x, y = torch.zeros(2, 3), torch.tensor([0, 2])
    >>> out = squared_emd_cpu(x, y, gaps=None, weight=None, scale=1 / 3, reduction="mean",
    ...                       ignore_index=-100, reference=lambda z: z.sum())
    >>> out is None or bool(torch.isclose(out, torch.tensor(5 / 27)))
    True
    """
    if (
        not (_cpu_kernel._state.get("loaded") or _cpu_kernel.is_loaded())
        or x.device.type != "cpu"
        or target.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64)
        or target.dtype not in _INDEX_DTYPES
        or any(t is not None and t.requires_grad for t in (gaps, weight))
        or torch.compiler.is_compiling()
    ):
        return None
    n, c = x.shape[0], x.shape[1]
    flat_t = target.reshape(n, -1).long()

    def run(z: Tensor) -> Tensor:
        out: Tensor = torch.ops.emdloss_cpu.squared_emd(
            z.reshape(n, c, -1),
            flat_t,
            gaps,
            weight,
            ignore_index,
            scale,
            _REDUCTION_CODE[reduction],
        )
        return out

    try:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return run(x)
        loss: Tensor = _SquaredEmdKernel.apply(x, run, reference)
        return loss
    except ValueError:  # a class index out of range: let the PyTorch path word the error
        return None
