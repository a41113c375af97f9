r"""``nn.Module`` losses over :mod:`emdloss.functional`, with PyTorch's argument names.

Each module stores its options; class weights, positions, ground distances and cost matrices
are registered as buffers, so ``.to(device)`` / ``.double()`` move them with the model and they
are saved in the ``state_dict``. ``forward(input, target)`` takes the same shapes as
:class:`torch.nn.CrossEntropyLoss`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from emdloss import _validation as V
from emdloss import functional as EF

__all__ = ["CostMatrixEMDLoss", "EMDLoss", "GroundEMDLoss", "SquaredEMDLoss"]

ClassVector = Tensor | Sequence[float]


def _as_buffer(value: ClassVector | None, name: str) -> Tensor | None:
    """A tensor for ``register_buffer`` (floating; sequences become float32); None stays None."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        # a copy: set_cost_matrix() writes into the buffer, which must not alias the caller's
        t = value.detach()
        return t.clone() if t.is_floating_point() else t.to(torch.get_default_dtype())
    try:
        return torch.as_tensor(value, dtype=torch.get_default_dtype())
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or a sequence of numbers: {err}") from None


class _EMDLossBase(nn.Module):
    weight: Tensor | None

    def __init__(
        self,
        *,
        weight: ClassVector | None,
        input_type: str,
        reduction: str,
        ignore_index: int,
    ) -> None:
        super().__init__()
        self.input_type = V.check_choice("input_type", input_type, V.INPUT_TYPES)
        self.reduction = V.check_choice("reduction", reduction, V.REDUCTIONS)
        self.ignore_index = V.check_ignore_index(ignore_index)
        self.register_buffer("weight", _as_buffer(weight, "weight"))

    def extra_repr(self) -> str:
        return f"input_type={self.input_type!r}, reduction={self.reduction!r}"


class SquaredEMDLoss(_EMDLossBase):
    r"""Squared EMD for ordered classes: :func:`emdloss.functional.squared_emd` as a module.

    .. math::

        \ell(p, t) = c \sum_k w_k (P_k - T_k)^2

    the squared L2 distance between the predicted and target CDFs (Hou, Yu & Samaras), with
    :math:`c = 1/C` (``normalization="class_mean"``, the authors'), 1 (``"sum"``, dlordinal's
    ``EMDLoss``) or :math:`1/(C-1)` (``"rps"``).

    Parameters
    ----------
    positions : Tensor or sequence of float, optional
        Strictly increasing class coordinates (gap-weighted form).
    normalization : {"class_mean", "sum", "rps"}
        ``"mean"`` is a deprecated alias of ``"class_mean"``.
    input_type : {"logits", "probs", "log_probs"}
    weight : Tensor or sequence of float, optional
        Per-class weights, as in :class:`torch.nn.CrossEntropyLoss`.
    reduction : {"mean", "sum", "none"}
    ignore_index : int

    Examples
    --------
    >>> import torch
    >>> loss_fn = SquaredEMDLoss()
    >>> logits = torch.tensor([[2.0, 0.0, -2.0], [0.0, 0.0, 0.0]], requires_grad=True)
    >>> loss = loss_fn(logits, torch.tensor([0, 1]))
    >>> loss.backward()
    >>> round(loss.item(), 4)
    0.04
    """

    positions: Tensor | None

    def __init__(
        self,
        *,
        positions: ClassVector | None = None,
        normalization: str = "class_mean",
        input_type: str = "logits",
        weight: ClassVector | None = None,
        reduction: str = "mean",
        ignore_index: int = -100,
    ) -> None:
        super().__init__(
            weight=weight, input_type=input_type, reduction=reduction, ignore_index=ignore_index
        )
        self.normalization = V.check_normalization(normalization)
        self.register_buffer("positions", _as_buffer(positions, "positions"))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return EF.squared_emd(
            input,
            target,
            positions=self.positions,
            normalization=self.normalization,
            input_type=self.input_type,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
        )

    def extra_repr(self) -> str:
        return f"normalization={self.normalization!r}, {super().extra_repr()}"


class EMDLoss(_EMDLossBase):
    r"""Exact :math:`W_p^p` on the line: :func:`emdloss.functional.emd` as a module.

    .. math::

        W_p^p(p, t) = \int_0^1 |x_{P^{-1}(q)} - x_{T^{-1}(q)}|^p \, dq,
        \qquad W_1 = \sum_k |P_k - T_k| (x_{k+1} - x_k).

    Parameters
    ----------
    p : float
        Order :math:`p \ge 1`.
    positions : Tensor or sequence of float, optional
        Strictly increasing class coordinates (default :math:`0, \dots, C-1`).
    input_type, weight, reduction, ignore_index
        As in :class:`SquaredEMDLoss`.

    Examples
    --------
    >>> import torch
    >>> loss_fn = EMDLoss(p=1, input_type="probs")
    >>> loss_fn(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([2]))
    tensor(1.3000)
    """

    positions: Tensor | None

    def __init__(
        self,
        *,
        p: float = 1,
        positions: ClassVector | None = None,
        input_type: str = "logits",
        weight: ClassVector | None = None,
        reduction: str = "mean",
        ignore_index: int = -100,
    ) -> None:
        super().__init__(
            weight=weight, input_type=input_type, reduction=reduction, ignore_index=ignore_index
        )
        self.p = V.check_power(p)
        self.register_buffer("positions", _as_buffer(positions, "positions"))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return EF.emd(
            input,
            target,
            p=self.p,
            positions=self.positions,
            input_type=self.input_type,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, {super().extra_repr()}"


class GroundEMDLoss(_EMDLossBase):
    r"""EMD under any ground distance: :func:`emdloss.functional.ground_emd` as a module.

    Exact :math:`\sum_i p_i D_{iy}` for class-index (and one-hot) targets; a log-domain
    Sinkhorn approximation (``method="sinkhorn"``) for soft targets.

    Parameters
    ----------
    ground_distance : Tensor
        :math:`D`, shape :math:`(C, C)`, finite and non-negative (a buffer).
    method : {"exact", "sinkhorn"}
    epsilon, max_iter, tol : float, int, float
        Sinkhorn settings (``epsilon`` relative to :math:`\max D`).
    input_type, weight, reduction, ignore_index
        As in :class:`SquaredEMDLoss`.

    Examples
    --------
    >>> import torch
    >>> from emdloss.ground import ordinal_ground_distance
    >>> loss_fn = GroundEMDLoss(ordinal_ground_distance(3, power=2), input_type="probs")
    >>> loss_fn(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([2]))
    tensor(2.3000)
    """

    ground_distance: Tensor

    def __init__(
        self,
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
    ) -> None:
        super().__init__(
            weight=weight, input_type=input_type, reduction=reduction, ignore_index=ignore_index
        )
        V.check_square_matrix(ground_distance, "ground_distance", None)
        self.method = V.check_choice("method", method, V.METHODS)
        self.epsilon, self.max_iter, self.tol = epsilon, max_iter, tol
        self.register_buffer("ground_distance", _as_buffer(ground_distance, "ground_distance"))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return EF.ground_emd(
            input,
            target,
            self.ground_distance,
            method=self.method,
            epsilon=self.epsilon,
            max_iter=self.max_iter,
            tol=self.tol,
            input_type=self.input_type,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
        )

    def extra_repr(self) -> str:
        return f"method={self.method!r}, {super().extra_repr()}"


class CostMatrixEMDLoss(_EMDLossBase):
    r"""The authors' orderless loss: :func:`emdloss.functional.cost_matrix_emd` as a module.

    .. math::

        \ell(p, y) = \frac{1}{C} \sum_i (p_i - t_i)^2 \, CM_{y i}

    ``cost_matrix`` may have negative entries (learned matrices do). Assign a new matrix with
    :meth:`set_cost_matrix` (e.g. after :meth:`emdloss.ground.LearnedGroundDistance.compute`).

    Parameters
    ----------
    cost_matrix : Tensor
        :math:`CM`, shape :math:`(C, C)`, finite (a buffer).
    input_type, weight, reduction, ignore_index
        As in :class:`SquaredEMDLoss`.

    Examples
    --------
    >>> import torch
    >>> cm = torch.tensor([[1.0, -0.5, 0.5], [-0.5, 1.0, -0.5], [0.5, -0.5, 1.0]])
    >>> loss_fn = CostMatrixEMDLoss(cm, input_type="probs")
    >>> loss_fn(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([2]))
    tensor(0.2400)
    """

    cost_matrix: Tensor

    def __init__(
        self,
        cost_matrix: Tensor,
        *,
        input_type: str = "logits",
        weight: ClassVector | None = None,
        reduction: str = "mean",
        ignore_index: int = -100,
    ) -> None:
        super().__init__(
            weight=weight, input_type=input_type, reduction=reduction, ignore_index=ignore_index
        )
        V.check_square_matrix(cost_matrix, "cost_matrix", None)
        self.register_buffer("cost_matrix", _as_buffer(cost_matrix, "cost_matrix"))

    def set_cost_matrix(self, cost_matrix: Tensor) -> None:
        """Replace the cost matrix in place (same shape; keeps this module's device and dtype).

        Examples
        --------
        >>> import torch
        >>> loss_fn = CostMatrixEMDLoss(torch.ones(3, 3))
        >>> loss_fn.set_cost_matrix(torch.eye(3))
        >>> loss_fn.cost_matrix.diagonal().tolist()
        [1.0, 1.0, 1.0]
        """
        V.check_square_matrix(cost_matrix, "cost_matrix", self.cost_matrix.shape[0])
        with torch.no_grad():
            self.cost_matrix.copy_(cost_matrix)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return EF.cost_matrix_emd(
            input,
            target,
            self.cost_matrix,
            input_type=self.input_type,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
        )
