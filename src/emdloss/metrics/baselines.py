"""Scores of trivial predictors, to put a model's scores in context.

A model that does not beat "always predict the most common training class" has learned nothing
useful, whatever its accuracy looks like. :func:`trivial_baselines` scores the two constant
predictors that matter for ordinal data on a split, with the same metrics as a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from emdloss.decoding import decode_argmax, decode_median
from emdloss.metrics._checks import _as_tensor, _check_labels, _check_num_classes, _check_range
from emdloss.metrics.stateful import OrdinalMetrics

__all__ = ["BASELINES", "class_prior", "trivial_baselines"]

#: Names of the trivial predictors, in the order :func:`trivial_baselines` returns them.
BASELINES: tuple[str, ...] = ("most_common", "median")


def class_prior(train_target: Any, num_classes: int) -> Tensor:
    r"""Class frequencies of the training labels, :math:`\pi_k = n_k / n` (float64, ``(C,)``).

    Examples
    --------
    >>> class_prior(torch.tensor([0, 2, 2, 1]), 4)
    tensor([0.2500, 0.2500, 0.5000, 0.0000], dtype=torch.float64)
    """
    num_classes = _check_num_classes(num_classes)
    labels = _as_tensor(train_target, "train_target")
    if labels.numel() == 0:
        raise ValueError("train_target is empty: the trivial predictors need training labels")
    labels = _check_labels(labels, "train_target")
    _check_range(labels, "train_target", num_classes)
    counts = torch.bincount(labels.reshape(-1).long().cpu(), minlength=num_classes)
    return counts.to(torch.float64) / counts.sum()


def trivial_baselines(
    train_target: Any,
    target: Any,
    *,
    num_classes: int,
    positions: Sequence[float] | Tensor | None = None,
) -> dict[str, dict[str, float]]:
    r"""Score the constant predictors fitted on the training labels on another split.

    Both predict, for every sample, from the training class frequencies :math:`\pi` alone:

    - ``"most_common"``: the most common training class :math:`\arg\max_k \pi_k` (ties to the
      lowest index; scikit-learn's ``DummyClassifier(strategy="most_frequent")``), the best
      constant for accuracy;
    - ``"median"``: the training median class :math:`\min\{k : \sum_{i \le k} \pi_i \ge 1/2\}`,
      the best constant for the MAE (for any increasing class positions).

    Their scores are those of a model whose predicted distribution is :math:`\pi` for every
    sample, decoded with the ``argmax`` and ``median`` rules: ``rps`` is therefore the ranked
    probability score of the class prior (the same for both), and the label metrics are those of
    the constant class. ``qwk`` and ``spearman`` of a constant prediction are 0.

    Parameters
    ----------
    train_target : Tensor or array-like of int, shape (n_train,)
        Training class indices (the only data the predictors see).
    target : Tensor or array-like of int, shape (n,)
        True class indices of the split to score (e.g. the test split).
    num_classes : int
        ``C``.
    positions : sequence of float, optional
        Class positions; adds ``mae_pos`` and ``rmse_pos`` as for :class:`OrdinalMetrics`.

    Returns
    -------
    dict
        ``{"most_common": {...}, "median": {...}}``, each with the keys of
        :class:`OrdinalMetrics` (``accuracy``, ``one_off_accuracy``, ``mae``, ``rmse``, ``qwk``,
        ``rps``, ``amae``, ``spearman``) as floats, plus ``"class"``: the constant class index.

    Examples
    --------
    >>> train = torch.tensor([0, 1, 1, 2, 2, 2, 2])  # most common 2, median 2
    >>> test = torch.tensor([0, 1, 2, 2])
    >>> scores = trivial_baselines(train, test, num_classes=3)
    >>> scores["most_common"]["class"], scores["most_common"]["accuracy"], scores["median"]["mae"]
    (2, 0.5, 0.75)
    """
    prior = class_prior(train_target, num_classes)
    y = _as_tensor(target, "target")
    if y.numel() == 0:
        raise ValueError("target is empty: nothing to score")
    y = _check_labels(y, "target").reshape(-1).long().cpu()
    _check_range(y, "target", num_classes)
    probs = prior.unsqueeze(0).expand(y.numel(), num_classes)
    rules = {"most_common": decode_argmax, "median": decode_median}
    out: dict[str, dict[str, float]] = {}
    for name in BASELINES:
        preds = rules[name](probs)
        metric = OrdinalMetrics(num_classes, positions=positions)
        metric.update(probs, y, preds=preds)
        scores = {key: float(value) for key, value in metric.compute().items()}
        out[name] = {"class": int(preds[0]), **scores}
    return out
