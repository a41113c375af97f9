"""The loss registry of the training toolkit, checked against peers, SciPy, POT and hand values."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lightning")  # emdloss.training: the train extra

from emdloss.decoding import decode
from emdloss.ground import LearnedGroundDistance
from emdloss.training import LOSS_NAMES
from emdloss.training._peer_losses import cumulative_to_probabilities
from emdloss.training.losses import build_loss, regression_to_probabilities
from emdloss.vocabulary import OUR_LOSS_NAMES, PEER_LOSS_NAMES

C = 5


def _batch(n: int = 7, seed: int = 0, outputs: int = C) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, outputs, generator=g, dtype=torch.float64), torch.randint(
        0, C, (n,), generator=g
    )


def _build(name: str, **kwargs: object) -> torch.nn.Module:
    return build_loss(name, C, train_targets=torch.arange(C).repeat(3), **kwargs)  # type: ignore[arg-type]


def test_registry_names() -> None:
    assert set(OUR_LOSS_NAMES) >= {"ce", "emd2", "w1", "xemd1", "xemd2", "ground", "l2"}
    assert set(PEER_LOSS_NAMES) == {"dlordinal_emd", "triangular", "sord", "corn", "coral"}
    assert LOSS_NAMES == OUR_LOSS_NAMES + PEER_LOSS_NAMES


def test_unknown_loss_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown loss 'emd3'; valid losses: ce, emd2, w1"):
        build_loss("emd3", C)


@pytest.mark.parametrize("bad", [1, 0, 2.0, True])
def test_bad_num_classes(bad: object) -> None:
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build_loss("ce", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "outputs"),
    [
        *[("ce", C), ("emd2", C), ("w1", C), ("xemd1", C), ("ground", C), ("l2", 1)],
        *[("corn", C - 1), ("coral", C - 1), ("sord", C), ("triangular", C)],
    ],
)
def test_num_outputs(name: str, outputs: int) -> None:
    assert _build(name).num_outputs == outputs


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_probabilities_are_distributions_and_loss_is_finite(name: str) -> None:
    loss = _build(name)
    out, y = _batch(outputs=loss.num_outputs)
    out = out * 4  # large outputs: saturated sigmoids and softmaxes
    probs = loss.probabilities(out)
    assert probs.shape == (out.shape[0], C)
    assert bool((probs >= 0).all())
    torch.testing.assert_close(probs.sum(1), torch.ones(out.shape[0], dtype=probs.dtype))
    value = loss(out.float(), y)
    assert value.ndim == 0 and bool(torch.isfinite(value))


@pytest.mark.parametrize("name", ["ce", "emd2", "w1", "ground", "l2", "coral", "corn", "sord"])
def test_gradcheck_float64(name: str) -> None:
    loss = _build(name).double()
    out, y = _batch(n=4, outputs=loss.num_outputs)
    out.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda o: loss(o, y), (out,))


def test_ce_matches_torch_with_hard_and_soft_targets() -> None:
    loss = build_loss("ce", C)
    out, y = _batch()
    torch.testing.assert_close(loss(out, y), F.cross_entropy(out, y))
    dist = torch.softmax(torch.randn(out.shape[0], C, dtype=torch.float64), 1)
    expected = -(dist * torch.log_softmax(out, 1)).sum(1).mean()
    torch.testing.assert_close(loss(out, y, dist), expected)


def test_emd2_is_the_papers_formula_and_dlordinal_up_to_the_constant() -> None:
    out, y = _batch()
    p = torch.softmax(out, 1)
    t = F.one_hot(y, C).double()
    by_hand = ((p.cumsum(1) - t.cumsum(1)) ** 2).sum(1).mean() / C
    torch.testing.assert_close(build_loss("emd2", C)(out, y), by_hand)
    # dlordinal's EMDLoss sums over classes (no 1/C): the peer through our registry.
    torch.testing.assert_close(build_loss("dlordinal_emd", C)(out, y), by_hand * C)


def test_w1_matches_scipy_wasserstein_distance() -> None:
    wasserstein_distance = pytest.importorskip("scipy.stats").wasserstein_distance
    out, y = _batch()
    p = torch.softmax(out, 1).numpy()
    support = np.arange(C)
    expected = np.mean(
        [wasserstein_distance(support, support, p[i], np.eye(C)[int(y[i])]) for i in range(len(y))]
    )
    assert float(build_loss("w1", C)(out, y)) == pytest.approx(expected, rel=1e-9)


def test_ground_with_a_given_matrix_is_the_expected_cost_and_pot_for_soft_targets() -> None:
    ot = pytest.importorskip("ot")
    g = torch.Generator().manual_seed(3)
    matrix = torch.rand(C, C, generator=g, dtype=torch.float64)
    matrix = (matrix + matrix.T) / 2
    matrix.fill_diagonal_(0)
    loss = build_loss("ground", C, ground_distance=matrix)
    out, y = _batch()
    p = torch.softmax(out, 1)
    expected = (p * matrix.float().double()[:, y].T).sum(1).mean()  # one-hot: sum_i p_i D[i, y]
    torch.testing.assert_close(loss(out, y), expected, rtol=1e-6, atol=1e-6)
    dist = torch.softmax(torch.randn(1, C, generator=g, dtype=torch.float64), 1)
    exact = ot.emd2(p[0].numpy(), dist[0].numpy(), matrix.float().double().numpy())
    # Soft targets: Sinkhorn, an approximation from above of the exact LP value.
    value = float(loss(out[:1], y[:1], dist))
    assert exact - 1e-6 <= value <= exact * 1.05


def test_ground_default_is_power_of_class_distance() -> None:
    loss = build_loss("ground", 4, ground_power=2.0)
    i = torch.arange(4.0)
    torch.testing.assert_close(loss.ground_distance(), (i[:, None] - i[None, :]).abs() ** 2)


def test_ground_matrix_shape_and_finiteness_checked() -> None:
    with pytest.raises(ValueError, match=r"shape \(5, 5\)"):
        build_loss("ground", C, ground_distance=torch.zeros(4, 4))
    bad = torch.zeros(C, C)
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        build_loss("ground", C, ground_distance=bad)
    with pytest.raises(ValueError, match="non-negative"):
        build_loss("ground", C, ground_distance=-torch.ones(C, C))


def test_l2_regresses_the_index_and_interpolates_probabilities() -> None:
    loss = build_loss("l2", C)
    out = torch.tensor([[0.5], [3.75], [-2.0], [7.0]])
    y = torch.tensor([1, 3, 0, 4])
    # (0.5-1)^2, (3.75-3)^2, (-2-0)^2, (7-4)^2
    assert float(loss(out, y)) == pytest.approx((0.25 + 0.5625 + 4 + 9) / 4)
    probs = loss.probabilities(out)
    expected = torch.tensor(
        [
            [0.5, 0.5, 0, 0, 0],
            [0, 0, 0, 0.25, 0.75],
            [1, 0, 0, 0, 0],
            [0, 0, 0, 0, 1],
        ]
    )
    torch.testing.assert_close(probs, expected)
    # The expected class is the clipped regressed value; argmax rounds it.
    torch.testing.assert_close(probs @ torch.arange(C, dtype=torch.float32), out[:, 0].clamp(0, 4))
    assert decode(probs[1:2], "argmax").tolist() == [4]
    dist = torch.tensor([[0.0, 0.5, 0.5, 0.0, 0.0]])  # soft target: expected index 1.5
    assert float(loss(torch.tensor([[1.0]]), torch.tensor([1]), dist)) == pytest.approx(0.25)


def test_regression_probabilities_on_integers_are_one_hot() -> None:
    probs = regression_to_probabilities(torch.arange(4.0), 4)
    torch.testing.assert_close(probs, torch.eye(4))


def test_cumulative_to_probabilities_repairs_non_monotone_exceedances() -> None:
    probs = cumulative_to_probabilities(torch.tensor([[0.2, 0.7, 0.1], [1.0, 1.0, 1.0]]))
    torch.testing.assert_close(probs, torch.tensor([[0.8, 0.0, 0.1, 0.1], [0.0, 0.0, 0.0, 1.0]]))


def test_coral_matches_coral_pytorch_and_its_label_rule() -> None:
    from coral_pytorch.dataset import levels_from_labelbatch, proba_to_label
    from coral_pytorch.layers import CoralLayer
    from coral_pytorch.losses import coral_loss

    loss = build_loss("coral", C)
    head = loss.make_head(6)
    assert isinstance(head, CoralLayer)
    torch.manual_seed(0)
    logits = head(torch.randn(20, 6))
    y = torch.randint(0, C, (20,))
    levels = levels_from_labelbatch(y.tolist(), num_classes=C)
    torch.testing.assert_close(loss(logits, y), coral_loss(logits, levels))
    probs = loss.probabilities(logits)
    # CORAL's own prediction (number of P(y > k) above 1/2) is the median of our distribution.
    assert torch.equal(decode(probs, "median"), proba_to_label(torch.sigmoid(logits)))
    assert not bool(((probs == 0) | (probs == 1)).all())  # a distribution, not one-hot


def test_corn_matches_coral_pytorch_and_its_label_rule() -> None:
    from coral_pytorch.dataset import corn_label_from_logits
    from coral_pytorch.losses import corn_loss

    loss = build_loss("corn", C)
    logits, y = _batch(n=30, outputs=C - 1)
    # dlordinal's CORNLoss (what we train with) against coral-pytorch's independent one.
    torch.testing.assert_close(loss(logits, y), corn_loss(logits, y, C))
    probs = loss.probabilities(logits)
    assert torch.equal(decode(probs, "median"), corn_label_from_logits(logits))


def test_triangular_and_sord_use_dlordinal() -> None:
    from dlordinal.losses import SORDLoss, TriangularLoss

    out, y = _batch()
    tri = build_loss("triangular", C, alpha2=0.1, eta=0.5)
    expected = TriangularLoss(torch.nn.CrossEntropyLoss(), C, alpha2=0.1, eta=0.5)(out, y)
    torch.testing.assert_close(tri(out, y), expected)
    targets = torch.tensor([0, 1, 2, 3, 4, 4])
    sord = build_loss("sord", C, train_targets=targets, alpha=2.0)
    torch.testing.assert_close(sord(out, y), SORDLoss(2.0, C, targets)(out, y))
    with pytest.raises(ValueError, match="sord' needs train_targets"):
        build_loss("sord", C)


def test_unknown_options_are_refused_with_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"loss 'triangular' takes no option.*beta.*valid: alpha2, eta"
    ):
        build_loss("triangular", C, beta=1)
    with pytest.raises(ValueError, match="loss 'ce' takes no option"):
        build_loss("ce", C, mu=0.5)
    with pytest.raises(ValueError, match="warmup_epochs only apply to the recipe losses"):
        build_loss("w1", C, warmup_epochs=2)
    with pytest.raises(ValueError, match="bad option for loss 'xemd1'"):
        build_loss("xemd1", C, nonsense=1)
    with pytest.raises(ValueError, match="feature_pass must be"):
        build_loss("xemd1", C, feature_pass="sometimes")
    with pytest.raises(ValueError, match="no learned ground distance"):
        build_loss("emd2", C, mode="raw")


def test_missing_peer_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def fake_import(name: str, package: str | None = None) -> object:
        if name.startswith(("dlordinal", "coral_pytorch")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    for name in PEER_LOSS_NAMES:
        with pytest.raises(ImportError, match=r"pip install 'emdloss\[peers\]'"):
            _build(name)


def test_xemd_learns_the_matrix_from_training_features_like_learned_ground_distance() -> None:
    loss = build_loss("xemd2", C, warmup_epochs=1)
    assert loss.needs_features
    g = torch.Generator().manual_seed(1)
    feats = torch.rand(40, 6, generator=g)
    y = torch.arange(40) % C
    out = torch.randn(40, C, generator=g)
    loss.train()
    # Epoch 0 is the last warm-up epoch: pure cross-entropy, features collected.
    torch.testing.assert_close(loss(out, y, None, feats), F.cross_entropy(out, y))
    loss.step_epoch()
    oracle = LearnedGroundDistance(C, mu=0.25, omega=2.0)
    oracle.update(feats, y)
    torch.testing.assert_close(loss.ground_distance(), oracle.compute())
    # After the warm-up: cross-entropy + cost-matrix EMD^2 with that matrix (weights 1).
    from emdloss.functional import cost_matrix_emd

    expected = F.cross_entropy(out, y) + cost_matrix_emd(out, y, oracle.matrix)
    torch.testing.assert_close(loss(out, y), expected)


def test_xemd_collects_per_true_class_with_soft_targets() -> None:
    loss = build_loss("xemd1", C, warmup_epochs=0)
    feats = torch.rand(10, 3)
    y = torch.arange(10) % C
    dist = torch.full((10, C), 1.0 / C)
    loss(torch.zeros(10, C), y, dist, feats)
    loss.step_epoch()
    oracle = LearnedGroundDistance(C, mu=0.5, omega=1.0)
    oracle.update(feats, y)
    torch.testing.assert_close(loss.ground_distance(), oracle.compute())


def test_extra_pass_option_turns_off_training_features() -> None:
    loss = build_loss("xemd1", C, feature_pass="extra", mode="raw")
    assert loss.extra_pass and not loss.needs_features


def test_recipe_warm_up_epochs_are_not_selectable() -> None:
    # Model selection must not report a cross-entropy warm-up checkpoint as xemd1.
    loss = _build("xemd1", warmup_epochs=2)
    eligible = []
    for _ in range(4):
        eligible.append(loss.selectable(total_epochs=4))
        loss.step_epoch()
    assert eligible == [False, False, True, True]
    # A budget that is all warm-up keeps every epoch eligible rather than selecting nothing.
    assert _build("xemd1", warmup_epochs=4).selectable(total_epochs=4)
    assert _build("ce").selectable(total_epochs=4)
