"""emdloss.sklearn.EMDClassifier: the scikit-learn contract, ordinal behaviour, bad input."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.metrics import cohen_kappa_score, mean_absolute_error
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from emdloss.decoding import decode
from emdloss.sklearn import EMDClassifier, ordinal_score

# Fast settings: tiny network, few epochs (the defaults train longer).
FAST = {"hidden_layer_sizes": (16,), "learning_rate": 0.05, "max_iter": 30}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny networks: a second intra-op thread only adds spin-wait on a busy 2-core machine
    # (check_estimator took 140 s instead of 11 s here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ordinal_data(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four ordered classes cut from a noisy linear score of 3 features."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    score = X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=n)
    return X, np.digitize(score, [-0.8, 0.0, 0.8])


@pytest.mark.filterwarnings("ignore:Skipping check check_array_api_input")
def test_check_estimator_passes() -> None:
    # The median rule included (fast settings): every check of scikit-learn's suite.
    check_estimator(EMDClassifier(random_state=0, prediction_rule="median", **FAST))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping check check_array_api_input")
def test_check_estimator_passes_on_the_defaults() -> None:
    """``check_estimator(EMDClassifier())`` with every default (issue 21): the median default
    failed check_classifiers_train (predict != argmax of predict_proba on 3 of 300 points)."""
    assert EMDClassifier().prediction_rule == "argmax"
    check_estimator(EMDClassifier())


def test_fit_predict_learns_an_ordinal_signal() -> None:
    X, y = ordinal_data()
    clf = EMDClassifier(random_state=0, **FAST).fit(X[:160], y[:160])
    mae = mean_absolute_error(y[160:], clf.predict(X[160:]))
    chance = mean_absolute_error(y[160:], np.full(80, np.bincount(y[:160]).argmax()))
    assert mae < 0.5 * chance, (mae, chance)
    assert clf.score(X[160:], y[160:]) == pytest.approx(-mae)
    assert clf.n_features_in_ == 3 and clf.n_iter_ == 30 and len(clf.loss_curve_) == 30
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_predict_applies_the_rule_to_predict_proba() -> None:
    X, y = ordinal_data()
    for rule in ("median", "argmax", "expected"):
        clf = EMDClassifier(prediction_rule=rule, random_state=0, **FAST).fit(X, y)
        probs = clf.predict_proba(X)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
        expected = decode(torch.from_numpy(probs), rule).numpy()
        np.testing.assert_array_equal(clf.predict(X), clf.classes_[expected])


def test_median_rule_by_hand() -> None:
    # p = (0.4, 0.15, 0.45): argmax says class 2, the median (first CDF >= 1/2) class 1.
    clf = EMDClassifier(random_state=0, prediction_rule="median", **FAST).fit(*ordinal_data())
    probs = np.array([[0.4, 0.15, 0.45, 0.0]])
    assert clf._decode(probs).tolist() == [1]
    clf.set_params(prediction_rule="argmax")  # the default
    assert clf._decode(probs).tolist() == [2]


def test_string_classes_keep_the_given_order() -> None:
    X, y = ordinal_data()
    names = np.array(["low", "mid", "high", "top"])[y]
    order = ["low", "mid", "high", "top"]
    clf = EMDClassifier(classes=order, random_state=0, **FAST).fit(X, names)
    assert clf.classes_.tolist() == order  # not sorted: "high" < "low" < "mid" < "top"
    codes = EMDClassifier(random_state=0, **FAST).fit(X, y)
    # Same model as on the integer codes: the labels only name the positions.
    np.testing.assert_allclose(clf.predict_proba(X), codes.predict_proba(X))
    np.testing.assert_array_equal(clf.predict(X), np.array(order)[codes.predict(X)])
    # Without classes the order would be alphabetical, a different (wrong) ordering.
    assert EMDClassifier(**FAST).fit(X, names).classes_.tolist() == sorted(order)


def test_classes_may_name_unseen_classes() -> None:
    X, y = ordinal_data()
    keep = y < 3
    clf = EMDClassifier(classes=[0, 1, 2, 3, 4], random_state=0, **FAST).fit(X[keep], y[keep])
    assert clf.predict_proba(X).shape == (len(X), 5)


def test_same_seed_same_model_and_global_rng_untouched() -> None:
    X, y = ordinal_data()
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = EMDClassifier(random_state=7, dropout=0.2, **FAST).fit(X, y)
    after = torch.rand(3)
    b = EMDClassifier(random_state=7, dropout=0.2, **FAST).fit(X, y)
    c = EMDClassifier(random_state=8, dropout=0.2, **FAST).fit(X, y)
    torch.testing.assert_close(before, after)  # fit neither used nor moved the global stream
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


@pytest.mark.parametrize(
    ("loss", "options"),
    [
        ("ce", None),
        ("w1", None),
        ("xemd1", {"warmup_epochs": 2}),
        ("xemd2", {"warmup_epochs": 2, "feature_pass": "extra"}),
        ("ground", None),
        ("l2", None),
        ("coral", None),
        ("sord", None),
    ],
)
def test_every_kind_of_loss_trains(loss: str, options: dict | None) -> None:
    if loss == "coral":
        pytest.importorskip("coral_pytorch")
    if loss == "sord":
        pytest.importorskip("dlordinal")
    X, y = ordinal_data()
    clf = EMDClassifier(loss, loss_options=options, random_state=0, **FAST).fit(X, y)
    probs = clf.predict_proba(X)
    assert probs.shape == (len(X), 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert clf.score(X, y) > -0.6  # chance level (majority class) is about -1.0 here


def test_bayes_rule_uses_the_learned_ground_distance() -> None:
    X, y = ordinal_data()
    clf = EMDClassifier(
        "xemd1", loss_options={"warmup_epochs": 1}, prediction_rule="bayes", random_state=0, **FAST
    ).fit(X, y)
    matrix = clf.criterion_.ground_distance()
    assert matrix is not None
    probs = torch.from_numpy(clf.predict_proba(X))
    expected = decode(probs, "bayes", ground_distance=matrix.double()).numpy()
    np.testing.assert_array_equal(clf.predict(X), expected)


def test_score_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    true, pred = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    assert ordinal_score(true, pred) == pytest.approx(-mean_absolute_error(true, pred))
    assert ordinal_score(true, pred, "qwk") == pytest.approx(
        cohen_kappa_score(true, pred, weights="quadratic")
    )
    assert ordinal_score(true, pred, "accuracy") == pytest.approx(np.mean(true == pred))
    assert ordinal_score(true, pred, "one_off") == pytest.approx(np.mean(abs(true - pred) <= 1))
    X, y = ordinal_data()
    clf = EMDClassifier(score_metric="qwk", random_state=0, **FAST).fit(X, y)
    assert clf.score(X, y) == pytest.approx(
        cohen_kappa_score(y, clf.predict(X), weights="quadratic")
    )


def test_pipeline_clone_and_pickle() -> None:
    X, y = ordinal_data()
    pipe = make_pipeline(StandardScaler(), EMDClassifier(random_state=0, **FAST)).fit(X, y)
    again = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(again.predict_proba(X), pipe.predict_proba(X))
    fresh = clone(pipe)
    assert fresh.get_params()["emdclassifier__hidden_layer_sizes"] == (16,)
    assert not hasattr(fresh[-1], "model_")
    np.testing.assert_array_equal(fresh.fit(X, y).predict_proba(X), pipe.predict_proba(X))


def test_grid_search_over_loss_and_learning_rate() -> None:
    X, y = ordinal_data(n=180)
    grid = GridSearchCV(
        EMDClassifier(hidden_layer_sizes=(16,), max_iter=20, random_state=0),
        {"loss": ["emd2", "ce"], "learning_rate": [1e-4, 0.05]},
        cv=KFold(3, shuffle=True, random_state=0),
    ).fit(X, y)
    scores = grid.cv_results_["mean_test_score"]
    assert len(scores) == 4 and np.all(scores <= 0)  # negative MAE
    # 20 epochs at lr 1e-4 barely move the weights: the search must prefer 0.05.
    assert grid.best_params_["learning_rate"] == 0.05
    assert grid.best_score_ == pytest.approx(scores.max())


def test_soft_voting_averages_the_members_probabilities() -> None:
    """The ensemble docs/sklearn.md shows: VotingClassifier(voting="soft") over seeds."""
    from sklearn.ensemble import VotingClassifier

    X, y = ordinal_data(n=150)
    members = [(f"m{i}", EMDClassifier(random_state=i, **FAST)) for i in range(3)]
    vote = VotingClassifier(members, voting="soft").fit(X, y)
    alone = [EMDClassifier(random_state=i, **FAST).fit(X, y).predict_proba(X) for i in range(3)]
    np.testing.assert_allclose(vote.predict_proba(X), np.mean(alone, axis=0), rtol=0, atol=1e-12)
    assert not np.allclose(alone[0], alone[1])  # three different networks
    np.testing.assert_array_equal(vote.predict(X), np.argmax(np.mean(alone, axis=0), axis=1))


def test_cross_val_score() -> None:
    X, y = ordinal_data(n=180)
    scores = cross_val_score(EMDClassifier(random_state=0, **FAST), X, y, cv=3)
    assert scores.shape == (3,) and np.all((scores <= 0) & (scores > -1.0))
    qwk = cross_val_score(EMDClassifier(random_state=0, **FAST), X, y, cv=3, scoring="accuracy")
    assert np.all((qwk > 0) & (qwk <= 1))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"loss": "hinge"}, "loss must be one of"),
        ({"prediction_rule": "mode"}, "prediction_rule must be one of"),
        ({"score_metric": "f1"}, "score_metric must be one of"),
        ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0, got 0.0"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1, got 0"),
        ({"batch_size": "big"}, "batch_size must be an integer >= 1, got 'big'"),
        ({"classes": [0, 1, 1, 2, 3]}, "classes has repeated labels"),
        ({"classes": [0, 1, 2]}, r"y has labels \['3'\] that are not in classes"),
        ({"loss_options": {"bogus": 1}}, "bogus"),
        ({"dropout": 1.5}, "dropout must be in"),
    ],
)
def test_bad_parameters_are_named(params: dict, message: str) -> None:
    X, y = ordinal_data()
    with pytest.raises(ValueError, match=message):
        EMDClassifier(**{**FAST, **params}).fit(X, y)


def test_one_class_and_unknown_score_labels() -> None:
    X, y = ordinal_data()
    with pytest.raises(ValueError, match="at least 2 classes; y has only one class"):
        EMDClassifier(**FAST).fit(X, np.zeros(len(X), dtype=int))
    clf = EMDClassifier(**FAST).fit(X, y)
    with pytest.raises(ValueError, match=r"y has labels \['9'\] that are not in classes_"):
        clf.score(X[:2], [0, 9])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_x_or_y_is_refused_in_fit_and_predict(bad: float) -> None:
    """Issue 21's sklearn NaN probe: a non-finite cell is refused, never trained on or decoded."""
    X, y = ordinal_data(60)
    spoiled = X.copy()
    spoiled[3, 1] = bad
    word = "NaN" if np.isnan(bad) else "infinity"
    with pytest.raises(ValueError, match=f"Input X contains {word}"):
        EMDClassifier(**FAST).fit(spoiled, y)
    clf = EMDClassifier(**{**FAST, "max_iter": 2}).fit(X, y)
    for method in (clf.predict, clf.predict_proba, clf.score):
        with pytest.raises(ValueError, match=f"Input X contains {word}"):
            method(spoiled, y) if method == clf.score else method(spoiled)
    labels = y.astype(float)
    labels[2] = bad
    with pytest.raises(ValueError, match=f"Input y contains {word}"):
        EMDClassifier(**FAST).fit(X, labels)


def test_diverging_training_says_why() -> None:
    X, y = ordinal_data()
    with pytest.raises(FloatingPointError, match=r"loss became (inf|nan).*put a StandardScaler"):
        EMDClassifier("l2", max_iter=2).fit(X * 1e200, y)


def test_import_does_not_load_lightning() -> None:
    code = (
        "import sys, emdloss.sklearn, numpy as np\n"
        "emdloss.sklearn.EMDClassifier(max_iter=2).fit(np.eye(4), [0, 1, 2, 3])\n"
        "print(any(m.split('.')[0] == 'lightning' for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
