"""emdloss.metrics.distribution against pyldl.metrics, SciPy and hand-derived values."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

pytest.importorskip("torchmetrics")  # the stateful metrics: the train extra
pytest.importorskip("scipy")
pytest.importorskip("pyldl.metrics")  # oracle (PyPI python-ldl, the dev extra)

from pyldl import metrics as ldl
from scipy import stats

from emdloss.errors import UserError
from emdloss.metrics import (
    DISTRIBUTION_METRIC_KEYS,
    DISTRIBUTION_METRIC_MODES,
    DistributionMetrics,
    canberra,
    chebyshev,
    clark,
    cosine_similarity,
    distribution_metrics,
    emd2,
    intersection,
    kl_divergence,
    lcc,
    mean_score,
    mean_score_mae,
    mean_score_rmse,
    mode_accuracy,
    nima_emd,
    noise_floor,
    srcc,
)


def _pair(seed: int, n: int, c: int, zeros: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Target and predicted distributions (float64); with zeros in both when asked."""
    g = torch.Generator().manual_seed(seed)
    target = torch.distributions.Dirichlet(torch.full((c,), 0.7)).sample((n,))
    pred = (torch.randn(n, c, generator=g, dtype=torch.float64) + target.double().log1p()).softmax(
        1
    )
    target = target.double()
    if zeros:
        target[:, 0] = 0.0  # a level nobody voted for
        target[1, :] = 0.0
        target[1, -1] = 1.0  # a one-hot target
        pred[2, 1] = 0.0  # a zero predicted level where the target has mass
        pred = pred / pred.sum(1, keepdim=True)
    target = target / target.sum(1, keepdim=True)
    return pred, target


CASES = [(0, 30, 3), (1, 57, 5), (2, 64, 10), (3, 9, 2)]
SIX = {
    "chebyshev": (chebyshev, ldl.chebyshev),
    "clark": (clark, ldl.clark),
    "canberra": (canberra, ldl.canberra),
    "kl": (kl_divergence, ldl.kl_divergence),
    "cosine": (cosine_similarity, ldl.cosine),
    "intersection": (intersection, ldl.intersection),
}


# ---------------------------------------------------------------------------------------------
# the six LDL measures against pyldl
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "n", "c"), CASES)
@pytest.mark.parametrize("key", list(SIX))
def test_six_measures_match_pyldl_item_by_item(key: str, seed: int, n: int, c: int) -> None:
    torch.manual_seed(seed)
    pred, target = _pair(seed, n, c)
    ours, theirs = SIX[key]
    expected = theirs(target.numpy(), pred.numpy(), reduction=None)  # pyldl: (D, D_pred)
    got = ours(pred, target, reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert float(ours(pred, target)) == pytest.approx(float(np.mean(expected)), rel=1e-12)
    assert float(ours(pred, target, reduction="sum")) == pytest.approx(
        float(np.sum(expected)), rel=1e-12
    )
    assert distribution_metrics(pred, target)[key] == pytest.approx(float(np.mean(expected)))


def test_clipping_gives_pyldls_large_finite_kl_for_a_zero_predicted_level() -> None:
    pred = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    target = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    kl = float(kl_divergence(pred, target))
    # 0.5 ln(0.5 / eps) + 0.5 ln(0.5 / 1), eps = 2.22e-16: large, finite, as pyldl
    assert kl == pytest.approx(0.5 * math.log(0.5 / np.finfo(np.float64).eps) + 0.5 * math.log(0.5))
    assert kl == pytest.approx(float(ldl.kl_divergence(target.numpy(), pred.numpy())))
    # a zero target level adds nothing; a perfect prediction scores the perfect value everywhere
    one_hot = torch.tensor([[0.0, 1.0, 0.0]])
    perfect = distribution_metrics(one_hot, one_hot)
    for key in ("chebyshev", "clark", "canberra", "kl", "emd2", "nima_emd", "mean_mae"):
        assert perfect[key] == pytest.approx(0.0, abs=1e-12), key
    for key in ("cosine", "intersection", "mode_accuracy"):
        assert perfect[key] == pytest.approx(1.0), key


def test_float32_inputs_agree_with_float64() -> None:
    pred, target = _pair(5, 40, 5)
    for key, (ours, _) in SIX.items():
        a = float(ours(pred.float(), target.float()))
        assert a == pytest.approx(float(ours(pred, target)), rel=1e-5, abs=1e-6), key


# ---------------------------------------------------------------------------------------------
# CDF measures: hand-derived values, SciPy
# ---------------------------------------------------------------------------------------------
def test_emd2_and_nima_emd_hand_computed() -> None:
    pred = torch.tensor([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    # CDF differences (0.5, 0.8, 0) and (1, 0, 0): (0.25 + 0.64) / 3 and 1 / 3
    per_item = torch.tensor([0.89 / 3, 1 / 3])
    torch.testing.assert_close(emd2(pred, target, reduction="none"), per_item)
    torch.testing.assert_close(nima_emd(pred, target, reduction="none"), per_item.sqrt())
    # NIMA's EMD averages the roots, not the root of the mean
    assert float(nima_emd(pred, target)) == pytest.approx(float(per_item.sqrt().mean()))
    assert float(nima_emd(pred, target)) != pytest.approx(float(per_item.mean().sqrt()))


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_emd2_matches_scipy_energy_distance_and_bounds_w1(seed: int, n: int, c: int) -> None:
    pred, target = _pair(seed, n, c)
    levels = np.arange(c, dtype=float)
    got = emd2(pred, target, reduction="none").numpy()
    for i in range(n):
        p, t = pred[i].numpy(), target[i].numpy()
        # Cramér: energy distance^2 = 2 * sum_k (CDF difference)^2 on unit gaps
        energy = stats.energy_distance(levels, levels, u_weights=t, v_weights=p)
        assert got[i] == pytest.approx(energy**2 / 2 / c, rel=1e-9, abs=1e-15)
        # W1 = sum_k |CDF difference|: |d_k| <= 1 and Cauchy-Schwarz bound the sum of squares
        w1 = stats.wasserstein_distance(levels, levels, u_weights=t, v_weights=p)
        assert w1**2 / (c - 1) - 1e-12 <= c * got[i] <= w1 + 1e-12
    # for two one-hot rows m levels apart, emd2 = m / C and W1 = m
    one_hot = torch.eye(c, dtype=torch.float64)
    assert float(emd2(one_hot[:1], one_hot[-1:])) == pytest.approx((c - 1) / c)


# ---------------------------------------------------------------------------------------------
# mean-score measures: pyldl and SciPy
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_mean_score_errors_match_pyldl(seed: int, n: int, c: int) -> None:
    pred, target = _pair(seed, n, c)
    # pyldl scores levels 1..C; the errors do not change with a shift of the positions
    mae = ldl.mean_absolute_error(target.numpy(), pred.numpy())
    mse = ldl.mean_squared_error(target.numpy(), pred.numpy())
    assert float(mean_score_mae(pred, target)) == pytest.approx(mae, rel=1e-12)
    assert float(mean_score_rmse(pred, target)) == pytest.approx(math.sqrt(mse), rel=1e-12)
    shifted = list(range(1, c + 1))
    scores = distribution_metrics(pred, target, positions=shifted)
    assert scores["mean_mae"] == pytest.approx(mae, rel=1e-12)
    assert scores["mean_rmse"] == pytest.approx(math.sqrt(mse), rel=1e-12)
    torch.testing.assert_close(mean_score(pred, shifted), mean_score(pred) + 1.0)
    # unequal level values scale the errors
    wide = [10.0 * k for k in range(c)]
    assert float(mean_score_mae(pred, target, positions=wide)) == pytest.approx(10 * mae)


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_lcc_srcc_match_scipy(seed: int, n: int, c: int) -> None:
    pred, target = _pair(seed, n, c, zeros=c > 2)  # (two levels with zeros: a constant target)
    target[: n // 3] = target[0]  # ties in the target mean scores
    positions = [0.0, 2.0] + [3.0 + k for k in range(c - 2)]
    mu_p, mu_t = mean_score(pred, positions).numpy(), mean_score(target, positions).numpy()
    r = stats.pearsonr(mu_p, mu_t)[0]
    rho = stats.spearmanr(mu_p, mu_t)[0]
    assert float(lcc(pred, target, positions=positions)) == pytest.approx(r, rel=1e-10)
    assert float(srcc(pred, target, positions=positions)) == pytest.approx(rho, rel=1e-10)
    scores = distribution_metrics(pred, target, positions=positions)
    assert (scores["lcc"], scores["srcc"]) == pytest.approx((r, rho), rel=1e-10)


def test_mid_ranks_match_scipy_rankdata_row_by_row() -> None:
    from emdloss.metrics.distribution import _mid_ranks

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (7, 40), generator=g).double()  # many ties
    expected = stats.rankdata(x.numpy(), method="average", axis=1)
    np.testing.assert_array_equal(_mid_ranks(x).numpy(), expected)
    np.testing.assert_array_equal(_mid_ranks(x[0]).numpy(), expected[0])


def test_correlations_are_zero_not_nan_when_a_side_is_constant() -> None:
    pred, target = _pair(0, 10, 4)
    constant = pred[:1].expand(10, 4)  # the training-mean baseline
    assert float(lcc(constant, target)) == 0.0
    assert float(srcc(constant, target)) == 0.0
    single = distribution_metrics(pred[:1], target[:1])  # a single item
    assert single["lcc"] == 0.0 and single["srcc"] == 0.0
    assert single["chebyshev"] == pytest.approx(float((pred[0] - target[0]).abs().max()))


def test_one_distribution_for_every_item_scores_zero_correlation_despite_rounding() -> None:
    """Regression: the training-mean baseline's mean scores differ in the last bit between rows
    (the matrix product rounds them differently), which gave MEBeauty's mean baseline an lcc of
    0.0038 and Movie's -0.007 +- 0.021: the correlation of rounding noise."""
    rng = np.random.default_rng(1)
    row = rng.dirichlet(np.ones(10))
    pred = torch.as_tensor(np.tile(row, (506, 1)))
    positions = torch.arange(1.0, 11.0, dtype=torch.float64)
    scores = pred @ positions
    assert float(scores.max() - scores.min()) > 0  # the rounding this test is about
    target = torch.as_tensor(rng.dirichlet(np.ones(10), size=506))
    for dtype in (torch.float64, torch.float32):
        assert float(lcc(pred.to(dtype), target.to(dtype), positions=positions.to(dtype))) == 0.0
        assert float(srcc(pred.to(dtype), target.to(dtype), positions=positions.to(dtype))) == 0.0
    measures = distribution_metrics(pred, target, positions=positions.tolist())
    assert measures["lcc"] == 0.0 and measures["srcc"] == 0.0
    # Nearly but really constant scores are still correlated.
    varied = pred.clone()
    varied[:, 0] += 1e-6 * target[:, 0]
    varied /= varied.sum(1, keepdim=True)
    assert float(lcc(varied, target, positions=positions)) > 0.1


def test_mode_accuracy_counts_tied_target_modes_and_matches_pyldl_without_ties() -> None:
    pred = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    target = torch.tensor([[0.0, 0.5, 0.5], [0.2, 0.4, 0.4], [0.25, 0.25, 0.5]])
    torch.testing.assert_close(
        mode_accuracy(pred, target, reduction="none"), torch.tensor([1.0, 0.0, 1.0])
    )
    p, t = _pair(3, 50, 6, zeros=False)  # continuous: no ties
    expected = 1.0 - ldl.zero_one_loss(t.numpy(), p.numpy())
    assert float(mode_accuracy(p, t)) == pytest.approx(expected)


def test_keys_and_directions_are_one_table() -> None:
    pred, target = _pair(1, 20, 5)
    assert tuple(distribution_metrics(pred, target)) == DISTRIBUTION_METRIC_KEYS
    assert set(DISTRIBUTION_METRIC_MODES.values()) == {"min", "max"}
    larger = {k for k, v in DISTRIBUTION_METRIC_MODES.items() if v == "max"}
    assert larger == {"cosine", "intersection", "lcc", "srcc", "mode_accuracy"}
    # pyldl agrees on the direction of the six
    for key, (_, oracle) in SIX.items():
        assert (key in larger) == (oracle.__name__ in ldl.THE_LARGER_THE_BETTER), key


# ---------------------------------------------------------------------------------------------
# stateful == functional; DDP
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_stateful_over_batches_equals_functional_on_all(seed: int, n: int, c: int) -> None:
    pred, target = _pair(seed, n, c)
    positions = [1.0 + 0.5 * k * k for k in range(c)]
    metric = DistributionMetrics(c, positions=positions)
    for idx in torch.randperm(n, generator=torch.Generator().manual_seed(seed)).split(7):
        metric.update(pred[idx].float(), target[idx].float())
    got = metric.compute()
    assert tuple(got) == DISTRIBUTION_METRIC_KEYS == metric.metric_names
    expected = distribution_metrics(pred.float(), target.float(), positions=positions)
    for key, value in expected.items():
        assert float(got[key]) == pytest.approx(value, rel=1e-9, abs=1e-12), key
    metric.reset()
    with pytest.raises(RuntimeError, match="before any item"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns of a compute() before update()
        metric.compute()


WORK = """
    from emdloss.metrics import DistributionMetrics


    def work(rank, data):
        pred, target, positions, shards = data
        metric = DistributionMetrics(pred.shape[1], positions=positions)
        # Uneven shards, several batches each; an empty shard: a process that sees no item.
        for idx in shards[rank].split(5) if len(shards[rank]) else ():
            metric.update(pred[idx], target[idx])
        out = {k: v.clone() for k, v in metric.compute().items()}
        out["local_count"] = metric.count.clone()  # compute() restored the local states
        return out
"""


@pytest.mark.ddp
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)
def test_ddp_two_gloo_processes_match_one_process(two_gloo_ranks: Callable[..., Any]) -> None:
    pred, target = _pair(21, 47, 5)
    order = torch.argsort(mean_score(target), stable=True)  # ranks see different items
    shards = [order[:17], order[17:]]
    positions = [1.0, 2.0, 3.5, 4.0, 8.0]
    outputs = two_gloo_ranks(WORK, (pred, target, positions, shards))
    expected = distribution_metrics(pred, target, positions=positions)
    for rank, shard in enumerate(shards):
        out = dict(outputs[rank])
        assert int(out.pop("local_count")) == len(shard)
        assert set(out) == set(expected)
        for key, value in expected.items():
            assert float(out[key]) == pytest.approx(value, rel=1e-10, abs=1e-12), (rank, key)


@pytest.mark.ddp
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)
def test_ddp_a_process_that_saw_no_item_syncs(two_gloo_ranks: Callable[..., Any]) -> None:
    # Found by the metrics audit: rank 1's empty mean-score state was float32 beside rank 0's
    # float64, and gloo aborted the process ("Received data size doesn't match").
    pred, target = _pair(22, 30, 4)
    shards = [torch.arange(30), torch.arange(0)]
    outputs = two_gloo_ranks(WORK, (pred, target, None, shards))
    expected = distribution_metrics(pred, target)
    for rank in (0, 1):
        out = dict(outputs[rank])
        assert int(out.pop("local_count")) == len(shards[rank])
        for key, value in expected.items():
            assert float(out[key]) == pytest.approx(value, rel=1e-10, abs=1e-12), (rank, key)


# ---------------------------------------------------------------------------------------------
# found by the metrics audit: half precision, ties of mean scores, gradients at p == t
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_softmax_is_measured(dtype: torch.dtype) -> None:
    pred64, target = _pair(23, 40, 10, zeros=False)
    pred = pred64.log().to(dtype).softmax(1)  # mixed precision: off 1 by up to the dtype's eps
    expected = distribution_metrics(pred.double() / pred.double().sum(1, keepdim=True), target)
    got = distribution_metrics(pred, target)
    metric = DistributionMetrics(10)
    metric.update(pred, target)
    stateful = metric.compute()
    for key in ("kl", "emd2", "lcc", "mean_rmse"):  # srcc: bfloat16 ties mean scores
        assert got[key] == pytest.approx(expected[key], rel=0.02, abs=1e-3), key
    for key in DISTRIBUTION_METRIC_KEYS:
        assert float(stateful[key]) == pytest.approx(got[key], rel=1e-12), key


def test_emd2_takes_what_the_distribution_check_takes() -> None:
    # -5e-5 and a row off 1 by 5e-5 pass float32's check (1e-4) and must be measured.
    p = torch.tensor([[-5e-5, 0.5, 0.50005], [0.25 + 5e-5, 0.25, 0.5]])
    t = torch.tensor([[0.0, 0.5, 0.5], [0.25, 0.25, 0.5]])
    hand = [((p[i] - t[i]).cumsum(0) ** 2).mean() for i in range(2)]
    assert float(emd2(p, t)) == pytest.approx(float(sum(hand) / 2), rel=1e-5)
    assert math.isfinite(distribution_metrics(p, t)["emd2"])


def test_half_precision_zero_levels_give_numbers_not_nan() -> None:
    z = torch.tensor([[0.0, 0.5, 0.5]], dtype=torch.float16)
    for measure in (clark, canberra, kl_divergence):
        value = measure(z, z)
        assert value.dtype == torch.float16 and float(value) == 0.0, measure.__name__


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_correlations_in_half_precision_are_not_zero(dtype: torch.dtype) -> None:
    x = torch.linspace(0, 1, 50)
    pred = torch.stack([0.45 + 0.1 * x, 0.55 - 0.1 * x], 1)
    target = torch.stack([x, 1 - x], 1)
    assert float(lcc(pred.to(dtype), target.to(dtype), positions=[1.0, 10.0])) == pytest.approx(
        1.0, abs=1e-2
    )
    assert float(srcc(pred.to(dtype), target.to(dtype), positions=[1.0, 10.0])) > 0.9
    q = torch.stack([torch.linspace(0, 1, 400), 1 - torch.linspace(0, 1, 400)], 1).to(dtype)
    assert float(lcc(q, q, positions=[0.0, 100.0])) == pytest.approx(1.0, abs=1e-2)


def test_tied_mean_scores_are_ranked_as_ties() -> None:
    # 22/6 from two different vote histograms: a matrix product rounded them apart.
    target = (
        torch.tensor(
            [[0, 0, 0, 2, 4], [0, 0, 1, 0, 5], [6, 0, 0, 0, 0], [0, 3, 3, 0, 0]],
            dtype=torch.float64,
        )
        / 6
    )
    pred = torch.tensor(
        [
            [0.1, 0.1, 0.2, 0.3, 0.3],
            [0.2] * 5,
            [0.6, 0.1, 0.1, 0.1, 0.1],
            [0.3, 0.3, 0.2, 0.1, 0.1],
        ],
        dtype=torch.float64,
    )
    # The oracle ranks the predicted means (2.6, 2.0, 1.0, 1.4) against the exact target means.
    exact = stats.spearmanr(pred.numpy() @ np.arange(5.0), [22 / 6, 22 / 6, 0.0, 1.5]).statistic
    assert float(srcc(pred, target)) == pytest.approx(exact, abs=1e-12)


def test_srcc_does_not_depend_on_the_batches() -> None:
    g = torch.Generator().manual_seed(5)
    votes = torch.distributions.Multinomial(6, torch.tensor([0.1, 0.2, 0.4, 0.2, 0.1])).sample(
        (101,)
    )
    target = votes.double() / 6
    pred = torch.randn(101, 5, generator=g, dtype=torch.float64).softmax(1)
    whole = distribution_metrics(pred, target)["srcc"]
    metric = DistributionMetrics(5)
    for lo, hi in ((0, 7), (7, 30), (30, 37), (37, 101)):
        metric.update(pred[lo:hi], target[lo:hi])
    assert float(metric.compute()["srcc"]) == whole
    mu_p = (pred * torch.arange(5.0, dtype=torch.float64)).sum(1).numpy()
    mu_t = (votes.double() @ torch.arange(5.0, dtype=torch.float64)).numpy()  # exact integers
    assert whole == pytest.approx(stats.spearmanr(mu_p, mu_t).statistic, abs=1e-12)


@pytest.mark.parametrize("measure", [clark, nima_emd, mean_score_rmse])
def test_gradient_where_the_prediction_equals_the_target_is_finite(measure: Any) -> None:
    q = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]], dtype=torch.float64, requires_grad=True)
    measure(q, q.detach().clone()).backward()
    assert q.grad is not None and bool(torch.isfinite(q.grad).all())


# ---------------------------------------------------------------------------------------------
# gradients (the smooth measures may serve as losses)
# ---------------------------------------------------------------------------------------------
SMOOTH = [kl_divergence, emd2, nima_emd, clark, canberra, cosine_similarity]
PIECEWISE = [chebyshev, intersection, mean_score_mae]


@pytest.mark.parametrize("measure", SMOOTH + PIECEWISE, ids=lambda f: f.__name__)
def test_gradcheck_through_a_softmax(measure: object) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(4, 5, generator=g, dtype=torch.float64) + 0.05
    target = target / target.sum(1, keepdim=True)

    def f(x: torch.Tensor) -> torch.Tensor:
        return measure(x.softmax(1), target)  # type: ignore[operator]

    assert torch.autograd.gradcheck(f, (logits,))
    if measure in SMOOTH:
        assert torch.autograd.gradgradcheck(f, (logits,))


def test_gradcheck_lcc_and_mean_rmse() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.distributions.Dirichlet(torch.ones(4, dtype=torch.float64)).sample((6,))
    assert torch.autograd.gradcheck(lambda x: lcc(x.softmax(1), target), (logits,))
    assert torch.autograd.gradcheck(lambda x: mean_score_rmse(x.softmax(1), target), (logits,))


# ---------------------------------------------------------------------------------------------
# bad input: one UserError naming the value
# ---------------------------------------------------------------------------------------------
def test_bad_input_is_a_user_error_naming_the_value() -> None:
    good = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
    cases = [
        (torch.tensor([[0.5, 0.6], [0.2, 0.8]]), good, r"probs row 0 sums to 1\.1, expected 1"),
        (good, torch.tensor([[0.5, 0.5], [2.0, 3.0]]), r"target row 1 sums to 5.*not counts"),
        (torch.tensor([[1.5, -0.5], [0.2, 0.8]]), good, r"probs\[0, 1\] = -0\.5 is negative"),
        (good, torch.tensor([[0.5, 0.5], [math.nan, 1.0]]), r"target row 1 is not finite: \[nan"),
        (torch.full((2, 3), 1 / 3), good, r"same shape \(N, C\), got \(2, 3\) and \(2, 2\)"),
        (torch.tensor([0.5, 0.5]), good, r"probs must be 2-D \(N, C\), got shape \(2,\)"),
        (torch.ones(2, 1), torch.ones(2, 1), r"C >= 2 classes, got \(2, 1\)"),
        (torch.empty(0, 3), torch.empty(0, 3), r"N >= 1 rows"),
        (torch.tensor([[1, 0]]), torch.tensor([[1, 0]]), r"floating-point.*torch\.int64"),
    ]
    for pred, target, message in cases:
        for f in (chebyshev, kl_divergence, emd2, distribution_metrics):
            with pytest.raises(UserError, match=message):
                f(pred, target)  # type: ignore[operator]
    with pytest.raises(UserError, match=r"reduction must be .*got 'avg'"):
        kl_divergence(good, good, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="strictly increasing"):
        distribution_metrics(good, good, positions=[1.0, 0.0])
    with pytest.raises(UserError, match="3 entries but num_classes is 2"):
        lcc(good, good, positions=[0.0, 1.0, 2.0])
    metric = DistributionMetrics(3)
    with pytest.raises(UserError, match="2 levels but num_classes is 3"):
        metric.update(good, good)
    with pytest.raises(UserError, match="row 0 sums to"):
        metric.update(torch.tensor([[0.5, 0.6, 0.1]]), torch.tensor([[0.5, 0.5, 0.0]]))
    with pytest.raises(UserError, match="num_classes must be an integer >= 2, got 1"):
        DistributionMetrics(1)


# ---------------------------------------------------------------------------------------------
# noise floor
# ---------------------------------------------------------------------------------------------
def _exact_floor_one_item(counts: list[int], key: str) -> float:
    """E over all multinomial histograms of the measure of c/n against the histogram."""
    from itertools import product

    n, c = sum(counts), len(counts)
    q = np.asarray(counts, dtype=float) / n
    total = 0.0
    for cell in product(range(n + 1), repeat=c):
        if sum(cell) != n:
            continue
        prob = stats.multinomial.pmf(cell, n, q)
        if prob == 0:
            continue
        t = torch.tensor([cell], dtype=torch.float64) / n
        total += prob * distribution_metrics(torch.from_numpy(q[None]), t)[key]
    return total


def test_noise_floor_matches_hand_computation_on_two_votes() -> None:
    # one item, votes (1, 1): the resample is (1, 0), (.5, .5), (0, 1) w.p. 1/4, 1/2, 1/4
    floor = noise_floor(torch.tensor([[1, 1]]), draws=4000, seed=3)
    hand = {
        "chebyshev": 0.5 * 0.5,  # |0.5 - 1| on half the draws
        "intersection": 0.5 * 0.5 + 0.5 * 1.0,
        "kl": 0.5 * math.log(2),  # KL((1, 0) || (.5, .5)) = ln 2 (the clipped 0 adds ~1e-14)
        "emd2": 0.5 * (0.5**2 / 2),  # CDF difference 0.5 at the first level, 1/C = 1/2
        "mean_mae": 0.5 * 0.5,
        "mode_accuracy": 0.75,  # the predicted mode (first argmax: level 0) misses (0, 1)
    }
    for key, value in hand.items():
        assert value == pytest.approx(_exact_floor_one_item([1, 1], key), abs=1e-12), key
        assert abs(floor.mean[key] - value) <= 4 * floor.se[key] + 1e-12, key
    assert floor.se["chebyshev"] == pytest.approx(0.25 / math.sqrt(4000), rel=0.05)


def test_noise_floor_is_exact_for_one_vote_and_vanishes_with_many() -> None:
    one = noise_floor(torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 1]]), draws=20, seed=0)
    for key in ("chebyshev", "clark", "canberra", "kl", "emd2", "nima_emd", "mean_mae"):
        assert one.mean[key] == 0.0 and one.sd[key] == 0.0, key
    for key in ("cosine", "intersection", "mode_accuracy", "lcc", "srcc"):
        assert one.mean[key] == pytest.approx(1.0), key
    g = torch.Generator().manual_seed(0)
    q = torch.rand(30, 5, generator=g) + 0.1
    q = q / q.sum(1, keepdim=True)
    few = noise_floor((q * 20).round(), draws=50, seed=0)
    many = noise_floor((q * 2_000_000).round(), draws=50, seed=0)
    for key in ("chebyshev", "clark", "canberra", "kl", "emd2", "nima_emd", "mean_mae"):
        assert many.mean[key] < 1e-2 * few.mean[key], key
        assert many.mean[key] < 1e-2, key
    assert many.mean["lcc"] > 0.999 and many.mean["intersection"] > 0.999
    # KL against the chi-square approximation (C - 1) / (2n), C = 5: n = 20 and n = 2e6
    assert few.mean["kl"] == pytest.approx(4 / 40, rel=0.3)
    assert many.mean["kl"] == pytest.approx(4 / 4e6, rel=0.1)


def test_pseudocount_gives_every_level_mass_in_the_truth() -> None:
    counts = torch.tensor([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 1]])  # levels without votes
    plain = noise_floor(counts, draws=400, seed=0)
    smooth = noise_floor(counts, draws=400, seed=0, pseudocount=0.5)
    # the smoothed truth predicts mass on unvoted levels: Canberra charges each such level fully
    assert smooth.mean["canberra"] > plain.mean["canberra"] + 1.0
    assert smooth.mean["kl"] > plain.mean["kl"]
    # one vote: the plug-in floor is perfect, the smoothed one is not
    one = torch.tensor([[0, 1, 0]])
    assert noise_floor(one, draws=5).mean["chebyshev"] == 0.0
    # truth (c + 1/2) / (n + C/2) = (.2, .6, .2); one vote lands on level 0, 1, 2 w.p. .2, .6, .2
    # and Chebyshev is then .8, .4, .8: expected .56
    smoothed = noise_floor(one, draws=4000, seed=2, pseudocount=0.5)
    assert abs(smoothed.mean["chebyshev"] - 0.56) <= 4 * smoothed.se["chebyshev"]
    with pytest.raises(UserError, match="pseudocount must be a finite number >= 0, got -1"):
        noise_floor(one, pseudocount=-1)


def test_noise_floor_is_deterministic_under_a_seed() -> None:
    counts = torch.tensor([[3, 1, 0, 2], [0, 5, 5, 0], [1, 1, 1, 1]])
    a = noise_floor(counts, draws=30, seed=7)
    b = noise_floor(counts.numpy(), draws=30, seed=7)
    c = noise_floor(counts, draws=30, seed=8)
    assert a == b
    assert a.mean != c.mean
    assert tuple(a.mean) == DISTRIBUTION_METRIC_KEYS
    assert (a.items, a.draws, a.mean_votes) == (3, 30, 20 / 3)


def test_noise_floor_bad_counts_name_the_cell() -> None:
    with pytest.raises(UserError, match=r"counts\[0, 1\] = 1\.5 is not a vote count"):
        noise_floor([[1.0, 1.5]])
    with pytest.raises(UserError, match=r"counts\[1, 0\] = -1 is not a vote count"):
        noise_floor([[1, 1], [-1, 2]])
    with pytest.raises(UserError, match="counts row 1 has no votes"):
        noise_floor([[1, 1], [0, 0]])
    with pytest.raises(UserError, match=r"counts\[0, 0\] = nan is not finite"):
        noise_floor([[math.nan, 1.0]])
    with pytest.raises(UserError, match="draws must be an integer >= 2, got 1"):
        noise_floor([[1, 1]], draws=1)
