"""Decoding rules against brute-force risk minimisation in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emdloss.decoding import (
    RULES,
    decode,
    decode_argmax,
    decode_bayes,
    decode_expected,
    decode_median,
)
from emdloss.ground import ordinal_ground_distance


def random_probs(seed: int, n: int, c: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    alpha = rng.choice([0.1, 0.5, 2.0], size=(n, 1))  # peaked to flat distributions
    return rng.dirichlet(np.ones(c), size=n) ** (1 / alpha)  # normalised by the callers


def normalised(p: np.ndarray) -> np.ndarray:
    return p / p.sum(axis=1, keepdims=True)


def risks(p: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """risk[n, j] = sum_i p[n, i] cost[i, j], by explicit loops (the brute-force oracle)."""
    n, c = p.shape
    out = np.zeros((n, c))
    for s in range(n):
        for j in range(c):
            out[s, j] = sum(p[s, i] * cost[i, j] for i in range(c))
    return out


@pytest.mark.parametrize("c", [2, 5, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_rules_attain_the_minimum_risk_of_their_metric(c: int, seed: int) -> None:
    p = normalised(random_probs(seed, 200, c))
    idx = np.arange(c, dtype=np.float64)
    pt = torch.tensor(p)
    cases = {
        "argmax": 1.0 - np.eye(c),  # 0/1 loss: accuracy
        "median": np.abs(idx[:, None] - idx[None]),  # absolute error
        "expected": (idx[:, None] - idx[None]) ** 2,  # squared error
    }
    for rule, cost in cases.items():
        r = risks(p, cost)
        pred = decode(pt, rule).numpy()
        assert pred.dtype == np.int64
        np.testing.assert_allclose(
            r[np.arange(len(p)), pred], r.min(axis=1), atol=1e-12, err_msg=rule
        )
        # The same minimum through the Bayes rule with that cost.
        bayes = decode(pt, "bayes", ground_distance=torch.tensor(cost)).numpy()
        np.testing.assert_allclose(r[np.arange(len(p)), bayes], r.min(axis=1), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bayes_matches_brute_force_for_any_cost(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = 6
    p = normalised(random_probs(seed, 100, c))
    cost = rng.normal(size=(c, c))
    r = risks(p, cost)
    got = decode_bayes(torch.tensor(p, dtype=torch.float32), torch.tensor(cost)).numpy()
    np.testing.assert_array_equal(got, r.argmin(axis=1))


def test_median_definition_and_positions_invariance() -> None:
    p = normalised(random_probs(3, 300, 7))
    cdf = np.cumsum(p, axis=1)
    expected = np.array([np.flatnonzero(row >= 0.5)[0] for row in cdf])
    got = decode_median(torch.tensor(p)).numpy()
    np.testing.assert_array_equal(got, expected)
    # Any increasing positions: the median still minimises the expected absolute error.
    x = np.cumsum(np.random.default_rng(0).uniform(0.1, 5.0, size=7))
    r = risks(p, np.abs(x[:, None] - x[None]))
    np.testing.assert_allclose(r[np.arange(300), got], r.min(axis=1), atol=1e-12)


def test_expected_with_positions_minimises_squared_error_in_those_units() -> None:
    p = normalised(random_probs(4, 300, 8))
    x = np.array([1.0, 5.0, 10.5, 17.5, 28.5, 40.5, 50.5, 70.0])  # Adience age-group midpoints
    got = decode_expected(torch.tensor(p), positions=x).numpy()
    r = risks(p, (x[:, None] - x[None]) ** 2)
    np.testing.assert_allclose(r[np.arange(300), got], r.min(axis=1), atol=1e-9)
    mean = p @ x
    np.testing.assert_array_equal(got, np.abs(mean[:, None] - x[None]).argmin(axis=1))


def test_hand_cases_ties_and_shapes() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [0.0, 0.0, 1.0]])
    assert decode_argmax(p).tolist() == [0, 2, 2]
    assert decode_median(p).tolist() == [0, 1, 2]  # CDF exactly 0.5 at k = 0 -> 0
    assert decode_expected(p).tolist() == [0, 1, 2]  # 0.5 rounds to even (0), 1.25 -> 1
    # Class axis 1 of (N, C, H, W), and any dim.
    grid = torch.softmax(torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0)), 1)
    for rule in ("argmax", "median", "expected"):
        out = decode(grid, rule)
        assert out.shape == (2, 3, 5)
        flat = decode(grid.movedim(1, -1).reshape(-1, 4), rule)
        assert torch.equal(out.reshape(-1), flat)
        assert torch.equal(decode(grid.movedim(1, -1), rule, dim=-1), out)
    cost = ordinal_ground_distance(4)
    assert decode(grid, "bayes", ground_distance=cost).shape == (2, 3, 5)
    assert decode(torch.tensor([0.2, 0.8]), "argmax", dim=0).shape == ()


def test_learned_matrix_is_not_a_decision_cost() -> None:
    """Documented pitfall: with the learned matrix (diagonal 1, near classes < 0) bayes avoids
    the most probable class."""
    from emdloss.ground import LearnedGroundDistance

    m = LearnedGroundDistance(5).matrix
    p = torch.tensor([[0.02, 0.02, 0.92, 0.02, 0.02]])
    assert int(decode_bayes(p, m)) != 2
    assert int(decode_bayes(p, ordinal_ground_distance(5))) == 2


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.tensor([[0.5, 0.5]]), "mode"), {}, ValueError, "'mode'"),
        ((torch.tensor([[2.0, -1.0]]), "argmax"), {}, ValueError, "non-negative, got -1.0"),
        ((torch.tensor([[0.2, 0.2]]), "median"), {}, ValueError, "sum to 1"),
        ((torch.tensor([[float("nan"), 1.0]]), "median"), {}, ValueError, "finite"),
        ((torch.tensor([[1, 0]]), "argmax"), {}, TypeError, "floating"),
        ((torch.tensor([[0.5, 0.5]]), "bayes"), {}, ValueError, "needs ground_distance"),
        (
            (torch.tensor([[0.5, 0.5]]), "argmax"),
            {"ground_distance": torch.ones(2, 2)},
            ValueError,
            "only used by rule='bayes'",
        ),
        (
            (torch.tensor([[0.5, 0.5]]), "bayes"),
            {"ground_distance": torch.ones(3, 3)},
            ValueError,
            r"\(2, 2\).*\(3, 3\)",
        ),
        (
            (torch.tensor([[0.5, 0.5]]), "expected"),
            {"positions": [1.0, 0.0]},
            ValueError,
            "strictly increasing",
        ),
        ((torch.tensor([[0.5, 0.5]]), "median"), {"positions": [0.0, 1.0]}, ValueError, "only"),
        ((torch.tensor([[0.5, 0.5]]), "argmax"), {"dim": 2}, ValueError, "dim=2"),
    ],
)
def test_bad_input(
    args: tuple[object, ...], kwargs: dict[str, object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        decode(*args, **kwargs)  # type: ignore[arg-type]


def test_rules_tuple() -> None:
    assert RULES == ("argmax", "median", "expected", "bayes")
