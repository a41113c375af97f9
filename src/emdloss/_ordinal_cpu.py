"""The dispatch of :func:`emdloss.functional.squared_emd` to the compiled C++ CPU kernel.

Split from :mod:`emdloss._ordinal` by job: :mod:`emdloss._cpu_kernel` builds and loads the
kernel, this module decides when a call can run it and wraps it so that second-order gradients
stay exact. :func:`squared_emd_cpu` stays importable from :mod:`emdloss._ordinal`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from emdloss import _cpu_kernel
from emdloss._ordinal_fused import _differentiable_backward

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
