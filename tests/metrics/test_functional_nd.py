"""Metrics take ignore_index and (N, C, d1, ...) inputs like the losses (issue 9), checked
against scikit-learn on the flattened valid elements.

Named for emdloss.metrics.functional; also covers stateful and confmat.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

# emdloss.metrics' stateful metrics: the train extra.
pytest.importorskip("torchmetrics")

from emdloss import functional as EF
from emdloss.metrics import OrdinalMetrics
from emdloss.metrics import functional as M
from emdloss.metrics.confmat import confusion_matrix

sklearn_metrics = pytest.importorskip("sklearn.metrics")

C = 5


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.randn(4, C, 3, 2, generator=g, dtype=torch.float64).softmax(1)
    target = torch.randint(0, C, (4, 3, 2), generator=g)
    target[0, 1, 1] = target[2, 0, 0] = target[3, 2, 1] = -100
    return probs, probs.argmax(1), target


def _valid(preds: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    keep = target != -100
    return preds[keep].numpy(), target[keep].numpy()


def test_label_metrics_against_sklearn() -> None:
    _, preds, target = _data()
    p, t = _valid(preds, target)
    assert len(t) == 24 - 3
    cm = confusion_matrix(preds, target, num_classes=C)
    np.testing.assert_array_equal(
        cm.numpy(), sklearn_metrics.confusion_matrix(t, p, labels=range(C))
    )
    assert float(M.accuracy(preds, target)) == pytest.approx(sklearn_metrics.accuracy_score(t, p))
    assert float(M.mean_absolute_error(preds, target, num_classes=C)) == pytest.approx(
        sklearn_metrics.mean_absolute_error(t, p)
    )
    assert float(M.root_mean_squared_error(preds, target, num_classes=C)) == pytest.approx(
        np.sqrt(sklearn_metrics.mean_squared_error(t, p))
    )
    assert float(M.quadratic_weighted_kappa(preds, target, num_classes=C)) == pytest.approx(
        sklearn_metrics.cohen_kappa_score(t, p, weights="quadratic", labels=list(range(C)))
    )


def test_rps_nd_equals_the_loss_and_a_hand_formula() -> None:
    probs, _, target = _data(1)
    got = M.ranked_probability_score(probs, target, reduction="none")
    keep = target != -100
    flat = probs.movedim(1, -1)[keep]  # (M, C)
    y = target[keep]
    t_cdf = (torch.arange(C)[None, :] >= y[:, None]).double()
    expected = ((flat.cumsum(1) - t_cdf)[:, :-1] ** 2).sum(1) / (C - 1)
    torch.testing.assert_close(got, expected)
    loss = EF.squared_emd(probs, target, input_type="probs", normalization="rps")
    torch.testing.assert_close(M.ranked_probability_score(probs, target), loss)


def test_stateful_metrics_nd_with_ignore_index() -> None:
    probs, preds, target = _data(2)
    m = OrdinalMetrics(C)
    m.update(probs[:2], target[:2])
    m.update(probs[2:], target[2:])
    out = m.compute()
    p, t = _valid(preds, target)
    assert float(out["accuracy"]) == pytest.approx(sklearn_metrics.accuracy_score(t, p))
    assert float(out["mae"]) == pytest.approx(sklearn_metrics.mean_absolute_error(t, p))
    assert float(out["rps"]) == pytest.approx(float(M.ranked_probability_score(probs, target)))


def test_ignore_index_none_keeps_every_element() -> None:
    _, preds, target = _data(3)
    with pytest.raises(ValueError, match=r"target\[\d+\] = -100 is negative"):
        M.accuracy(preds, target, ignore_index=None)
    with pytest.raises(ValueError, match="same shape"):
        M.accuracy(preds, target[:, :2])
