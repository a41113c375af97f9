"""emdloss.ldl_baselines on synthetic data, against scikit-learn, and on a Movie subset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torchmetrics")  # emdloss.metrics: the train extra
pytest.importorskip("scipy")
pytest.importorskip("sklearn")

from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsRegressor

from emdloss.errors import UserError
from emdloss.ldl_baselines import (
    DISTRIBUTION_BASELINES,
    KNNDistribution,
    LinearSoftmaxKL,
    MeanDistribution,
    build_baseline,
)
from emdloss.metrics import distribution_metrics


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _smooth(n: int, seed: int, votes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """1-D inputs in [0, 3] (plus two noise features), a target whose mode moves with x."""
    rng = np.random.default_rng(seed)
    x = np.c_[rng.uniform(0, 3, n), rng.normal(size=(n, 2)) * 0.01]
    levels = np.arange(5)
    t = _softmax(-((levels[None, :] - 1.3 * x[:, :1]) ** 2))
    if votes is not None:  # noisy histograms of a few votes
        t = rng.multinomial(votes, t) / votes
    return x, t


def test_mean_distribution_is_the_training_mean() -> None:
    x, t = _smooth(50, 0)
    p = MeanDistribution().fit(x, t).predict(x[:7])
    np.testing.assert_allclose(p, np.tile(t.mean(axis=0), (7, 1)), rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


@pytest.mark.parametrize("k", [1, 4, 15])
def test_knn_matches_sklearn_on_standardised_features(k: int) -> None:
    x, t = _smooth(300, 1, votes=10)
    xq, _ = _smooth(40, 2)
    mean, sd = x.mean(axis=0), x.std(axis=0)
    oracle = KNeighborsRegressor(n_neighbors=k, algorithm="brute").fit((x - mean) / sd, t)
    ours = KNNDistribution(k=k).fit(x, t).predict(xq)
    np.testing.assert_allclose(ours, oracle.predict((xq - mean) / sd), rtol=1e-12, atol=1e-12)


def test_knn_recovers_a_smooth_target_and_chooses_k_above_one_for_noisy_votes() -> None:
    x, t = _smooth(2000, 3, votes=8)
    xv, tv = _smooth(400, 4, votes=8)
    xt, tt = _smooth(400, 5)  # scored against the noise-free target
    model = KNNDistribution().fit(x, t, xv, tv)
    assert model.k_ is not None and model.k_ >= 10  # one neighbour copies one noisy histogram
    assert set(model.val_scores_) == {1, 3, 5, 10, 20, 50, 100}
    assert model.val_scores_[model.k_] == min(model.val_scores_.values())
    knn = distribution_metrics(model.predict(xt), tt)
    mean = distribution_metrics(MeanDistribution().fit(x, t).predict(xt), tt)
    assert knn["chebyshev"] < 0.25 * mean["chebyshev"]
    assert knn["kl"] < 0.1 * mean["kl"]
    assert knn["lcc"] > 0.99
    # a larger-is-better measure chooses by its maximum
    by_cos = KNNDistribution(select="cosine").fit(x, t, xv, tv)
    assert by_cos.val_scores_[by_cos.k_] == max(by_cos.val_scores_.values())


def test_linear_kl_matches_sklearn_soft_label_logistic_regression() -> None:
    # sum_i sum_j t_ij (-log p_ij) + (n l2 / 2) |W|^2 is scikit-learn's multinomial logistic
    # regression on each item repeated per level with weight t_ij, C = 1 / (n l2)
    rng = np.random.default_rng(6)
    n, d, c, l2 = 150, 4, 3, 1e-2
    x = rng.normal(size=(n, d))
    t = _softmax(x @ rng.normal(size=(d, c)) + 0.5 * rng.normal(size=(n, c)))
    ours = LinearSoftmaxKL(l2=l2, tol=1e-12).fit(x, t)
    xs = (x - x.mean(axis=0)) / x.std(axis=0)
    oracle = LogisticRegression(C=1.0 / (n * l2), tol=1e-10, max_iter=10_000).fit(
        np.repeat(xs, c, axis=0), np.tile(np.arange(c), n), sample_weight=t.ravel()
    )
    np.testing.assert_allclose(ours.predict(x), oracle.predict_proba(xs), atol=1e-6)


def test_linear_kl_beats_the_mean_and_chooses_l2_on_validation() -> None:
    rng = np.random.default_rng(7)
    w = rng.normal(size=(40, 5))
    w[5:] = 0.0  # 35 irrelevant features

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, 40))
        return x, rng.multinomial(5, _softmax(x @ w)) / 5  # five votes an item

    (x, t), (xv, tv), (xt, tt) = draw(80), draw(300), draw(1000)
    model = LinearSoftmaxKL(l2s=(10.0, 1.0, 1e-1, 1e-2, 1e-4)).fit(x, t, xv, tv)
    assert list(model.val_scores_) == [10.0, 1.0, 1e-1, 1e-2, 1e-4]  # largest first
    assert model.l2_ == min(model.val_scores_, key=model.val_scores_.__getitem__)
    assert model.l2_ not in (10.0, 1e-4)  # neither extreme on 80 noisy items
    linear = distribution_metrics(model.predict(xt), tt)["kl"]
    mean = distribution_metrics(MeanDistribution().fit(x, t).predict(xt), tt)["kl"]
    assert linear < 0.8 * mean


def test_registry_and_bad_input() -> None:
    assert list(DISTRIBUTION_BASELINES) == ["mean", "aa_knn", "linear_kl"]
    assert isinstance(build_baseline("linear_kl", l2=0.1), LinearSoftmaxKL)
    x, t = _smooth(20, 8)
    bad_t = t.copy()
    bad_t[3] *= 2
    with pytest.raises(UserError, match=r"t_train row 3 sums to 2, expected 1"):
        MeanDistribution().fit(x, bad_t)
    bad_x = x.copy()
    bad_x[2, 1] = np.nan
    with pytest.raises(UserError, match=r"x_train\[2, 1\] = nan is not finite"):
        KNNDistribution(k=3).fit(bad_x, t)
    with pytest.raises(UserError, match="t_train has 19 rows but the features have 20"):
        MeanDistribution().fit(x, t[:-1])
    with pytest.raises(UserError, match="needs x_val and t_val to choose k"):
        KNNDistribution().fit(x, t)
    with pytest.raises(UserError, match="needs x_val and t_val to choose l2"):
        LinearSoftmaxKL().fit(x, t)
    with pytest.raises(UserError, match="k must be a positive integer, got 0"):
        KNNDistribution(k=0)
    with pytest.raises(UserError, match="l2 must be a finite number >= 0, got -1"):
        LinearSoftmaxKL(l2=-1.0)
    with pytest.raises(UserError, match=r"select must be one of .*got 'accuracy'"):
        KNNDistribution(select="accuracy")
    with pytest.raises(UserError, match="unknown distribution baseline 'svm'"):
        build_baseline("svm")
    with pytest.raises(UserError, match="x has 2 features, but the model was fitted on 3"):
        KNNDistribution(k=2).fit(x, t).predict(x[:, :2])
    with pytest.raises(RuntimeError, match="before fit"):
        LinearSoftmaxKL(l2=1.0).predict(x)


def test_movie_subset_mean_baseline_matches_the_reference_chebyshev() -> None:
    root = Path(os.environ.get("EMDLOSS_DATA", Path(__file__).parents[2] / "shared" / "data"))
    path = root / "ldl" / "Movie.mat"
    if not path.is_file():
        pytest.skip(f"{path} not found (research data)")
    from scipy.io import loadmat

    mat = loadmat(path)
    rows = np.random.default_rng(0).permutation(mat["labels"].shape[0])[:1000]
    x, t = mat["features"][rows], mat["labels"][rows]
    t = t / t.sum(axis=1, keepdims=True)
    folds = np.array_split(np.arange(1000), 10)
    cheb = []
    for f, test in enumerate(folds):
        train = np.concatenate([g for i, g in enumerate(folds) if i != f])
        p = MeanDistribution().fit(x[train], t[train]).predict(x[test])
        cheb.append(distribution_metrics(p, t[test])["chebyshev"])
    assert float(np.mean(cheb)) == pytest.approx(0.130, abs=0.01)  # reference.md, 10-fold CV
