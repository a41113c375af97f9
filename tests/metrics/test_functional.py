"""emdloss.metrics against scikit-learn, SciPy, dlordinal and hand-derived values.

Named for emdloss.metrics.functional; also covers the stateful metrics (emdloss.metrics.stateful),
DDP included.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

pytest.importorskip("torchmetrics")  # emdloss.metrics' stateful metrics: the train extra
pytest.importorskip("dlordinal")  # oracles
pytest.importorskip("scipy")
pytest.importorskip("sklearn")

from dlordinal import metrics as dlm
from scipy import stats
from sklearn import metrics as skm

from emdloss.metrics import (
    ORDINAL_METRIC_KEYS,
    AverageMAE,
    OneOffAccuracy,
    OrdinalMetrics,
    QuadraticWeightedKappa,
    RankedProbabilityScore,
    accuracy,
    average_mae,
    confusion_matrix,
    mean_absolute_error,
    one_off_accuracy,
    per_class_mae,
    quadratic_weighted_kappa,
    ranked_probability_score,
    root_mean_squared_error,
    spearman,
)


def _sample(seed: int, n: int, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets, probabilities that lean towards the target (so metrics are not trivial), argmax."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (n,), generator=g)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64)
    logits -= 0.7 * (torch.arange(c)[None, :] - target[:, None]).abs()
    probs = logits.softmax(dim=1)
    return target, probs, probs.argmax(dim=1)


CASES = [(0, 40, 2), (1, 57, 3), (2, 64, 5), (3, 90, 8), (4, 13, 5)]


# ---------------------------------------------------------------------------------------------
# functional metrics against independent oracles
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_label_metrics_match_sklearn(seed: int, n: int, c: int) -> None:
    target, _, preds = _sample(seed, n, c)
    t, p = target.numpy(), preds.numpy()
    labels = list(range(c))
    assert float(accuracy(preds, target)) == pytest.approx(skm.accuracy_score(t, p), abs=1e-12)
    assert float(mean_absolute_error(preds, target)) == pytest.approx(
        skm.mean_absolute_error(t, p), abs=1e-12
    )
    assert float(root_mean_squared_error(preds, target)) == pytest.approx(
        math.sqrt(skm.mean_squared_error(t, p)), abs=1e-12
    )
    assert float(quadratic_weighted_kappa(preds, target, num_classes=c)) == pytest.approx(
        skm.cohen_kappa_score(t, p, weights="quadratic", labels=labels), abs=1e-12
    )
    np.testing.assert_array_equal(
        confusion_matrix(preds, target, num_classes=c).numpy(),
        skm.confusion_matrix(t, p, labels=labels),
    )
    assert float(one_off_accuracy(preds, target)) == pytest.approx(
        float(np.mean(np.abs(p - t) <= 1)), abs=1e-12
    )


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_position_units_match_sklearn_on_mapped_values(seed: int, n: int, c: int) -> None:
    target, _, preds = _sample(seed, n, c)
    g = np.random.default_rng(seed)
    positions = np.cumsum(g.uniform(0.5, 7.0, size=c))  # uneven gaps, e.g. age midpoints
    pt, pp = positions[target.numpy()], positions[preds.numpy()]
    assert float(mean_absolute_error(preds, target, positions=positions.tolist())) == pytest.approx(
        skm.mean_absolute_error(pt, pp), rel=1e-12
    )
    assert float(
        root_mean_squared_error(preds, target, positions=torch.from_numpy(positions))
    ) == pytest.approx(math.sqrt(skm.mean_squared_error(pt, pp)), rel=1e-12)
    per_class = per_class_mae(preds, target, positions=positions.tolist()).numpy()
    for k in range(c):
        rows = target.numpy() == k
        expected = np.abs(pp[rows] - pt[rows]).mean() if rows.any() else np.nan
        np.testing.assert_allclose(per_class[k], expected, rtol=1e-12)


def test_qwk_numbers_all_classes_even_when_sklearn_would_not() -> None:
    # Class 2 of 0..3 occurs nowhere: sklearn (default labels) makes classes 1 and 3 adjacent.
    target = torch.tensor([0, 1, 3, 3, 1, 0])
    preds = torch.tensor([0, 3, 3, 1, 1, 0])
    ours = float(quadratic_weighted_kappa(preds, target, num_classes=4))
    with_labels = skm.cohen_kappa_score(target, preds, weights="quadratic", labels=[0, 1, 2, 3])
    default = skm.cohen_kappa_score(target, preds, weights="quadratic")
    assert ours == pytest.approx(with_labels, abs=1e-12)
    assert abs(ours - default) > 1e-3  # the documented difference is real


def test_qwk_and_spearman_degenerate_cases_are_zero_not_nan() -> None:
    same = torch.full((6,), 2)
    # all targets and predictions one class: 0/0, sklearn gives NaN, we give 0 ...
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(skm.cohen_kappa_score(same, same, weights="quadratic"))
        assert math.isnan(stats.spearmanr(same, torch.arange(6)).statistic)
    assert float(quadratic_weighted_kappa(same, same, num_classes=5)) == 0.0
    # ... which is the value kappa takes (sklearn included) for any prediction of a single-class
    # target, so the convention is continuous.
    preds = torch.tensor([2, 2, 1, 4, 2, 0])
    assert float(quadratic_weighted_kappa(preds, same)) == pytest.approx(
        skm.cohen_kappa_score(same, preds, weights="quadratic"), abs=1e-12
    )
    assert float(quadratic_weighted_kappa(preds, same)) == pytest.approx(0.0, abs=1e-12)
    assert float(spearman(same, torch.arange(6))) == 0.0
    assert float(spearman(torch.arange(6), same)) == 0.0
    # and the single-sample case is defined everywhere
    one = torch.tensor([1])
    for fn in (accuracy, one_off_accuracy, mean_absolute_error, average_mae):
        assert math.isfinite(float(fn(one, one)))


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_spearman_matches_scipy_with_ties(seed: int, n: int, c: int) -> None:
    target, probs, preds = _sample(seed, n, c)
    expected = stats.spearmanr(preds.numpy(), target.numpy()).statistic
    assert float(spearman(preds, target)) == pytest.approx(expected, abs=1e-12)
    # real-valued scores (expected class) work too
    scores = probs @ torch.arange(c, dtype=torch.float64)
    assert float(spearman(scores, target)) == pytest.approx(
        stats.spearmanr(scores.numpy(), target.numpy()).statistic, abs=1e-12
    )


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_amae_matches_dlordinal_and_hand_computation(seed: int, n: int, c: int) -> None:
    target, _, preds = _sample(seed, n, c)
    t, p = target.numpy(), preds.numpy()
    present = np.unique(t)
    hand = np.mean([np.abs(p[t == k] - k).mean() for k in present])
    assert float(average_mae(preds, target, num_classes=c)) == pytest.approx(hand, abs=1e-12)
    if len(np.union1d(t, p)) == c:  # dlordinal's label-index distances equal ours only then
        assert float(average_mae(preds, target)) == pytest.approx(dlm.amae(t, p), abs=1e-12)
    assert float(one_off_accuracy(preds, target)) == pytest.approx(
        dlm.accuracy_off1(t, p, labels=list(range(c))), abs=1e-12
    )


def test_amae_differs_from_dlordinal_when_a_middle_class_is_absent() -> None:
    # Class 1 of 0..2 occurs nowhere: dlordinal measures |0 - 2| as one step.
    target = torch.tensor([0, 0, 2, 2])
    preds = torch.tensor([2, 0, 2, 2])
    ours = float(average_mae(preds, target, num_classes=3))
    assert ours == pytest.approx((1.0 + 0.0) / 2)  # class 0: errors 2, 0 -> 1; class 2: 0
    assert dlm.amae(target.numpy(), preds.numpy()) == pytest.approx(0.25)


def test_amae_class_absent_from_batch_is_left_out_not_nan() -> None:
    target = torch.tensor([0, 0, 1, 4, 4])  # classes 2 and 3 absent
    preds = torch.tensor([1, 0, 1, 2, 4])
    per_class = per_class_mae(preds, target, num_classes=5)
    assert torch.isnan(per_class[2]) and torch.isnan(per_class[3])
    np.testing.assert_allclose(per_class[[0, 1, 4]].numpy(), [0.5, 0.0, 1.0])
    assert float(average_mae(preds, target, num_classes=5)) == pytest.approx(0.5)


def _rps_by_hand(probs: np.ndarray, target: np.ndarray) -> float:
    """The classical RPS as the textbook writes it, with explicit loops."""
    n, c = probs.shape
    total = 0.0
    for i in range(n):
        for k in range(c - 1):
            cum_p = sum(probs[i, j] for j in range(k + 1))
            cum_t = sum(target[i, j] for j in range(k + 1))
            total += (cum_p - cum_t) ** 2 / (c - 1)
    return total / n


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_rps_matches_hand_computation_and_dlordinal(seed: int, n: int, c: int) -> None:
    target, probs, _ = _sample(seed, n, c)
    onehot = np.eye(c)[target.numpy()]
    rps = float(ranked_probability_score(probs, target))
    assert rps == pytest.approx(_rps_by_hand(probs.numpy(), onehot), rel=1e-12)
    # dlordinal sums the C - 1 terms instead of averaging them
    dl = dlm.ranked_probability_score(target.numpy(), probs.numpy())
    assert rps == pytest.approx(dl / (c - 1), rel=1e-12)
    # soft targets: a one-hot distribution gives the same, a smoothed one the hand value
    assert float(ranked_probability_score(probs, torch.from_numpy(onehot))) == pytest.approx(rps)
    soft = 0.8 * onehot + 0.2 / c
    assert float(ranked_probability_score(probs, torch.from_numpy(soft))) == pytest.approx(
        _rps_by_hand(probs.numpy(), soft), rel=1e-12
    )
    per = ranked_probability_score(probs, target, reduction="none")
    assert per.shape == (n,)
    assert float(ranked_probability_score(probs, target, reduction="sum")) == pytest.approx(
        float(per.sum())
    )


def test_rps_bounds() -> None:
    c = 5
    assert float(ranked_probability_score(torch.eye(c), torch.arange(c))) == 0.0
    worst = torch.zeros(1, c)
    worst[0, 0] = 1.0
    assert float(ranked_probability_score(worst, torch.tensor([c - 1]))) == pytest.approx(1.0)


def test_rps_equals_squared_emd_with_rps_normalization() -> None:
    functional = pytest.importorskip("emdloss.functional")
    target, probs, _ = _sample(7, 30, 6)
    loss = functional.squared_emd(probs, target, input_type="probs", normalization="rps")
    assert float(loss) == pytest.approx(float(ranked_probability_score(probs, target)), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# stateful metrics
# ---------------------------------------------------------------------------------------------
def _functional_all(
    probs: torch.Tensor, target: torch.Tensor, preds: torch.Tensor, c: int
) -> dict[str, float]:
    return {
        "accuracy": float(accuracy(preds, target, num_classes=c)),
        "one_off_accuracy": float(one_off_accuracy(preds, target, num_classes=c)),
        "mae": float(mean_absolute_error(preds, target, num_classes=c)),
        "rmse": float(root_mean_squared_error(preds, target, num_classes=c)),
        "qwk": float(quadratic_weighted_kappa(preds, target, num_classes=c)),
        "rps": float(ranked_probability_score(probs, target)),
        "amae": float(average_mae(preds, target, num_classes=c)),
        "spearman": float(spearman(preds, target)),
    }


@pytest.mark.parametrize(("seed", "n", "c"), CASES)
def test_ordinal_metrics_over_batches_equal_functional_on_all(seed: int, n: int, c: int) -> None:
    target, probs, preds = _sample(seed, n, c)
    metric = OrdinalMetrics(num_classes=c)
    for idx in torch.arange(n).split(11):
        metric.update(probs[idx].float(), target[idx])
    out = metric.compute()
    assert tuple(out) == ORDINAL_METRIC_KEYS == metric.metric_names
    expected = _functional_all(probs, target, preds, c)
    for key in ORDINAL_METRIC_KEYS:
        assert float(out[key]) == pytest.approx(expected[key], abs=1e-6), key
    metric.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about compute() before update()
        with pytest.raises(RuntimeError, match="before any sample"):
            metric.compute()


def test_ordinal_metrics_score_a_given_decoding_and_positions() -> None:
    target, probs, _ = _sample(11, 50, 5)
    other = (probs.cumsum(dim=1) >= 0.5).int().argmax(dim=1)  # the median class
    positions = [1.0, 5.0, 10.5, 17.5, 28.5]
    metric = OrdinalMetrics(5, positions=positions)
    metric.update(probs[:20], target[:20], preds=other[:20])
    metric.update(probs[20:], target[20:], preds=other[20:])
    out = metric.compute()
    assert set(out) == {*ORDINAL_METRIC_KEYS, "mae_pos", "rmse_pos"}
    assert float(out["mae"]) == pytest.approx(float(mean_absolute_error(other, target)))
    assert float(out["qwk"]) == pytest.approx(float(quadratic_weighted_kappa(other, target)))
    assert float(out["rps"]) == pytest.approx(float(ranked_probability_score(probs, target)))
    pos = np.array(positions)
    assert float(out["mae_pos"]) == pytest.approx(
        skm.mean_absolute_error(pos[target.numpy()], pos[other.numpy()])
    )
    assert float(out["rmse_pos"]) == pytest.approx(
        math.sqrt(skm.mean_squared_error(pos[target.numpy()], pos[other.numpy()]))
    )


def test_ordinal_metrics_with_labels_only_has_nan_rps_and_refuses_mixing() -> None:
    target, probs, preds = _sample(12, 20, 4)
    metric = OrdinalMetrics(4)
    metric.update(preds, target)
    out = metric.compute()
    assert math.isnan(float(out["rps"]))
    assert float(out["accuracy"]) == pytest.approx(float(accuracy(preds, target)))
    metric.update(probs, target)
    with pytest.raises(RuntimeError, match="rps covers 20 of 40"):
        metric.compute()
    with pytest.raises(ValueError, match="preds was given twice"):
        metric.update(preds, target, preds=preds)


def test_amae_metric_with_class_absent_from_a_batch() -> None:
    target = torch.tensor([0, 0, 1, 1, 3, 3, 2, 2, 3])
    preds = torch.tensor([0, 1, 1, 3, 3, 2, 0, 2, 3])
    metric = AverageMAE(num_classes=5)
    metric.update(preds[:6], target[:6])  # no class 2 (nor 4) in this batch
    assert math.isfinite(float(metric.compute()))
    metric.update(preds[6:], target[6:])
    assert float(metric.compute()) == pytest.approx(float(average_mae(preds, target)))


@pytest.mark.parametrize(("seed", "n", "c"), CASES[:3])
def test_single_metric_classes_equal_functional(seed: int, n: int, c: int) -> None:
    target, probs, preds = _sample(seed, n, c)
    metrics = {
        "one_off": (OneOffAccuracy(c), one_off_accuracy(preds, target)),
        "amae": (AverageMAE(c), average_mae(preds, target, num_classes=c)),
        "qwk": (QuadraticWeightedKappa(c), quadratic_weighted_kappa(preds, target)),
    }
    rps = RankedProbabilityScore()
    for idx in torch.arange(n).split(9):
        rps.update(probs[idx], target[idx])
        for metric, _ in metrics.values():
            metric.update(probs[idx], target[idx])  # scores are decoded by argmax
    for name, (metric, expected) in metrics.items():
        assert float(metric.compute()) == pytest.approx(float(expected), abs=1e-12), name
    assert float(rps.compute()) == pytest.approx(float(ranked_probability_score(probs, target)))


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_input_is_refused_with_the_offending_value() -> None:
    t = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"same shape.*\(2,\) and \(3,\)"):
        accuracy(torch.tensor([0, 1]), t)
    with pytest.raises(ValueError, match=r"preds\[1\] = 7 is not a class index in \[0, 2\]"):
        mean_absolute_error(torch.tensor([0, 7, 1]), t, num_classes=3)
    with pytest.raises(ValueError, match=r"target\[0\] = -1"):
        quadratic_weighted_kappa(t, torch.tensor([-1, 0, 1]))
    with pytest.raises(TypeError, match=r"integer class indices.*float32"):
        accuracy(torch.tensor([0.0, 1.0, 2.0]), t)
    with pytest.raises(ValueError, match="empty"):
        accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="strictly increasing"):
        mean_absolute_error(t, t, positions=[0.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="3 entries but num_classes is 4"):
        mean_absolute_error(t, t, num_classes=4, positions=[0.0, 1.0, 2.0])
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.2, 0.2], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match=r"row 1 sums to 0\.6.*expected 1"):
        ranked_probability_score(probs, t)
    with pytest.raises(ValueError, match=r"probs\[0, 1\] = -0\.5 is negative"):
        ranked_probability_score(torch.tensor([[1.5, -0.5]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="row 0 is not finite"):
        ranked_probability_score(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"target\[0\] = 3"):
        ranked_probability_score(torch.eye(3)[:1], torch.tensor([3]))
    with pytest.raises(ValueError, match="3 rows but target has 2"):
        ranked_probability_score(torch.eye(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        ranked_probability_score(torch.eye(3), t, reduction="avg")  # type: ignore[arg-type]
    metric = OrdinalMetrics(3)
    with pytest.raises(ValueError, match="4 columns but num_classes is 3"):
        metric.update(torch.full((2, 4), 0.25), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="row 0 sums to"):
        metric.update(torch.tensor([[0.5, 0.6, 0.1]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"target\[0\] = 5"):
        metric.update(torch.eye(3)[:1], torch.tensor([5]))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        OrdinalMetrics(0)


# ---------------------------------------------------------------------------------------------
# DDP: two gloo processes give the values of one process on all the data
# ---------------------------------------------------------------------------------------------
WORK = """
    from emdloss.metrics import OrdinalMetrics


    def work(rank, data):
        probs, target, positions, shards = data
        metric = OrdinalMetrics(probs.shape[1], positions=positions)
        for idx in shards[rank].split(5):  # uneven shards, several batches each
            metric.update(probs[idx], target[idx])
        out = {k: v.clone() for k, v in metric.compute().items()}
        # compute() synchronised and then restored the local states
        out["local_total"] = metric.confmat.sum().clone()
        return out
"""


@pytest.mark.ddp
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)
def test_ddp_two_gloo_processes_match_one_process(two_gloo_ranks: Callable[..., Any]) -> None:
    target, probs, _ = _sample(21, 47, 5)
    target[target == 3] = 2  # class 3 absent everywhere; class 4 only on rank 1 below
    order = torch.argsort(target, stable=True)
    shards = [order[:17], order[17:]]
    positions = [0.0, 1.0, 2.5, 4.0, 8.0]
    outputs = two_gloo_ranks(WORK, (probs.float(), target, positions, shards))
    single = OrdinalMetrics(5, positions=positions)
    single.update(probs.float(), target)
    expected = single.compute()
    for rank, shard in enumerate(shards):
        out = dict(outputs[rank])
        assert int(out.pop("local_total")) == len(shard)
        assert set(out) == set(expected)
        for key, value in expected.items():
            assert float(out[key]) == pytest.approx(float(value), abs=1e-12), (rank, key)
