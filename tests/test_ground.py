"""Ground distances: fixed ordinal ones and the authors' learned matrix, against SciPy oracles."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from emdloss.ground import (
    LearnedGroundDistance,
    centroid_ground_distance,
    ordinal_ground_distance,
    row_percentile_ranks,
)


def scipy_cost_matrix(
    features: np.ndarray, labels: np.ndarray, num_classes: int, mu: float, omega: float, mode: str
) -> np.ndarray:
    """Independent re-implementation of the authors' update_cost_matrix with NumPy/SciPy."""
    percentileofscore = pytest.importorskip("scipy.stats").percentileofscore
    cdist = pytest.importorskip("scipy.spatial.distance").cdist
    normed = features / np.abs(features).sum(axis=1, keepdims=True)
    cents = np.stack([normed[labels == k].mean(axis=0) for k in range(num_classes)])
    dists = cdist(cents, cents, metric="euclidean")
    if mode == "rank":
        r = np.array(
            [
                [
                    percentileofscore(dists[i], dists[i, j], kind="rank") / 100.0
                    for j in range(len(dists))
                ]
                for i in range(len(dists))
            ]
        )
    else:
        r = dists / dists.max(axis=1, keepdims=True)
    r = r**omega
    cm = (r + r.T) / 2.0 - mu
    np.fill_diagonal(cm, 1.0)
    return cm


# -- ordinal_ground_distance ----------------------------------------------------------------


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0, 3.0])
def test_ordinal_ground_distance_matches_scipy_cdist(power: float) -> None:
    cdist = pytest.importorskip("scipy.spatial.distance").cdist
    x = np.array([0.5, 1.0, 4.0, 4.5, 10.0])
    expected = cdist(x[:, None], x[:, None], metric="cityblock") ** power
    got = ordinal_ground_distance(5, positions=torch.tensor(x), power=power)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    default = ordinal_ground_distance(4, power=power)
    idx = np.arange(4.0)
    np.testing.assert_allclose(default.numpy(), np.abs(idx[:, None] - idx[None]) ** power)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"positions": [0.0, 2.0, 1.0]}, "strictly increasing"),
        ({"positions": [0.0, 1.0]}, r"length C=3, got shape \(2,\)"),
        ({"positions": [0.0, float("nan"), 2.0]}, "finite"),
        ({"power": 0.0}, "power"),
        ({"power": float("inf")}, "power"),
    ],
)
def test_ordinal_ground_distance_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ordinal_ground_distance(3, **kwargs)  # type: ignore[arg-type]


def test_ordinal_ground_distance_bad_num_classes() -> None:
    with pytest.raises(ValueError, match="got 0"):
        ordinal_ground_distance(0)
    with pytest.raises(TypeError):
        ordinal_ground_distance(3.0)  # type: ignore[arg-type]


# -- rank normalisation ---------------------------------------------------------------------


def scipy_ranks(values: np.ndarray) -> np.ndarray:
    percentileofscore = pytest.importorskip("scipy.stats").percentileofscore
    return np.array(
        [[percentileofscore(row, v, kind="rank") / 100.0 for v in row] for row in values]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_row_percentile_ranks_matches_scipy_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 4, size=(7, 9)).astype(np.float64)  # many ties
    np.testing.assert_allclose(
        row_percentile_ranks(torch.tensor(values)).numpy(), scipy_ranks(values), rtol=1e-12
    )
    values = rng.normal(size=(6, 11))
    np.testing.assert_allclose(
        row_percentile_ranks(torch.tensor(values)).numpy(), scipy_ranks(values), rtol=1e-12
    )


def test_row_percentile_ranks_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        row_percentile_ranks(torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        row_percentile_ranks(torch.tensor([[0.0, float("nan")]]))


@pytest.mark.parametrize(
    ("mu", "omega", "row"),
    [
        (0.5, 1.0, [-0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, 0.5]),
        (0.25, 2.0, [-0.234, -0.1875, -0.109, 0.0, 0.141, 0.3125, 0.516, 0.75]),
    ],
)
def test_rank_normalisation_reproduces_reference_rows_c8(
    mu: float, omega: float, row: list[float]
) -> None:
    """reference.md 1.3: row values for C = 8 before symmetrisation (printed to 3 decimals)."""
    rng = np.random.default_rng(3)
    distances = rng.permutation(np.linspace(0.0, 3.0, 8))[None, :]  # distinct, 0 included
    got = row_percentile_ranks(torch.tensor(distances)) ** omega - mu
    got_sorted = np.sort(got.numpy()[0])
    np.testing.assert_allclose(got_sorted, row, atol=6e-4)
    # The end rows of the ordinal prior are exactly such rows; after symmetrisation they match
    # the symmetrised oracle.
    cdist = pytest.importorskip("scipy.spatial.distance").cdist
    ground = LearnedGroundDistance(8, mu=mu, omega=omega)
    pos = np.arange(8.0)[:, None]
    oracle_r = scipy_ranks(cdist(pos, pos)) ** omega
    oracle = (oracle_r + oracle_r.T) / 2 - mu
    np.fill_diagonal(oracle, 1.0)
    np.testing.assert_allclose(ground.matrix.double().numpy(), oracle, atol=1e-6)
    np.testing.assert_allclose(oracle_r[0] - mu, np.array(got_sorted), atol=1e-12)


# -- LearnedGroundDistance against the SciPy re-implementation -------------------------------


@pytest.mark.parametrize(
    ("mu", "omega", "mode"), [(0.5, 1.0, "rank"), (0.25, 2.0, "rank"), (0.3, 1.5, "raw")]
)
def test_learned_matrix_matches_scipy_oracle(mu: float, omega: float, mode: str) -> None:
    rng = np.random.default_rng(11)
    c, n, f = 6, 120, 10
    feats = np.maximum(rng.normal(size=(n, f)), 0.0) + 1e-3  # post-ReLU-like, no all-zero rows
    labels = np.arange(n) % c
    rng.shuffle(labels)
    ground = LearnedGroundDistance(c, mu=mu, omega=omega, mode=mode)  # type: ignore[arg-type]
    for chunk in np.array_split(np.arange(n), 4):  # accumulated over several batches
        ground.update(torch.tensor(feats[chunk]).float(), torch.tensor(labels[chunk]))
    got = ground.compute()
    expected = scipy_cost_matrix(
        feats.astype(np.float32).astype(np.float64), labels, c, mu, omega, mode
    )
    np.testing.assert_allclose(got.double().numpy(), expected, atol=1e-6)
    assert torch.equal(got, got.T)
    assert torch.equal(ground.matrix, got)


@pytest.mark.parametrize(
    ("mu", "omega", "mode"), [(0.5, 1.0, "rank"), (0.25, 2.0, "rank"), (0.5, 1.0, "raw")]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_centroids_on_a_line_recover_the_order(
    mu: float, omega: float, mode: str, seed: int
) -> None:
    """Class centroids on a line in a known (shuffled) order: each row grows away from its class."""
    rng = np.random.default_rng(seed)
    c, f, per_class = 7, 12, 40
    a = rng.uniform(size=f)
    b = rng.uniform(size=f)
    b *= a.sum() / b.sum()  # same L1 norm: normalised points stay on the segment a -> b in order
    order = rng.permutation(c)  # class order[k] sits at the k-th position on the line
    t = np.empty(c)
    t[order] = np.sort(rng.uniform(0.05, 0.95, size=c)) + np.arange(c) * 0.3
    t = (t - t.min()) / (t.max() - t.min())
    labels = np.repeat(np.arange(c), per_class)
    points = (1 - t[labels])[:, None] * a + t[labels][:, None] * b
    feats = np.maximum(points + rng.normal(scale=1e-4, size=points.shape), 0.0)
    ground = LearnedGroundDistance(c, mu=mu, omega=omega, mode=mode)  # type: ignore[arg-type]
    ground.update(torch.tensor(feats, dtype=torch.float32), torch.tensor(labels))
    m = ground.compute().double().numpy()
    along = m[np.ix_(order, order)]  # rows and columns in line order
    for i in range(c):
        right = along[i, i + 1 :]
        left = along[i, :i][::-1]
        assert np.all(np.diff(right) > 0), (i, right)
        assert np.all(np.diff(left) > 0), (i, left)
        others = np.delete(np.arange(c), i)
        cheapest = others[np.argmin(along[i, others])]
        assert abs(cheapest - i) == 1


def test_paper_settings_give_negative_costs_to_near_classes() -> None:
    ground = LearnedGroundDistance(8, mu=0.5, omega=1.0)
    pos = torch.arange(8.0)[:, None]
    feats = torch.cat([pos, 7.0 - pos], dim=1) + 0.5
    ground.update(feats, torch.arange(8))
    m = ground.compute()
    assert float(m[0, 1]) < 0 < float(m[0, 7])
    assert torch.all(m.diagonal() == 1)


# -- absent classes, momentum, state -------------------------------------------------------------


def test_absent_classes_keep_their_prior_rows_and_produce_no_nan() -> None:
    ground = LearnedGroundDistance(5)
    prior = ground.matrix.clone()
    assert torch.equal(ground.compute(), prior)  # nothing seen: unchanged
    assert int(ground.num_computes) == 0
    rng = np.random.default_rng(0)
    feats = torch.tensor(rng.uniform(size=(30, 4)), dtype=torch.float32)
    labels = torch.tensor([0, 2, 3] * 10)
    ground.update(feats, labels)
    m = ground.compute()
    assert torch.isfinite(m).all()
    absent = [1, 4]
    present = [0, 2, 3]
    assert torch.equal(m[absent], prior[absent])
    assert torch.equal(m[:, absent], prior[:, absent])
    expected = scipy_cost_matrix(
        feats.double().numpy(), np.array([0, 1, 2] * 10), 3, 0.5, 1.0, "rank"
    )
    np.testing.assert_allclose(m[np.ix_(present, present)].double().numpy(), expected, atol=1e-6)


def test_single_present_class_and_uniform_prior() -> None:
    ground = LearnedGroundDistance(4, prior="uniform")
    off = ground.matrix[~torch.eye(4, dtype=torch.bool)]
    assert torch.allclose(off, off[0].expand_as(off))  # no order in the uniform prior
    prior = ground.matrix.clone()
    ground.update(torch.ones(3, 2), torch.tensor([1, 1, 1]))
    assert torch.equal(ground.compute(), prior)  # the lone class's diagonal is 1 anyway
    ground.update(torch.eye(2).repeat(2, 1), torch.tensor([0, 2, 0, 2]))
    assert not torch.equal(ground.compute(), prior)
    assert int(ground.num_computes) == 2
    ground.reset(matrix=True)  # back to the constructor's prior, statistics cleared
    assert torch.equal(ground.matrix, prior)
    assert int(ground.num_computes) == 0 and float(ground.class_counts.sum()) == 0


def test_momentum_blends_after_the_first_compute() -> None:
    rng = np.random.default_rng(5)
    c = 4
    batches = [
        (torch.tensor(rng.uniform(size=(20, 3)), dtype=torch.float32), torch.arange(20) % c)
        for _ in range(2)
    ]
    plain = LearnedGroundDistance(c)
    ema = LearnedGroundDistance(c, momentum=0.25)
    results = []
    for feats, labels in batches:
        plain.reset()
        plain.update(feats, labels)
        results.append(plain.compute())
        ema.reset()
        ema.update(feats, labels)
        got = ema.compute()
    assert torch.allclose(got, 0.75 * results[0] + 0.25 * results[1], atol=1e-6)
    assert not torch.allclose(results[0], results[1])


def test_state_dict_round_trip_with_lazy_feature_dim() -> None:
    rng = np.random.default_rng(2)
    src = LearnedGroundDistance(3, mu=0.25, omega=2.0)
    src.update(torch.tensor(rng.uniform(size=(12, 5)), dtype=torch.float32), torch.arange(12) % 3)
    src.compute()
    src.update(torch.tensor(rng.uniform(size=(6, 5)), dtype=torch.float32), torch.arange(6) % 3)
    buffer = io.BytesIO()
    torch.save(src.state_dict(), buffer)
    buffer.seek(0)
    dst = LearnedGroundDistance(3, mu=0.25, omega=2.0)
    assert dst.feature_dim is None
    dst.load_state_dict(torch.load(buffer))
    assert dst.feature_dim == 5
    for name, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[name], value), name
    assert torch.equal(dst.compute(), src.compute())
    fixed = LearnedGroundDistance(3, feature_dim=4)
    with pytest.raises(RuntimeError, match="feature_sums"):
        fixed.load_state_dict(src.state_dict())


def test_soft_labels_ignore_index_and_zero_features() -> None:
    rng = np.random.default_rng(4)
    feats = torch.tensor(rng.uniform(size=(16, 3)), dtype=torch.float32)
    labels = torch.arange(16) % 4
    hard = LearnedGroundDistance(4)
    hard.update(feats, labels)
    soft = LearnedGroundDistance(4)
    soft.update(feats, torch.nn.functional.one_hot(labels, 4).float())
    assert torch.allclose(hard.feature_sums, soft.feature_sums)
    assert torch.equal(hard.class_counts, soft.class_counts)
    # Ignored labels and all-zero feature rows change nothing.
    extra = LearnedGroundDistance(4)
    extra.update(
        torch.cat([feats, torch.ones(2, 3), torch.zeros(1, 3)]),
        torch.cat([labels, torch.tensor([-100, -100, 2])]),
    )
    assert torch.allclose(extra.feature_sums, hard.feature_sums)
    assert torch.equal(extra.class_counts, hard.class_counts)


def test_signed_features_normalised_by_l1_norm_when_allowed() -> None:
    rng = np.random.default_rng(8)
    feats = rng.normal(size=(40, 6))
    labels = np.arange(40) % 4
    ground = LearnedGroundDistance(4, require_nonnegative=False)
    ground.update(torch.tensor(feats), torch.tensor(labels))
    expected = scipy_cost_matrix(feats, labels, 4, 0.5, 1.0, "rank")
    np.testing.assert_allclose(ground.compute().double().numpy(), expected, atol=1e-6)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mu": 1.0}, r"mu must be in \[0, 1\), got 1.0"),
        ({"mu": -0.1}, r"got -0.1"),
        ({"mu": float("nan")}, "mu"),
        ({"omega": 0.0}, "omega must be a finite number > 0, got 0.0"),
        ({"omega": -2.0}, "got -2.0"),
        ({"omega": float("inf")}, "omega"),
        ({"mode": "ranks"}, "'ranks'"),
        ({"momentum": 0.0}, "momentum"),
        ({"momentum": 1.5}, "1.5"),
        ({"feature_dim": 0}, "feature_dim"),
        ({"prior": "flat"}, "'flat'"),
        ({"prior": torch.zeros(2, 2)}, r"\(3, 3\)"),
    ],
)
def test_constructor_rejects_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LearnedGroundDistance(3, **kwargs)  # type: ignore[arg-type]


def test_update_rejects_bad_input() -> None:
    ground = LearnedGroundDistance(3)
    good = torch.rand(4, 2)
    with pytest.raises(ValueError, match=r"non-negative.*-0.5"):
        ground.update(torch.tensor([[1.0, -0.5]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[0, 2\].*got 3"):
        ground.update(good, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="got -1"):
        ground.update(good, torch.tensor([0, -1, 1, 0]))
    with pytest.raises(ValueError, match="finite"):
        ground.update(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        ground.update(torch.rand(4), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="N=4"):
        ground.update(good, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        ground.update(good, torch.tensor([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        ground.update(good, torch.rand(4, 2))
    # Nothing was accumulated by the failed calls.
    assert ground.feature_dim is None and float(ground.class_counts.sum()) == 0
    ground.update(good, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="feature_dim=2"):
        ground.update(torch.rand(4, 3), torch.tensor([0, 1, 2, 0]))


def test_centroid_ground_distance_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(C, F\)"):
        centroid_ground_distance(torch.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        centroid_ground_distance(torch.tensor([[0.0], [float("inf")]]))
    with pytest.raises(ValueError, match="omega"):
        centroid_ground_distance(torch.zeros(2, 1), omega=0.0)


def test_validation_switch_skips_value_checks_but_bad_labels_still_fail() -> None:
    from emdloss._validation import validation

    ground = LearnedGroundDistance(3)
    with validation(False):
        ground.update(torch.tensor([[1.0, -0.5]]), torch.tensor([0]))  # not inspected
        with pytest.raises((IndexError, RuntimeError)):
            ground.update(torch.rand(2, 2), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="non-negative"):
        ground.update(torch.tensor([[1.0, -0.5]]), torch.tensor([0]))
