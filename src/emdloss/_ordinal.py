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
is built and used; :func:`emdloss._ordinal_cpu.squared_emd_cpu` is the dispatch), and these kernels otherwise.

Split by job: :mod:`emdloss._ordinal_fused` holds the fused kernels, their ``torch.library``
ops and the reference formulas, :mod:`emdloss._ordinal_cpu` the dispatch to the C++ kernel;
this module chooses the implementation (:func:`implementation`, the dispatch table) and holds
the public entry points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

from emdloss import _cpu_kernel
from emdloss._ordinal_fused import (
    _cdf_loss_op,
    _CdfLoss,
    _LinearLoss,
    _scaled,
    apply_function,
    cdf_loss_reference,
    linear_loss_reference,
)
from emdloss.vocabulary import IMPLEMENTATIONS

__all__ = [
    "cdf_loss",
    "choose",
    "current_implementation",
    "gap_weights",
    "implementation",
    "linear_loss",
    "quantile_wasserstein",
]


# The implementation chosen by an enclosing ``implementation()`` block in this thread/task;
# None: the process default (``EMDLOSS_CPU_KERNEL``, see current_implementation()).
_IMPL: ContextVar[str | None] = ContextVar("emdloss_implementation", default=None)


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
    return "cpp" if _cpu_kernel.ensure() else "fused"


def gap_weights(positions: Tensor) -> Tensor:
    r"""Gap weights :math:`w_k = x_{k+1} - x_k` (:math:`k < C`) and :math:`w_C = 0`.

    Examples
    --------
    >>> gap_weights(torch.tensor([1.0, 5.0, 10.5]))
    tensor([4.0000, 5.5000, 0.0000])
    """
    return torch.cat([positions[1:] - positions[:-1], positions.new_zeros(1)])


# ------------------------------------------------------------------------------ the dispatch table
#
# The implementation that runs a call is chosen once per call, by choose() (the only reader of
# the torch.compile state, the context variable and EMDLOSS_CPU_KERNEL), and passed down: the
# public functionals choose before they dispatch, and cdf_loss/linear_loss take the choice.
# One table per formula maps it to the code that computes it. "cpp" differs from "fused" only
# for squared_emd (emdloss.functional runs the C++ kernel of emdloss._ordinal_cpu first), so
# both map to the fused kernels here.


def choose(parameter: Tensor | None = None) -> str:
    """The implementation that runs one call: one of :data:`IMPLEMENTATIONS`.

    :func:`current_implementation`, except in two cases that override it: a class parameter
    that needs a gradient (gaps from trainable positions, cost rows of a learned ground
    distance) takes ``"reference"``, because the analytic backward differentiates the scores
    and the target only; under :func:`torch.compile` the traceable ``"library"`` op runs,
    decided before the setting is read (Dynamo in torch 2.5 cannot trace ``ContextVar.get``).

    Examples
    --------
    >>> with implementation("reference"):
    ...     choose(), choose(torch.ones(3, requires_grad=True))
    ('reference', 'reference')
    >>> choose(torch.ones(3, requires_grad=True))
    'reference'
    """
    if parameter is not None and parameter.requires_grad:
        return "reference"
    if torch.compiler.is_compiling():
        return "library"
    return current_implementation()


def _cdf_fused(
    x: Tensor, t: Tensor, gaps: Tensor | None, squared: bool, it: str, ss: float | None
) -> Tensor:
    out: Tensor = apply_function(_CdfLoss, x, t, gaps, squared, it, ss)[0]
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
    out: Tensor = apply_function(_LinearLoss, x, cost_rows, it, ss)[0]
    return out


def _linear_reference(x: Tensor, cost_rows: Tensor, it: str, ss: float | None) -> Tensor:
    return _scaled(linear_loss_reference(x, cost_rows, it), ss)


_CDF_KERNELS: dict[str, Callable[..., Tensor]] = {
    "fused": _cdf_fused,
    "cpp": _cdf_fused,
    "library": _cdf_library,
    "reference": _cdf_reference,
}
# linear_loss has no torch.library op: under torch.compile its plain formula is traced.
_LINEAR_KERNELS: dict[str, Callable[..., Tensor]] = {
    "fused": _linear_fused,
    "cpp": _linear_fused,
    "library": _linear_reference,
    "reference": _linear_reference,
}


# ----------------------------------------------------------------------------- public kernels


def cdf_loss(
    x: Tensor,
    target: Tensor,
    gaps: Tensor | None,
    *,
    squared: bool,
    input_type: str,
    sum_scale: float | None = None,
    chosen: str | None = None,
) -> Tensor:
    r"""Per-row CDF distance :math:`\sum_k w_k D_k^2` (``squared``) or :math:`\sum_k w_k |D_k|`.

    ``gaps`` is the vector :math:`w` (None: all ones; for the L1 form the last term is always
    dropped). No normalisation constant is applied. With ``sum_scale`` the result is the sum
    over rows times ``sum_scale`` (a plain sum/mean reduction, folded into the fused kernel so
    that its backward needs no per-row gradient). ``chosen`` is the implementation the caller
    already chose with :func:`choose` (None: choose now). Gradients flow to ``x`` and to a
    floating ``target``.

    Examples
    --------
    >>> x = torch.tensor([[0.5, 0.3, 0.2]])
    >>> cdf_loss(x, torch.tensor([2]), None, squared=True, input_type="probs")
    tensor([0.8900])
    >>> cdf_loss(x, torch.tensor([2]), None, squared=False, input_type="probs")
    tensor([1.3000])
    """
    kernel = _CDF_KERNELS[choose(gaps) if chosen is None else chosen]
    return kernel(x, target, gaps, squared, input_type, sum_scale)


def linear_loss(
    x: Tensor,
    cost_rows: Tensor,
    input_type: str,
    *,
    sum_scale: float | None = None,
    chosen: str | None = None,
) -> Tensor:
    r"""Per-row :math:`\sum_i p_i G_i`: the EMD to a one-hot target :math:`y` when :math:`G_i = D_{iy}`.

    ``cost_rows`` has ``x``'s shape. With ``sum_scale`` the result is the sum over rows times
    ``sum_scale``; ``chosen`` as for :func:`cdf_loss`. Analytic backward (plain autograd when
    ``cost_rows`` itself needs a gradient).

    Examples
    --------
    >>> linear_loss(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[2.0, 1.0, 0.0]]), "probs")
    tensor([1.3000])
    """
    kernel = _LINEAR_KERNELS[choose(cost_rows) if chosen is None else chosen]
    return kernel(x, cost_rows, input_type, sum_scale)


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
        cost = positions[i.clamp(max=num_classes - 1)] - positions[j.clamp(max=num_classes - 1)]
        cost = cost.abs().pow(power)
    delta = torch.diff(qs, dim=-1, prepend=qs.new_zeros(*qs.shape[:-1], 1))
    return (delta * cost).sum(dim=-1)
