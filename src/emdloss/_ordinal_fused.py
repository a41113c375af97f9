r"""The fused CDF kernels of :mod:`emdloss._ordinal`, their ``torch.library`` ops and their autograd.

Split from :mod:`emdloss._ordinal` by job (see its docstring for the maths): this module holds
the analytic forward and backward passes (:class:`_CdfLoss`, :class:`_LinearLoss`), the
``emdloss::cdf_loss`` custom ops that run under :func:`torch.compile`, the pure-PyTorch
reference formulas and the exact second-order path shared by all of them.
:mod:`emdloss._ordinal` chooses among them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# Below this many classes a hand-written softmax beats torch.softmax on the CPU (rows shorter
# than a vector register fall off the library kernel's vectorised path).
_SMALL_C = 16


def _class_view(vector: Tensor, ndim: int) -> Tensor:
    """A length-C vector shaped to broadcast along dim 1 of an ``ndim``-d tensor."""
    return vector.view(1, -1) if ndim == 2 else vector.view(1, -1, 1)


def one_hot(index: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """One-hot rows of class indices (N,) / (N, S) as (N, C) / (N, C, S) in ``dtype``.

    A comparison, not :func:`torch.nn.functional.one_hot`, whose range check reads the indices
    to Python: this one runs under :func:`torch.func.vmap` and :func:`torch.compile` too.

    Examples
    --------
    >>> one_hot(torch.tensor([2, 0]), 3, torch.float32)
    tensor([[0., 0., 1.],
            [1., 0., 0.]])
    """
    classes = torch.arange(num_classes, device=index.device)
    return (index.unsqueeze(1) == _class_view(classes, index.dim() + 1)).to(dtype)


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
    if _transformed():  # vmap batches no out= write
        return out.copy_(torch.cumsum(src, dim=1))
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
        if _transformed():  # out of place: vmap has no batching rule for scatter_
            d = torch.cumsum(p.scatter(1, index, p_y - 1), dim=1)
        elif p is x:  # the caller's tensor: work on a copy
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
        loss = torch.linalg.vector_norm(d, dim=1, keepdim=True).square()
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
    transformed = _transformed()
    uniform = grad.dim() == 0 or (not transformed and all(st == 0 for st in grad.stride()))
    if uniform and grad.numel() > 0:
        g0 = grad if grad.dim() == 0 else grad[(0,) * grad.dim()]
        if grad.device.type == "cpu" and _READ_SCALAR_ON_CPU and not transformed:  # free: fold in
            scale = g0.item() * factor
            torch.sub(a.mul_(scale), xs, alpha=scale, out=xs)  # `a` is a fresh (N, 1[, S])
            if input_type != "probs":
                assert p is not None
                xs.mul_(p)
            return xs, grad_target
        row_scale = g0 * factor
    else:
        row_scale = grad.unsqueeze(1) * factor
    if transformed:  # vmap cannot write out= into a buffer it batched
        xs = a - xs
    else:
        torch.sub(a, xs, out=xs)
    if input_type != "probs":
        assert p is not None
        xs.mul_(p)
    xs.mul_(row_scale)
    return xs, grad_target


def _transformed() -> bool:
    """Whether a :mod:`torch.func` transform (grad, vmap, jacrev, ...) is active here.

    The backward kernels then avoid what the transforms cannot batch: reading a gradient to
    a Python float and ``out=`` writes into a fresh buffer.
    """
    return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()


class _CdfLoss(torch.autograd.Function):
    """The fused CDF loss; returns (loss, p, e, per-row loss), the last three for the backward.

    ``forward`` / ``setup_context`` are split and the vmap rule is generated, so the
    :mod:`torch.func` transforms (grad, vmap, jacrev, vmap of grad) run the same kernels.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor,
        target: Tensor,
        gaps: Tensor | None,
        squared: bool,
        input_type: str,
        sum_scale: float | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        loss, p, e = _cdf_forward(x, target, gaps, squared, input_type)
        out = loss.sum() * sum_scale if sum_scale is not None else loss.squeeze(1)
        # An output may not be the input itself: "probs" keeps x, and p is then a placeholder.
        return out, (p if p is not x else x.new_empty(0)), e, loss

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        x, target, gaps, squared, input_type, sum_scale = inputs
        _, p, e, loss = output
        ctx.mark_non_differentiable(p, e, loss)
        ctx.set_materialize_grads(False)  # no zero gradients built for the outputs p, e, loss
        ctx.save_for_backward(x, p if input_type != "probs" else None, e, target, loss, gaps)
        ctx.squared, ctx.input_type, ctx.sum_scale = squared, input_type, sum_scale

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None, *_unused: Any) -> tuple[Tensor | None, ...]:
        if grad is None:  # the loss output itself unused (grads are not materialised)
            return None, None, None, None, None, None
        x, p, e, target, loss, gaps = ctx.saved_tensors
        target_grad = bool(ctx.needs_input_grad[1]) and target.is_floating_point()
        if torch.is_grad_enabled():  # create_graph=True: a backward that is itself differentiable
            gx, gt = _differentiable_backward(
                lambda z, t: _scaled(
                    cdf_loss_reference(z, t, gaps, squared=ctx.squared, input_type=ctx.input_type),
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
            lambda z, t: cdf_loss_reference(
                z, t, gaps, squared=ctx.squared, input_type=ctx.input_type
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
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    target: Tensor,
    x_grad: bool,
    target_grad: bool,
    grad: Tensor,
) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of ``loss_fn(x, target)`` (a reference formula) as a graph.

    The analytic backward kernels are not differentiable (they work in place on buffers that
    carry no history), so when the engine asks for a graph (``create_graph=True``, seen as grad
    mode being on inside ``backward``) the gradient is recomputed by autograd through the pure-
    PyTorch formula: double backward is then exact on every implementation, at the cost of the
    reference path for that call only.
    """
    wanted = [t for t, need in ((x, x_grad), (target, target_grad)) if need]
    if not wanted:
        return None, None
    if _transformed():
        # Inside torch.func transforms (jacrev, grad of grad) torch.autograd.grad does not see
        # the transforms' tensors: differentiate with torch.func.vjp, which nests.
        if target_grad:
            gx, gt = torch.func.vjp(loss_fn, x, target)[1](grad)
        else:
            gx, gt = torch.func.vjp(lambda z: loss_fn(z, target), x)[1](grad)[0], None
        return (gx if x_grad else None), gt
    with torch.enable_grad():
        out = loss_fn(x, target)
        grads = torch.autograd.grad(out, wanted, grad, create_graph=True, allow_unused=True)
    filled = [torch.zeros_like(t) if g is None else g for t, g in zip(wanted, grads, strict=True)]
    gx = filled.pop(0) if x_grad else None
    gt = filled.pop(0) if target_grad else None
    return gx, gt


# ----------------------------------------------------------------------------- reference formulas


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
        t = one_hot(target, p.shape[1], p.dtype)
    else:
        t = target
    d = torch.cumsum(p, dim=1) - torch.cumsum(t, dim=1)
    terms = d.square() if squared else d.abs()
    if gaps is not None:
        terms = terms * _class_view(gaps, d.dim())
    return terms.sum(dim=1)


def linear_loss_reference(x: Tensor, cost_rows: Tensor, input_type: str) -> Tensor:
    r"""Pure-PyTorch per-row :math:`\sum_i p_i G_i` (plain autograd).

    Examples
    --------
    >>> linear_loss_reference(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]]), "probs")
    tensor([0.5000])
    """
    return (probabilities(x, input_type) * cost_rows).sum(dim=1)


class _LinearLoss(torch.autograd.Function):
    r""":math:`L = \sum_i p_i G_i`; through a softmax :math:`\partial L / \partial z = p (G - L)`.

    Returns (loss, p, per-row loss), the last two for the backward; ``setup_context`` and a
    generated vmap rule make it usable under the :mod:`torch.func` transforms.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor, cost_rows: Tensor, input_type: str, sum_scale: float | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        p = _softmax(x) if input_type == "logits" else probabilities(x, input_type)
        loss = torch.linalg.vecdot(p, cost_rows, dim=1).unsqueeze(1)
        out = loss.sum() * sum_scale if sum_scale is not None else loss.squeeze(1)
        return out, (p if p is not x else x.new_empty(0)), loss

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        x, cost_rows, input_type, sum_scale = inputs
        _, p, loss = output
        ctx.mark_non_differentiable(p, loss)
        ctx.set_materialize_grads(False)  # no zero gradients built for the outputs p, loss
        ctx.save_for_backward(x, p if input_type != "probs" else None, cost_rows, loss)
        ctx.input_type, ctx.sum_scale = input_type, sum_scale

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None, *_unused: Any) -> tuple[Tensor | None, ...]:
        if grad is None:  # the loss output itself unused (grads are not materialised)
            return None, None, None, None
        x, p, cost_rows, loss = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate a differentiable backward
            gx, _ = _differentiable_backward(
                lambda z, g: _scaled(linear_loss_reference(z, g, ctx.input_type), ctx.sum_scale),
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


# ------------------------------------------------------------------------ eager twins


def _eager_twin(function: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """The same Function written in the older style (``ctx`` passed to ``forward``).

    For a Function with ``setup_context`` torch binds the call's arguments with
    ``inspect.signature`` on every call (about 30-60 us, a third of the whole loss at
    C = 8); outside the :mod:`torch.func` transforms the twin, which runs the same forward,
    ``setup_context`` and backward, is used instead.
    """

    def forward(ctx: Any, *args: Any) -> Any:
        output = function.forward(*args)
        function.setup_context(ctx, args, output)
        return output

    body = {"forward": staticmethod(forward), "backward": staticmethod(function.backward)}
    return type(f"{function.__name__}Eager", (torch.autograd.Function,), body)


_EAGER: dict[type[torch.autograd.Function], type[torch.autograd.Function]] = {
    f: _eager_twin(f) for f in (_CdfLoss, _LinearLoss)
}


def apply_function(function: type[torch.autograd.Function], *args: Any) -> Any:
    """``function.apply(*args)``, through its eager twin unless a torch.func transform is on."""
    if torch._C._are_functorch_transforms_active():
        return function.apply(*args)
    return _EAGER[function].apply(*args)
