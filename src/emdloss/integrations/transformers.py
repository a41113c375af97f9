r"""Ordinal losses and metrics for the Hugging Face ``Trainer``.

``Trainer`` has no ordinal ``problem_type``; these two functions add one without subclassing it::

    loss_func = ordinal_loss_func("emd2", num_classes=5)
    trainer = Trainer(
        model=model,  # any model whose output has ``logits`` (N, C)
        args=TrainingArguments(..., gradient_accumulation_steps=4),
        compute_loss_func=loss_func,
        compute_metrics=ordinal_compute_metrics(num_classes=5),
        callbacks=[loss_func.callback()],  # only needed by the recipe's epoch schedule
    )

**Gradient accumulation.** ``Trainer`` calls ``compute_loss_func(outputs, labels,
num_items_in_batch=n)`` where ``n`` counts the labels other than ``-100`` over *all* the
micro-batches of one optimiser step, and then does not rescale what it gets back. The loss
returned for a micro-batch :math:`B_j` is therefore the sum of its per-example losses divided by
``n``,

.. math:: L_j = \frac{1}{n} \sum_{i \in B_j} \ell_i, \qquad \sum_j L_j = \frac1n \sum_{i} \ell_i,

so the accumulated gradient equals the gradient of the mean over the whole batch, as without
accumulation (transformers issue #36331 is what a plain per-micro-batch mean gets wrong). Without
``num_items_in_batch`` the mean over the micro-batch is returned. The identity holds for every
loss that is a mean over examples (``ce``, ``emd2``, ``w1``, ``ground``, ``l2``, the recipe,
``coral``, ``sord``, ``triangular``, ``dlordinal_emd``); ``corn`` averages over conditional
subsets, so for it the accumulated loss is close to, not equal to, the full-batch one.

Labels are class indices ``(N,)``; ``-100`` marks examples to ignore (as in ``Trainer``).
``transformers`` is imported only by :meth:`OrdinalLossFunc.callback`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["METRIC_NAMES", "OrdinalLossFunc", "ordinal_compute_metrics", "ordinal_loss_func"]

#: Keys of the dictionary :func:`ordinal_compute_metrics` returns.
METRIC_NAMES: tuple[str, ...] = ("accuracy", "mae", "rmse", "qwk", "one_off_accuracy")

IGNORE_INDEX = -100


def _logits(outputs: Any) -> Tensor:
    """The ``logits`` of a model output (a ``ModelOutput``, a dict, a tuple or a tensor)."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        if "logits" not in outputs:
            raise ValueError(
                f"the model output has no 'logits' (keys: {sorted(outputs)}); the ordinal loss "
                "needs class scores (N, C)"
            )
        logits: Tensor = outputs["logits"]
        return logits
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], Tensor):
        first: Tensor = outputs[0]
        return first
    raise TypeError(f"cannot find logits in a model output of type {type(outputs).__name__}")


def _items_in_batch(num_items_in_batch: int | Tensor, count: int) -> float:
    """``num_items_in_batch`` as a number, checked against this micro-batch's ``count`` labels.

    It counts the non-ignored labels of every micro-batch of the optimiser step, so it is at
    least ``count``; 0, a negative or a smaller count would make the loss inf or negative
    (HF's own losses divide silently), so it is refused with a ValueError naming the value.
    """
    if isinstance(num_items_in_batch, Tensor):
        if num_items_in_batch.numel() != 1:
            raise ValueError(
                f"num_items_in_batch must be a single count, got a tensor of shape "
                f"{tuple(num_items_in_batch.shape)}"
            )
        value = num_items_in_batch.item()
    else:
        value = num_items_in_batch
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"num_items_in_batch must be a count, got {type(value).__name__}")
    if not (value >= count and value < float("inf")):
        raise ValueError(
            f"num_items_in_batch must count the labels other than -100 over the whole "
            f"accumulated batch, at least the {count} of this micro-batch, got {value!r}"
        )
    return float(value)


class OrdinalLossFunc:
    """A ``compute_loss_func`` for ``Trainer``: a registry loss, normalised for accumulation.

    Build it with :func:`ordinal_loss_func`.

    Parameters
    ----------
    criterion : emdloss.training.TrainingLoss
        The loss (its ``num_outputs`` must match the model's logits).
    features : callable, optional
        ``outputs -> (N, F)`` non-negative features, for the learned ground distance of
        ``xemd1``/``xemd2``.

    Attributes
    ----------
    criterion : emdloss.training.TrainingLoss
    """

    def __init__(
        self,
        criterion: Any,
        features: Callable[[Any], Tensor] | None = None,
    ) -> None:
        self.criterion = criterion
        self.features = features
        self._callback_attached = False
        recipe = getattr(criterion, "recipe", None)
        self._scheduled = recipe is not None and (
            recipe.warmup_epochs > 0 or recipe.ground is not None
        )

    @property
    def num_classes(self) -> int:
        """Number of ordered classes."""
        return int(self.criterion.num_classes)

    def __call__(
        self,
        outputs: Any,
        labels: Tensor,
        num_items_in_batch: int | Tensor | None = None,
    ) -> Tensor:
        """The loss of one micro-batch (see the module docstring for the normalisation).

        Parameters
        ----------
        outputs : ModelOutput, dict, tuple or Tensor
            The model output; its ``logits`` are ``(N, num_outputs)``.
        labels : Tensor
            Class indices ``(N,)``; ``-100`` entries are ignored.
        num_items_in_batch : int or Tensor, optional
            Labels other than ``-100`` in the whole accumulated batch.

        Returns
        -------
        Tensor
            A scalar.
        """
        if self._scheduled and not self._callback_attached:
            self._callback_attached = True  # warn once
            warnings.warn(
                f"loss {self.criterion.name!r} has an epoch schedule (cross-entropy warm-up or "
                "a learned ground distance): pass callbacks=[loss_func.callback()] to Trainer, "
                "or it never leaves epoch 0",
                UserWarning,
                stacklevel=2,
            )
        if labels is None:
            raise ValueError("the ordinal loss needs labels; the batch has no 'labels'")
        logits = _logits(outputs)
        labels = labels.reshape(-1)
        if labels.is_floating_point() or logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected logits (N, C) and integer class indices (N,), got logits of shape "
                f"{tuple(logits.shape)} and labels of shape {tuple(labels.shape)} "
                f"({labels.dtype})"
            )
        if logits.shape[1] != self.criterion.num_outputs:
            raise ValueError(
                f"loss {self.criterion.name!r} needs {self.criterion.num_outputs} outputs per "
                f"example, the model gives {logits.shape[1]} (set num_labels accordingly)"
            )
        valid = labels != IGNORE_INDEX
        bad = labels[valid & ((labels < 0) | (labels >= self.num_classes))]
        if bad.numel():
            raise ValueError(
                f"labels must be class indices in [0, {self.num_classes - 1}] or -100, got "
                f"{int(bad[0])}"
            )
        count = int(valid.sum())
        if count == 0:
            return logits.sum() * 0.0  # keeps the graph; nothing to learn from this batch
        feats = None
        # Only training steps feed the learned matrix: Trainer also calls this under no_grad
        # to report the evaluation loss.
        if self.features is not None and self.criterion.needs_features and torch.is_grad_enabled():
            feats = self.features(outputs)[valid]
        # The registry losses are means over examples: mean * count is the sum.
        mean: Tensor = self.criterion(logits[valid], labels[valid], features=feats)
        if num_items_in_batch is None:
            return mean
        total = _items_in_batch(num_items_in_batch, count)
        return mean * count / total

    def step_epoch(self) -> None:
        """End of an epoch: advance the recipe's schedule (warm-up, learned matrix)."""
        self.criterion.step_epoch()

    def callback(self) -> Any:
        """A ``transformers.TrainerCallback`` that calls :meth:`step_epoch` after every epoch.

        Returns
        -------
        transformers.TrainerCallback
        """
        from transformers import TrainerCallback

        loss_func = self

        class _EpochSchedule(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                loss_func._callback_attached = True

            def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                loss_func.step_epoch()

        return _EpochSchedule()

    def probabilities(self, logits: Tensor) -> Tensor:
        """Class probabilities ``(N, C)`` from the model's logits (softmax for most losses)."""
        probs: Tensor = self.criterion.probabilities(logits)
        return probs


def ordinal_loss_func(
    loss: str = "emd2",
    num_classes: int | None = None,
    *,
    features: Callable[[Any], Tensor] | None = None,
    **options: Any,
) -> OrdinalLossFunc:
    r"""A ``Trainer(compute_loss_func=...)`` for ordered classes.

    Parameters
    ----------
    loss : str, default="emd2"
        A name of :data:`emdloss.training.LOSS_NAMES`: ``"emd2"`` (squared EMD,
        :math:`\frac1C\sum_k (P_k - T_k)^2` on the CDFs), the recipe ``"xemd1"``/``"xemd2"``,
        ``"w1"``, ``"ground"``, ``"ce"``, ``"l2"`` or a peer loss.
    num_classes : int
        Number of ordered classes :math:`C` (the model's ``num_labels``, except ``l2``: 1, and
        ``coral``/``corn``: ``C - 1``).
    features : callable, optional
        ``outputs -> (N, F)`` non-negative penultimate features, required by ``xemd1`` and
        ``xemd2`` (the learned ground distance is built from per-class feature centroids), e.g.
        ``lambda out: out.hidden_states[-1][:, 0].relu()`` with ``output_hidden_states=True``.
    **options
        Keyword arguments of :func:`emdloss.training.losses.build_loss` (``positions``,
        ``warmup_epochs``, ``ground_distance``, ...).

    Returns
    -------
    OrdinalLossFunc
        Call it as ``loss_func(outputs, labels, num_items_in_batch=None)``.

    Examples
    --------
    >>> import torch
    >>> loss_func = ordinal_loss_func("emd2", num_classes=3)
    >>> logits, labels = torch.zeros(4, 3), torch.tensor([0, 1, 2, -100])
    >>> full = loss_func({"logits": logits}, labels)  # mean over the 3 labelled examples
    >>> half = loss_func({"logits": logits[:2]}, labels[:2], num_items_in_batch=3)
    >>> rest = loss_func({"logits": logits[2:]}, labels[2:], num_items_in_batch=3)
    >>> torch.allclose(half + rest, full)
    True
    """
    from emdloss.training.losses import build_loss

    if num_classes is None:
        raise ValueError("ordinal_loss_func needs num_classes, the number of ordered classes")
    criterion = build_loss(loss, num_classes, **options)
    if getattr(criterion, "extra_pass", False):
        raise ValueError(
            "feature_pass='extra' needs the training loader, which compute_loss_func does not "
            "see; give features=callable(outputs) -> (N, F) instead"
        )
    if criterion.needs_features and features is None:
        raise ValueError(
            f"loss {loss!r} learns its ground distance from penultimate features, which Trainer "
            "does not pass to compute_loss_func: give features=callable(outputs) -> (N, F) "
            "(e.g. with output_hidden_states=True), or use 'emd2' or 'ground'"
        )
    return OrdinalLossFunc(criterion, features)


def ordinal_compute_metrics(
    num_classes: int,
    *,
    loss: str | OrdinalLossFunc = "ce",
    rule: str = "median",
) -> Callable[[Any], dict[str, float]]:
    r"""A ``Trainer(compute_metrics=...)`` with the ordinal metrics.

    From an ``EvalPrediction`` (``predictions``: logits ``(N, num_outputs)``, ``label_ids``:
    ``(N,)``, ``-100`` ignored) it computes class probabilities, decodes them with ``rule``
    (:func:`emdloss.decode`) and returns :data:`METRIC_NAMES`: accuracy, MAE and RMSE in class
    steps, quadratic weighted kappa and one-off accuracy
    (:mod:`emdloss.metrics.functional`).

    Parameters
    ----------
    num_classes : int
        Number of ordered classes.
    loss : str or OrdinalLossFunc, default="ce"
        How logits become probabilities: a registry name whose outputs are softmax scores
        (``"ce"``, ``"emd2"``, ...), ``"l2"``/``"coral"``/``"corn"``, or the loss function
        itself.
    rule : {"median", "argmax", "expected"}, default="median"
        Prediction rule (``"median"`` minimises the expected absolute error).

    Returns
    -------
    callable
        ``EvalPrediction -> dict[str, float]``.

    Examples
    --------
    >>> import numpy as np
    >>> metrics = ordinal_compute_metrics(3)
    >>> logits = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.4, 0.2, 0.4]]))
    >>> out = metrics((logits, np.array([0, 1, 2])))
    >>> out["accuracy"], out["mae"], out["one_off_accuracy"]
    (0.3333333333333333, 0.6666666666666666, 1.0)
    """
    from emdloss.decoding import decode
    from emdloss.vocabulary import RULES

    if rule not in RULES or rule == "bayes":
        raise ValueError(f"rule must be 'median', 'argmax' or 'expected', got {rule!r}")
    to_probs: Callable[[Tensor], Tensor]
    if isinstance(loss, OrdinalLossFunc):
        to_probs = loss.probabilities
    else:
        from emdloss.training.losses import build_loss

        if loss in ("xemd1", "xemd2", "sord"):
            loss = "ce"  # softmax outputs; the options of those losses do not matter here
        to_probs = build_loss(loss, num_classes).probabilities

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        from emdloss.metrics import functional as M

        predictions, labels = eval_pred[0], eval_pred[1]
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]  # logits first, then e.g. hidden states
        logits = torch.as_tensor(np.asarray(predictions), dtype=torch.float64)
        target = torch.as_tensor(np.asarray(labels)).reshape(-1).long()
        keep = target != IGNORE_INDEX
        with torch.no_grad():
            preds = decode(to_probs(logits[keep]), rule)
        target = target[keep]
        kw = {"num_classes": num_classes}
        return {
            "accuracy": float(M.accuracy(preds, target, **kw)),
            "mae": float(M.mean_absolute_error(preds, target, num_classes=num_classes)),
            "rmse": float(M.root_mean_squared_error(preds, target, num_classes=num_classes)),
            "qwk": float(M.quadratic_weighted_kappa(preds, target, **kw)),
            "one_off_accuracy": float(M.one_off_accuracy(preds, target, **kw)),
        }

    return compute_metrics
