"""Stateful (torchmetrics) ordinal metrics that synchronise under DDP.

Every label metric is a function of the confusion matrix, so the only states are a ``(C, C)``
count matrix and, for the ranked probability score, a running sum and count: all reduced by
summation across processes, which gives exactly the values of one process on all the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from emdloss import _validation as V
from emdloss.metrics import functional as F
from emdloss.metrics._checks import (
    _as_tensor,
    _check_num_classes,
    _check_pair,
    _flat_valid,
    check_positions,
)
from emdloss.metrics.confmat import (
    _confmat,
    accuracy_from_confmat,
    average_mae_from_confmat,
    mean_absolute_error_from_confmat,
    one_off_accuracy_from_confmat,
    quadratic_weighted_kappa_from_confmat,
    root_mean_squared_error_from_confmat,
    spearman_from_confmat,
)
from emdloss.vocabulary import METRICS

__all__ = [
    "AverageMAE",
    "OneOffAccuracy",
    "OrdinalMetrics",
    "QuadraticWeightedKappa",
    "RankedProbabilityScore",
]

#: The keys of :meth:`OrdinalMetrics.compute` (:data:`emdloss.vocabulary.METRICS`).
ORDINAL_METRIC_KEYS: tuple[str, ...] = tuple(METRICS)


def _decode(scores: Any, num_classes: int) -> Tensor:
    """Class indices from indices (N, ...) or from scores/probabilities (N, C, ...) by argmax."""
    x = _as_tensor(scores, "preds")
    if x.ndim >= 2 and x.is_floating_point():
        if x.shape[1] != num_classes:
            raise ValueError(
                f"probabilities have {x.shape[1]} columns but num_classes is {num_classes}"
            )
        return x.argmax(dim=1)
    return x


class _ConfusionMatrixMetric(Metric):
    """Base class: accumulates a ``(C, C)`` confusion matrix (true x predicted), summed under DDP."""

    is_differentiable = False
    full_state_update = False
    confmat: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        positions: Sequence[float] | Tensor | None = None,
        validate_args: bool = True,
        ignore_index: int | None = -100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = None if ignore_index is None else V.check_ignore_index(ignore_index)
        self.positions: list[float] | None = (
            None if positions is None else check_positions(positions, num_classes).tolist()
        )
        self.validate_args = validate_args
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def _add_labels(self, preds: Tensor, target: Any) -> None:
        # (N, d1, ...) flattened and elements whose target is ignore_index left out, as the losses
        preds, t = _flat_valid(preds, _as_tensor(target, "target"), self.ignore_index)
        if self.validate_args:
            preds, t, _, _ = _check_pair(preds, t, self.num_classes)
        c = self.num_classes
        self.confmat += _confmat(
            preds.long().to(self.confmat.device), t.long().to(self.confmat.device), c
        )

    def update(self, preds: Any, target: Any) -> None:
        """Add a batch: ``preds`` class indices ``(N, ...)`` or scores ``(N, C, ...)`` (argmax),
        ``target`` class indices ``(N, ...)``; targets equal to ``ignore_index`` are skipped."""
        self._add_labels(_decode(preds, self.num_classes), target)


class OneOffAccuracy(_ConfusionMatrixMetric):
    """Share of predictions at most one class from the truth (see
    :func:`emdloss.metrics.functional.one_off_accuracy`).

    Examples
    --------
    >>> m = OneOffAccuracy(num_classes=5)
    >>> m.update(torch.tensor([0, 2]), torch.tensor([0, 0]))
    >>> m.update(torch.tensor([4]), torch.tensor([3]))
    >>> m.compute()
    tensor(0.6667, dtype=torch.float64)
    """

    higher_is_better = True

    def compute(self) -> Tensor:
        """1-off accuracy of all the samples seen."""
        return one_off_accuracy_from_confmat(self.confmat)


class AverageMAE(_ConfusionMatrixMetric):
    """Macro-averaged MAE over the true classes seen (see
    :func:`emdloss.metrics.functional.average_mae`); a class absent from every batch is left out.

    Examples
    --------
    >>> m = AverageMAE(num_classes=3)
    >>> m.update(torch.tensor([1, 1]), torch.tensor([0, 0]))
    >>> m.update(torch.tensor([0]), torch.tensor([2]))
    >>> m.compute()
    tensor(1.5000, dtype=torch.float64)
    """

    higher_is_better = False

    def compute(self) -> Tensor:
        """AMAE of all the samples seen (in position units when ``positions`` were given)."""
        return average_mae_from_confmat(self.confmat, self.positions)


class QuadraticWeightedKappa(_ConfusionMatrixMetric):
    """Cohen's kappa with quadratic weights (see
    :func:`emdloss.metrics.functional.quadratic_weighted_kappa`).

    Examples
    --------
    >>> m = QuadraticWeightedKappa(num_classes=3)
    >>> m.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    >>> m.compute()
    tensor(0.8000, dtype=torch.float64)
    """

    higher_is_better = True

    def compute(self) -> Tensor:
        """QWK of all the samples seen."""
        return quadratic_weighted_kappa_from_confmat(self.confmat)


class RankedProbabilityScore(Metric):
    """Mean ranked probability score over all samples (see
    :func:`emdloss.metrics.functional.ranked_probability_score`): a running sum and count.

    Examples
    --------
    >>> m = RankedProbabilityScore()
    >>> m.update(torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([2]))
    >>> m.update(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([2]))
    >>> m.compute()
    tensor(0.3125, dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    rps_sum: Tensor
    rps_count: Tensor

    def __init__(self, *, ignore_index: int | None = -100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ignore_index = None if ignore_index is None else V.check_ignore_index(ignore_index)
        self.add_state("rps_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rps_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: Any, target: Any) -> None:
        """Add a batch: probabilities ``(N, C)`` and class indices ``(N,)`` or distributions."""
        per_sample = F._rps_per_sample(probs, target, self.ignore_index)
        self.rps_sum += per_sample.sum().to(self.rps_sum.device)
        self.rps_count += per_sample.numel()

    def compute(self) -> Tensor:
        """Mean RPS of all the samples seen."""
        if int(self.rps_count) == 0:
            raise RuntimeError("RankedProbabilityScore.compute() called before any sample")
        return self.rps_sum / self.rps_count


class OrdinalMetrics(_ConfusionMatrixMetric):
    r"""All the ordinal metrics of a run in one DDP-synchronised metric.

    ``compute()`` returns a dict with the keys ``accuracy, one_off_accuracy, mae, rmse, qwk, rps,
    amae, spearman`` and, when ``positions`` are given, ``mae_pos, rmse_pos`` (MAE and RMSE in
    position units). Each value is a 0-dim float64 tensor equal to the functional metric of
    :mod:`emdloss.metrics.functional` on all the samples seen, across processes.

    Parameters
    ----------
    num_classes : int
        ``C``.
    positions : sequence of float, optional
        Strictly increasing position of each class (adds ``mae_pos`` and ``rmse_pos``).
    validate_args : bool
        Check shapes, label ranges and that probability rows sum to 1 (costs a device sync).
    ignore_index : int or None
        Elements whose target equals it are left out of every metric (default -100, as the
        losses); inputs may be ``(N, C, d1, ...)`` / ``(N, d1, ...)``, scored element-wise.
    **kwargs
        Passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).

    Notes
    -----
    ``rps`` needs probabilities. If only class indices were given to :meth:`update`, ``rps`` is
    NaN; mixing updates with and without probabilities raises in :meth:`compute`.

    Examples
    --------
    >>> m = OrdinalMetrics(num_classes=3)
    >>> m.update(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]), torch.tensor([0, 1]))
    >>> {k: round(float(v), 4) for k, v in m.compute().items()}
    {'accuracy': 0.5, 'one_off_accuracy': 1.0, 'mae': 0.5, 'rmse': 0.7071, 'qwk': 0.6667, 'rps': 0.1175, 'amae': 0.5, 'spearman': 1.0}
    """

    higher_is_better = None
    rps_sum: Tensor
    rps_count: Tensor

    def __init__(
        self,
        num_classes: int,
        positions: Sequence[float] | Tensor | None = None,
        *,
        validate_args: bool = True,
        ignore_index: int | None = -100,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_classes,
            positions=positions,
            validate_args=validate_args,
            ignore_index=ignore_index,
            **kwargs,
        )
        self.add_state("rps_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rps_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The keys of :meth:`compute`'s dict, in order."""
        extra = () if self.positions is None else ("mae_pos", "rmse_pos")
        return ORDINAL_METRIC_KEYS + extra

    def update(self, probs_or_preds: Any, target: Any, preds: Any = None) -> None:  # type: ignore[override]
        """Add a batch.

        Parameters
        ----------
        probs_or_preds : Tensor
            Probabilities ``(N, C)`` (rows summing to 1; used for ``rps`` and decoded by argmax
            unless ``preds`` is given) or predicted class indices ``(N,)`` (no ``rps``).
        target : Tensor
            True class indices ``(N,)``.
        preds : Tensor, optional
            Predicted class indices ``(N,)`` from another decoding rule (e.g. the median of the
            predicted distribution) to score instead of the argmax.
        """
        x = _as_tensor(probs_or_preds, "probs_or_preds")
        if x.ndim >= 2 and x.is_floating_point():
            if x.shape[1] != self.num_classes:
                raise ValueError(
                    f"probs has {x.shape[1]} columns but num_classes is {self.num_classes}"
                )
            # validation of probs/target happens inside (always: a wrong RPS must not pass)
            per_sample = F._rps_per_sample(x, target, self.ignore_index)
            self.rps_sum += per_sample.sum().to(self.rps_sum.device)
            self.rps_count += per_sample.numel()
            decoded = x.argmax(dim=1) if preds is None else _as_tensor(preds, "preds")
        else:
            if preds is not None:
                raise ValueError(
                    "preds was given twice: pass probabilities (N, C) as the first argument "
                    "when giving preds"
                )
            decoded = x
        self._add_labels(decoded, target)

    def compute(self) -> dict[str, Tensor]:
        """The metrics of all the samples seen, as a dict of 0-dim float64 tensors."""
        cm = self.confmat
        total = int(cm.sum())
        if total == 0:
            raise RuntimeError("OrdinalMetrics.compute() called before any sample was added")
        count = int(self.rps_count)
        if count == 0:
            rps = torch.full((), float("nan"), dtype=torch.float64, device=cm.device)
        elif count != total:
            raise RuntimeError(
                f"rps covers {count} of {total} samples: some updates gave probabilities and "
                "some only class indices"
            )
        else:
            rps = self.rps_sum / count
        out = {
            "accuracy": accuracy_from_confmat(cm),
            "one_off_accuracy": one_off_accuracy_from_confmat(cm),
            "mae": mean_absolute_error_from_confmat(cm),
            "rmse": root_mean_squared_error_from_confmat(cm),
            "qwk": quadratic_weighted_kappa_from_confmat(cm),
            "rps": rps,
            "amae": average_mae_from_confmat(cm),
            "spearman": spearman_from_confmat(cm),
        }
        if self.positions is not None:
            out["mae_pos"] = mean_absolute_error_from_confmat(cm, self.positions)
            out["rmse_pos"] = root_mean_squared_error_from_confmat(cm, self.positions)
        return out
