"""Trivial predictors (emdloss.metrics.trivial_baselines) against scikit-learn's DummyClassifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# emdloss.metrics needs the train extra; dlordinal and scikit-learn are oracles.
pytest.importorskip("torchmetrics")
pytest.importorskip("dlordinal")
pytest.importorskip("sklearn")

from dlordinal import metrics as dlm
from sklearn import metrics as skm
from sklearn.dummy import DummyClassifier

from emdloss.metrics import BASELINES, class_prior, trivial_baselines


def _rps_by_hand(probs: np.ndarray, target: np.ndarray) -> float:
    c = probs.shape[1]
    onehot = np.eye(c)[target]
    diff = np.cumsum(probs, axis=1) - np.cumsum(onehot, axis=1)
    return float(np.mean(np.sum(diff[:, :-1] ** 2, axis=1) / (c - 1)))


@pytest.mark.parametrize("seed", range(6))
def test_trivial_baselines_match_dummy_classifier_and_sklearn_metrics(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = int(rng.integers(3, 7))
    weights = rng.dirichlet(np.ones(c))
    y_train = rng.choice(c, size=int(rng.integers(20, 200)), p=weights)
    y_test = rng.choice(c, size=int(rng.integers(10, 100)), p=weights)
    x_train, x_test = np.zeros((y_train.size, 1)), np.zeros((y_test.size, 1))
    scores = trivial_baselines(torch.from_numpy(y_train), y_test, num_classes=c)
    assert tuple(scores) == BASELINES

    dummy = DummyClassifier(strategy="most_frequent").fit(x_train, y_train)
    expected = dummy.predict(x_test)
    # DummyClassifier's prior covers only the classes seen in training; pad to C.
    prior = np.zeros(c)
    prior[dummy.classes_] = DummyClassifier(strategy="prior").fit(x_train, y_train).class_prior_
    probs = np.tile(prior, (y_test.size, 1))

    # The median class: the constant minimising the MAE over all C constants (brute force).
    train_mae = [skm.mean_absolute_error(y_train, np.full_like(y_train, k)) for k in range(c)]
    median_class = int(np.argmin(train_mae))  # lowest index among ties, as decode_median
    assert scores["median"]["class"] == median_class

    for name, const in (("most_common", expected), ("median", np.full_like(y_test, median_class))):
        got = scores[name]
        assert got["class"] == int(const[0])
        assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_test, const), abs=1e-12)
        assert got["mae"] == pytest.approx(skm.mean_absolute_error(y_test, const), abs=1e-12)
        rmse = np.sqrt(skm.mean_squared_error(y_test, const))
        assert got["rmse"] == pytest.approx(rmse, abs=1e-12)
        one_off = np.mean(np.abs(y_test - const) <= 1)
        assert got["one_off_accuracy"] == pytest.approx(one_off, abs=1e-12)
        qwk = skm.cohen_kappa_score(y_test, const, weights="quadratic", labels=list(range(c)))
        assert got["qwk"] == pytest.approx(0.0 if np.isnan(qwk) else qwk, abs=1e-12)
        if len(np.unique(y_test)) == c:  # dlordinal averages over the classes present
            assert got["amae"] == pytest.approx(dlm.amae(y_test, const), abs=1e-12)
        assert got["rps"] == pytest.approx(_rps_by_hand(probs, y_test), abs=1e-12)
    # The median class is MAE-optimal among constants on the training labels, so on a test
    # split drawn from the same distribution it is at least as good as the mode up to noise;
    # on the training labels themselves it is exactly optimal.
    on_train = trivial_baselines(y_train, y_train, num_classes=c)
    assert on_train["median"]["mae"] == pytest.approx(min(train_mae), abs=1e-12)
    assert on_train["median"]["mae"] <= on_train["most_common"]["mae"] + 1e-12


def test_median_differs_from_mode_on_a_skewed_prior() -> None:
    # 40% in class 0, the rest spread upwards: mode 0, median 1 (CDF 0.4, 0.7, ...).
    y_train = torch.tensor([0] * 4 + [1] * 3 + [2] * 2 + [3])
    scores = trivial_baselines(y_train, y_train, num_classes=4)
    assert scores["most_common"]["class"] == 0
    assert scores["median"]["class"] == 1
    assert scores["most_common"]["mae"] == pytest.approx((3 * 1 + 2 * 2 + 3) / 10)
    assert scores["median"]["mae"] == pytest.approx((4 + 2 + 2) / 10)


def test_positions_add_position_metrics() -> None:
    scores = trivial_baselines([0, 0, 1], [1, 2], num_classes=3, positions=[0.0, 1.0, 5.0])
    assert scores["most_common"]["mae_pos"] == pytest.approx((1 + 5) / 2)


def test_class_prior_and_bad_input_name_the_problem() -> None:
    assert class_prior([1, 1], 3).tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="train_target is empty"):
        trivial_baselines([], [0], num_classes=2)
    with pytest.raises(ValueError, match="target"):
        trivial_baselines([0, 1], [0, 3], num_classes=3)
