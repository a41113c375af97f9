"""Conformal ordinal prediction sets (issue 13): the coverage law over many random splits,
contiguity, nestedness, a hand-written reference and crepes as independent oracles."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from emdloss.conformal import (
    METHODS,
    Calibrator,
    calibrate,
    conformal_quantile,
    format_set,
    label_scores,
    mean_set_size,
    quantile_rank,
    set_coverage,
)

# ---------------------------------------------------------------------------------------------
# Hand-written reference: one example at a time, plain Python, no shared code with the library
# ---------------------------------------------------------------------------------------------


def ref_ordinal_aps(row: list[float]) -> list[float]:
    """Grow from the mode, adding the more probable neighbour (lower on a tie); the score of a
    class is the mass once it is in."""
    c = len(row)
    mode = max(range(c), key=lambda k: (row[k], -k))  # first maximum
    lo = hi = mode
    mass = row[mode]
    out = [0.0] * c
    out[mode] = mass
    while hi - lo + 1 < c:
        left = row[lo - 1] if lo > 0 else None
        right = row[hi + 1] if hi < c - 1 else None
        if right is None or (left is not None and left >= right):
            lo -= 1
            mass += row[lo]
            out[lo] = mass
        else:
            hi += 1
            mass += row[hi]
            out[hi] = mass
    return out


def ref_cdf(row: list[float]) -> list[float]:
    """1 - 2 min(P(Y <= y), P(Y >= y)), floored at 0: the two-sided tail form."""
    c = len(row)
    return [max(0.0, 1 - 2 * min(sum(row[: y + 1]), sum(row[y:]))) for y in range(c)]


REF = {"ordinal_aps": ref_ordinal_aps, "cdf": ref_cdf}


def ref_anchor(row: list[float], method: str) -> int:
    if method == "ordinal_aps":
        return max(range(len(row)), key=lambda k: (row[k], -k))
    total = 0.0
    for k, v in enumerate(row):  # the median: smallest k with F(k) >= 1/2
        total += v
        if total >= 0.5:
            return k
    return len(row) - 1


def ref_quantile(scores: list[float], alpha: float) -> float:
    n = len(scores)
    k = math.ceil((n + 1) * (1 - alpha))  # callers avoid (n + 1)(1 - alpha) near an integer
    return math.inf if k > n else sorted(scores)[k - 1]


def quantile_interval(row: list[float], tau: float) -> tuple[int, int]:
    """[F^-1((1 - tau)/2), F^-1((1 + tau)/2)] with F^-1(q) = min{k : F(k) >= q}."""
    cdf = np.cumsum(row)

    def inv(q: float) -> int:
        return int(np.argmax(cdf >= q)) if q <= cdf[-1] else len(row) - 1

    return inv((1 - tau) / 2), inv((1 + tau) / 2)


# ---------------------------------------------------------------------------------------------
# Synthetic exchangeable data
# ---------------------------------------------------------------------------------------------


def sample_labels(rng: np.random.Generator, q: np.ndarray) -> np.ndarray:
    u = rng.random(q.shape[0])
    return np.minimum((u[:, None] > np.cumsum(q, axis=1)).sum(axis=1), q.shape[1] - 1)


def draw(rng: np.random.Generator, n: int, c: int, label_model: str) -> tuple[np.ndarray, ...]:
    """i.i.d. (probs, label) pairs.

    ``"dirichlet"``: diffuse Dirichlet(0.7) probabilities, labels drawn from them;
    ``"ordinal"``: peaked unimodal probabilities (as an ordinal model gives), labels drawn from
    them; ``"shifted"``: the ordinal probabilities but labels drawn from another law (mass moved
    one class up), so the model is miscalibrated while the pairs stay exchangeable.
    """
    if label_model == "dirichlet":
        probs = rng.dirichlet(np.full(c, 0.7), size=n)
    else:
        centre = rng.uniform(0, c - 1, size=(n, 1))
        slope = rng.uniform(0.7, 3.0, size=(n, 1))
        z = -np.abs(np.arange(c) - centre) * slope + 0.5 * rng.standard_normal((n, c))
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    truth = probs
    if label_model == "shifted":
        up = np.concatenate([probs[:, :1] * 0, probs[:, :-1]], axis=1)
        up[:, -1] += probs[:, -1]
        truth = 0.3 * probs + 0.7 * up
    return probs, sample_labels(rng, truth)


def exact_law(n: int, alpha: float) -> tuple[float, float]:
    """Mean and variance of the coverage conditional on the calibration set: Beta(k, n + 1 - k)
    for continuous scores, k = ceil((n + 1)(1 - alpha))."""
    k = math.ceil((n + 1) * (1 - alpha))
    a, b = k, n + 1 - k
    return a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))


# ---------------------------------------------------------------------------------------------
# The guarantee
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label_model", ["dirichlet", "ordinal", "shifted"])
@pytest.mark.parametrize("method", METHODS)
def test_coverage_over_random_splits_follows_the_finite_sample_law(
    method: str, label_model: str
) -> None:
    """Marginal coverage >= 1 - alpha always; where the scores have no ties at the threshold,
    the coverage of a split follows the exact law (mean k / (n + 1), Beta + binomial spread)."""
    rng = np.random.default_rng(13)
    splits, n, m, c = 200, 120, 200, 6
    alphas = (0.05, 0.1, 0.2)
    set_cov: dict[float, list[float]] = {a: [] for a in alphas}
    score_cov: dict[float, list[float]] = {a: [] for a in alphas}
    anchor_only: dict[float, list[float]] = {a: [] for a in alphas}
    ties: dict[float, list[float]] = {a: [] for a in alphas}  # thresholds shared by >1 score
    for _ in range(splits):
        p_cal, y_cal = draw(rng, n, c, label_model)
        p_test, y_test = draw(rng, m, c, label_model)
        s_cal = label_scores(p_cal, method)[np.arange(n), y_cal]
        s_test = label_scores(p_test, method)[np.arange(m), y_test]
        for a in alphas:
            cal = calibrate(p_cal, y_cal, a, method=method)
            lower, upper = cal.predict_sets(p_test)
            inside = (lower <= y_test) & (y_test <= upper)
            by_score = s_test <= cal.qhat
            assert np.all(inside | ~by_score)  # a set holds every class scored <= qhat
            set_cov[a].append(inside.mean())
            score_cov[a].append(by_score.mean())
            anchor_only[a].append((inside & ~by_score).mean())
            if int(np.sum(np.abs(s_cal - cal.qhat) < 1e-9)) > 1:
                ties[a].append(cal.qhat)
    for a in alphas:
        mu, var_beta = exact_law(n, a)
        assert 1 - a <= mu <= 1 - a + 1 / (n + 1)
        # per split: Beta spread of the conditional coverage + binomial spread of m test points
        var_split = var_beta + (mu - var_beta - mu**2) / m
        tol = 4 * math.sqrt(var_split / splits)
        assert np.mean(set_cov[a]) >= 1 - a - tol
        assert np.mean(score_cov[a]) >= 1 - a - tol
        if ties[a]:
            # Ordinal APS has an atom at score 1 (the class that joins last brings the mass to
            # 1); with diffuse or miscalibrated probabilities and a small alpha the threshold
            # lands on it and coverage exceeds the upper bound. The guarantee is one-sided; no
            # other tie may occur here.
            assert method == "ordinal_aps", (a, ties[a][:3])
            assert np.allclose(ties[a], 1.0, rtol=0, atol=1e-9), (a, ties[a][:3])
            continue
        assert abs(np.mean(score_cov[a]) - mu) <= tol, (a, np.mean(score_cov[a]), mu, tol)
        upper_bound = 1 - a + 1 / (n + 1) + np.mean(anchor_only[a])
        assert np.mean(set_cov[a]) <= upper_bound + tol
        # the per-split coverages spread as the law says (not only their mean)
        assert 0.5 * var_split <= np.var(score_cov[a], ddof=1) <= 2 * var_split


@pytest.mark.parametrize("method", METHODS)
def test_conditional_coverage_is_beta_distributed(method: str) -> None:
    """Coverage given a calibration set is F_S(qhat), the score CDF at the k-th order statistic:
    Beta(k, n + 1 - k) exactly for continuous scores. F_S is estimated from 200 000 fresh
    examples; a KS test over 400 calibration sets checks the whole law."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    n, c, alpha = 120, 6, 0.1
    p_big, y_big = draw(rng, 200_000, c, "ordinal")
    big = np.sort(label_scores(p_big, method)[np.arange(len(y_big)), y_big])
    cond = []
    for _ in range(400):
        p_cal, y_cal = draw(rng, n, c, "ordinal")
        qhat = calibrate(p_cal, y_cal, alpha, method=method).qhat
        cond.append(np.searchsorted(big, qhat, side="right") / len(big))
    k = quantile_rank(n, alpha)
    assert stats.kstest(cond, stats.beta(k, n + 1 - k).cdf).pvalue > 1e-3
    # the law without the (n + 1) correction is rejected: the test can fail
    k_naive = math.ceil(n * (1 - alpha))
    assert stats.kstest(cond, stats.beta(k_naive, n + 1 - k_naive).cdf).pvalue < 1e-3


# ---------------------------------------------------------------------------------------------
# Independent oracles: hand-written reference, crepes
# ---------------------------------------------------------------------------------------------


def awkward_probs(seed: int, n: int, c: int) -> np.ndarray:
    """Peaked and flat rows, ties, zeros, one-hot and uniform rows."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(c, 0.3), size=n)
    p[: n // 4] = np.round(p[: n // 4], 1) + 1e-12  # ties and near-zeros
    p[n // 4 : n // 4 + 3] = np.eye(c)[rng.integers(0, c, 3)]
    p[n // 4 + 3] = 1.0 / c
    p[n // 4 + 4] = 0.0
    p[n // 4 + 4, [0, c - 1]] = 0.5  # bimodal at the ends: the median sits at class 0
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("c", [2, 3, 7])
def test_scores_match_reference(method: str, c: int) -> None:
    p = awkward_probs(c, 300, c)
    got = label_scores(p, method)
    expected = np.array([REF[method](row.tolist()) for row in p])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_cdf_score_is_the_smallest_central_quantile_interval() -> None:
    """The 'cdf' set at threshold tau is the central quantile interval of mass tau."""
    rng = np.random.default_rng(3)
    p = awkward_probs(5, 200, 6)
    for row in p:
        s = ref_cdf(row.tolist())
        median = ref_anchor(row.tolist(), "cdf")
        for tau in rng.random(5):
            keep = [y for y in range(6) if s[y] <= tau] or [median]
            keep = sorted(set(keep) | {median})
            assert (keep[0], keep[-1]) == quantile_interval(row.tolist(), float(tau))


@pytest.mark.parametrize("method", METHODS)
def test_calibration_and_sets_match_reference(method: str) -> None:
    rng = np.random.default_rng(11)
    c = 5
    p_cal, y_cal = draw(rng, 257, c, "shifted")
    p_test, _ = draw(rng, 300, c, "shifted")
    p_test = np.concatenate([p_test, awkward_probs(1, 60, c)])
    for alpha in (0.05, 0.1, 0.3):
        cal_scores = [REF[method](row.tolist())[y] for row, y in zip(p_cal, y_cal, strict=True)]
        qhat = ref_quantile(cal_scores, alpha)
        cal = calibrate(p_cal, y_cal, alpha, method=method)
        assert cal.qhat == pytest.approx(qhat, abs=1e-12)
        lower, upper = cal.predict_sets(p_test)
        for row, lo, hi in zip(p_test, lower, upper, strict=True):
            s = REF[method](row.tolist())
            keep = {y for y in range(c) if s[y] <= qhat} | {ref_anchor(row.tolist(), method)}
            assert keep == set(range(lo, hi + 1))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("n", "alpha"), [(250, 0.1), (250, 0.05), (250, 0.2), (8, 0.1)])
def test_sets_match_crepes(method: str, n: int, alpha: float) -> None:
    """crepes' standard (non-smoothed) conformal classifier on our scores keeps the classes with
    p-value (#{cal >= s} + 1) / (n + 1) >= alpha: our sets minus the anchor class. n is chosen
    so that (n + 1) alpha is not an integer, where crepes' >= adds one boundary rank."""
    crepes = pytest.importorskip("crepes")
    rng = np.random.default_rng(n)
    c = 5
    p_cal, y_cal = draw(rng, n, c, "ordinal")
    p_test, _ = draw(rng, 400, c, "ordinal")
    cal_scores = label_scores(p_cal, method)[np.arange(n), y_cal]
    cc = crepes.ConformalClassifier().fit(cal_scores)
    theirs = cc.predict_set(label_scores(p_test, method), confidence=1 - alpha, smoothing=False)
    theirs = theirs.astype(bool)
    theirs[np.arange(len(p_test)), [ref_anchor(r.tolist(), method) for r in p_test]] = True
    if (n + 1) * alpha < 1:
        with pytest.warns(UserWarning, match="too few"):
            cal = calibrate(p_cal, y_cal, alpha, method=method)
    else:
        cal = calibrate(p_cal, y_cal, alpha, method=method)
    lower, upper = cal.predict_sets(p_test)
    ours = (np.arange(c) >= lower[:, None]) & (np.arange(c) <= upper[:, None])
    np.testing.assert_array_equal(ours, theirs)


# ---------------------------------------------------------------------------------------------
# Structure: contiguous, never empty, nested
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_sets_are_contiguous_never_empty_and_hold_every_low_score(method: str) -> None:
    p = awkward_probs(2, 400, 6)
    s = label_scores(p, method)
    for qhat in [0.0, *np.unique(s)[::7].tolist(), 0.5, 0.99, 1.0]:
        cal = Calibrator(method=method, alpha=0.1, qhat=qhat, n=100, num_classes=6)
        lower, upper = cal.predict_sets(p)
        assert np.all(lower <= upper)
        keep = s <= qhat
        in_set = (np.arange(6) >= lower[:, None]) & (np.arange(6) <= upper[:, None])
        assert np.all(in_set | ~keep)
        # the set is exactly the low-score classes, or the anchor alone when there are none
        extra = in_set & ~keep
        assert np.all(extra.sum(axis=1) <= 1)
        assert np.all(keep[extra.any(axis=1)].sum(axis=1) == 0)


@pytest.mark.parametrize("c", [5, 7, 10])
def test_ordinal_aps_threshold_one_keeps_every_class(c: int) -> None:
    """Regression: the last class's accumulated mass is 1 +- rounding; on RetinaMNIST a
    threshold of exactly 1 (the atom) kept it for some rows and not for others."""
    p = np.random.default_rng(c).dirichlet(np.ones(c), size=2000)
    assert np.max(np.abs(label_scores(p, "ordinal_aps").max(axis=1) - 1.0)) == 0.0
    lower, upper = Calibrator("ordinal_aps", 0.1, 1.0, 100, c).predict_sets(p)
    assert np.all(lower == 0) and np.all(upper == c - 1)


@pytest.mark.parametrize("method", METHODS)
def test_sets_are_nested_in_alpha(method: str) -> None:
    rng = np.random.default_rng(5)
    p_cal, y_cal = draw(rng, 500, 7, "shifted")
    p_test = awkward_probs(4, 300, 7)
    previous = None
    for alpha in (0.5, 0.3, 0.2, 0.1, 0.05, 0.01):
        lower, upper = calibrate(p_cal, y_cal, alpha, method=method).predict_sets(p_test)
        if previous is not None:
            assert np.all(lower <= previous[0]) and np.all(upper >= previous[1])
        previous = (lower, upper)


# ---------------------------------------------------------------------------------------------
# The finite-sample quantile
# ---------------------------------------------------------------------------------------------


def test_quantile_rank_and_threshold() -> None:
    # k = ceil((n + 1)(1 - alpha)), alpha read as the decimal written
    assert [quantile_rank(n, 0.1) for n in (8, 9, 10, 99, 100)] == [9, 9, 10, 90, 91]
    assert quantile_rank(9, 0.3) == 7  # 10 * 0.7 is 7 exactly, not 7.000...1
    assert quantile_rank(19, 0.05) == 19
    scores = np.array([0.7, 0.1, 0.4, 0.9, 0.2, 0.3, 0.8, 0.6, 0.5, 0.05])
    for alpha in (0.1, 0.2, 0.25, 0.5, 0.8):
        k = quantile_rank(10, alpha)
        assert conformal_quantile(scores, alpha) == (
            np.sort(scores)[k - 1] if k <= 10 else math.inf
        )
    assert conformal_quantile(torch.tensor(scores), 0.5) == conformal_quantile(scores, 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_too_few_calibration_points_give_all_classes_with_a_warning(method: str) -> None:
    rng = np.random.default_rng(0)
    p, y = draw(rng, 18, 4, "ordinal")  # 18 < 1/0.05 - 1 = 19
    with pytest.warns(UserWarning, match=r"18 calibration examples are too few for alpha=0.05"):
        cal = calibrate(p, y, 0.05, method=method)
    assert cal.all_classes and cal.to_dict()["qhat"] is None
    lower, upper = cal.predict_sets(p)
    assert np.all(lower == 0) and np.all(upper == 3)
    # one more point is enough: the largest score becomes the threshold
    p19, y19 = draw(rng, 19, 4, "ordinal")
    cal = calibrate(p19, y19, 0.05, method=method)
    assert cal.qhat == label_scores(p19, method)[np.arange(19), y19].max()


# ---------------------------------------------------------------------------------------------
# Round trip, input kinds, validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_calibrator_round_trips_through_json(method: str) -> None:
    rng = np.random.default_rng(1)
    p, y = draw(rng, 300, 5, "ordinal")
    for alpha, n in ((0.1, 300), (0.01, 50)):
        with pytest.warns(UserWarning) if n * alpha < 1 else _no_warning():
            cal = calibrate(p[:n], y[:n], alpha, method=method)
        back = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict(), allow_nan=False)))
        assert back == cal
        for a, b in zip(back.predict_sets(p), cal.predict_sets(p), strict=True):
            np.testing.assert_array_equal(a, b)


class _no_warning:
    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def test_from_dict_rejects_bad_data() -> None:
    good = Calibrator("cdf", 0.1, 0.4, 100, 5).to_dict()
    with pytest.raises(ValueError, match="lacks the fields qhat"):
        Calibrator.from_dict({k: v for k, v in good.items() if k != "qhat"})
    with pytest.raises(ValueError, match="format 2"):
        Calibrator.from_dict({**good, "format": 2})
    with pytest.raises(ValueError, match="method must be one of cdf, ordinal_aps; got 'aps'"):
        Calibrator.from_dict({**good, "method": "aps"})
    with pytest.raises(ValueError, match=r"alpha must be strictly between 0 and 1, got 1.5"):
        Calibrator.from_dict({**good, "alpha": 1.5})
    with pytest.raises(ValueError, match=r"num_classes must be at least 2, got 1"):
        Calibrator.from_dict({**good, "num_classes": 1})
    with pytest.raises(TypeError, match=r"qhat must be a float, got '0.4'"):
        Calibrator.from_dict({**good, "qhat": "0.4"})
    with pytest.raises(ValueError, match="JSON object, got list"):
        Calibrator.from_dict([1, 2])


def test_numpy_in_numpy_out_torch_in_torch_out() -> None:
    rng = np.random.default_rng(2)
    p, y = draw(rng, 200, 4, "ordinal")
    cal_np = calibrate(p, y, 0.1)
    cal_t = calibrate(torch.tensor(p, dtype=torch.float32), torch.tensor(y), 0.1)
    assert cal_np.qhat == pytest.approx(cal_t.qhat, abs=1e-6)
    lo, hi = cal_np.predict_sets(p)
    assert isinstance(lo, np.ndarray) and lo.dtype == np.int64
    tlo, thi = cal_np.predict_sets(torch.tensor(p))
    assert isinstance(tlo, torch.Tensor) and tlo.dtype == torch.int64
    np.testing.assert_array_equal(tlo.numpy(), lo)
    np.testing.assert_array_equal(thi.numpy(), hi)
    assert isinstance(label_scores(torch.tensor(p)), torch.Tensor)
    assert isinstance(cal_np.predict_sets(p.tolist())[0], np.ndarray)


def test_bad_input_is_named() -> None:
    p = np.array([[0.2, 0.8], [0.5, 0.5]])
    y = np.array([1, 0])
    with pytest.raises(ValueError, match=r"probs row 1 sums to 0.9; each row must sum to 1"):
        calibrate(np.array([[0.2, 0.8], [0.5, 0.4]]), y, 0.1)
    with pytest.raises(ValueError, match=r"probs\[0, 0\] is -0.2; probabilities must be finite"):
        calibrate(np.array([[-0.2, 1.2], [0.5, 0.5]]), y, 0.1)
    with pytest.raises(ValueError, match=r"probs\[1, 0\] is nan"):
        calibrate(np.array([[0.2, 0.8], [np.nan, 0.5]]), y, 0.1)
    with pytest.raises(ValueError, match=r"labels\[1\] is 2; class indices must lie in \[0, 1\]"):
        calibrate(p, np.array([1, 2]), 0.1)
    with pytest.raises(ValueError, match=r"labels have 3 entries but probs have 2 rows"):
        calibrate(p, np.array([1, 0, 1]), 0.1)
    with pytest.raises(TypeError, match="labels must hold integer class indices"):
        calibrate(p, np.array([1.0, 0.0]), 0.1)
    with pytest.raises(TypeError, match="probs must hold floating-point"):
        calibrate(np.array([[0, 1], [1, 0]]), y, 0.1)
    with pytest.raises(ValueError, match=r"probs must be 2-D \(N, C\), got shape \(2,\)"):
        calibrate(np.array([0.2, 0.8]), y, 0.1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        calibrate(np.ones((2, 1)), y, 0.1)
    for alpha in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="alpha must be strictly between 0 and 1"):
            calibrate(p, y, alpha)
    with pytest.raises(TypeError, match="alpha must be a float"):
        calibrate(p, y, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method must be one of cdf, ordinal_aps; got 'rps'"):
        calibrate(p, y, 0.1, method="rps")
    cal = Calibrator("cdf", 0.1, 0.5, 10, 3)
    with pytest.raises(ValueError, match=r"probs have 2 classes .* but the calibrator has 3"):
        cal.predict_sets(p)


def test_set_summaries_and_format() -> None:
    lower, upper, target = [0, 2, 1, 3], [1, 2, 3, 3], [1, 1, 3, 3]
    assert set_coverage(lower, upper, target) == 0.75
    assert mean_set_size(lower, upper) == 1.75
    with pytest.raises(ValueError, match="set 1 is empty: lower 2 > upper 1"):
        mean_set_size([0, 2], [1, 1])
    with pytest.raises(ValueError, match="target has shape"):
        set_coverage([0], [1], [0, 1])
    names = ["none", "mild", "moderate", "severe", "proliferative"]
    assert format_set(2, 3, names) == "moderate..severe"
    assert format_set(np.int64(4), np.int64(4), names) == "proliferative"
    with pytest.raises(ValueError, match="outside the 5 class names"):
        format_set(3, 5, names)


# ---------------------------------------------------------------------------------------------
# The stateful metric
# ---------------------------------------------------------------------------------------------


def test_conformal_coverage_metric_matches_functional_and_merges_like_ddp() -> None:
    pytest.importorskip("torchmetrics")
    from emdloss.metrics import ConformalCoverage, prediction_set_metrics

    rng = np.random.default_rng(4)
    p, y = draw(rng, 600, 5, "shifted")
    lower, upper = calibrate(p[:300], y[:300], 0.1).predict_sets(torch.tensor(p[300:]))
    target = torch.tensor(y[300:])
    expected = prediction_set_metrics(lower, upper, target)
    whole = ConformalCoverage(num_classes=5)
    for idx in torch.arange(300).split(70):
        whole.update(lower[idx], upper[idx], target[idx])
    got = whole.compute()
    assert float(got["coverage"]) == pytest.approx(expected["coverage"], abs=1e-15)
    assert float(got["mean_set_size"]) == pytest.approx(expected["mean_set_size"], abs=1e-15)
    # DDP all-gathers each state and reduces it with its dist_reduce_fx; do the same by hand
    # (Metric.merge_state would, but only from torchmetrics 1.6; our floor is 1.3)
    a, b = ConformalCoverage(num_classes=5), ConformalCoverage(num_classes=5)
    a.update(lower[:113], upper[:113], target[:113])
    b.update(lower[113:], upper[113:], target[113:])
    for name in a._defaults:
        gathered = torch.stack([getattr(a, name), getattr(b, name)])
        setattr(a, name, a._reductions[name](gathered))
    merged = a.compute()
    assert all(float(merged[k]) == float(got[k]) for k in got)
    whole.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(whole.compute()["coverage"]))
    with pytest.raises(ValueError, match=r"outside the classes 0..4"):
        whole.update(torch.tensor([0]), torch.tensor([5]), torch.tensor([1]))
