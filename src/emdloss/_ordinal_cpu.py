"""The dispatch of :func:`emdloss.functional.squared_emd` to the compiled C++ CPU kernel.

Split from :mod:`emdloss._ordinal` by job: :mod:`emdloss._cpu_kernel` builds and loads the
kernel, this module decides when a call can run it (the op's autograd, second order included, is
in the C++ source).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from emdloss import _cpu_kernel

_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_REDUCTION_CODE = {"none": 0, "mean": 1, "sum": 2}


def squared_emd_cpu(
    x: Tensor,
    target: Tensor,
    *,
    gaps: Tensor | None,
    weight: Tensor | None,
    scale: float,
    reduction: str,
    ignore_index: int,
) -> Tensor | None:
    r"""The squared EMD of validated arguments through the C++ CPU kernel, or None.

    Called by :func:`emdloss.functional.squared_emd` after it has checked every argument, when
    the implementation in effect is ``"cpp"`` and the input is logits with class-index
    targets. None (the caller then takes the PyTorch path) outside the kernel's case: ``x``
    a CPU float32/float64 tensor shaped (N, C) or (N, C, S), an integer ``target`` (N,) or
    (N, S) holding raw class indices (``ignore_index`` included), ``gaps`` and ``weight``
    (length-C vectors of ``x``'s dtype, or None) that need no gradient, and nothing traced
    or transformed by :mod:`torch.func`. A class index out of range (possible only with
    validation off) also gives None, so that the PyTorch path raises. Returns the kernel's output: a scalar, or (N, S) for
    ``reduction="none"``. The op's autograd is in C++: its first-order backward scales the
    gradient kept from the forward, and under ``create_graph=True`` it differentiates the
    same loss written in ATen ops, so second-order gradients are exact.

    Examples
    --------
    >>> x, y = torch.zeros(2, 3), torch.tensor([0, 2])
    >>> out = squared_emd_cpu(x, y, gaps=None, weight=None, scale=1 / 3, reduction="mean",
    ...                       ignore_index=-100)
    >>> out is None or bool(torch.isclose(out, torch.tensor(5 / 27)))
    True
    """
    if (
        not _cpu_kernel.is_loaded()
        or x.device.type != "cpu"
        or target.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64)
        or target.dtype not in _INDEX_DTYPES
        or any(t is not None and t.requires_grad for t in (gaps, weight))
        or torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()  # a C++ autograd node: no torch.func
    ):
        return None
    n, c, m = x.shape[0], x.shape[1], math.prod(x.shape[2:])  # not -1: N may be 0
    flat_t = target.reshape(n, m).long()

    def run(z: Tensor) -> Tensor:
        out: Tensor = torch.ops.emdloss_cpu.squared_emd(
            z.reshape(n, c, m),
            flat_t,
            gaps,
            weight,
            ignore_index,
            scale,
            _REDUCTION_CODE[reduction],
        )
        return out

    try:
        return run(x)
    except ValueError:  # a class index out of range: let the PyTorch path word the error
        return None
