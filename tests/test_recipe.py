"""The paper's recipe: CE warm-up, then CE + EMD term; schedule of the learned matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from emdloss import recipe
from emdloss.ground import LearnedGroundDistance, ordinal_ground_distance
from emdloss.recipe import EMDRecipeLoss

# -- independent oracles: the authors' Theano formulas, in NumPy ---------------------------------


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(softmax(z)[np.arange(len(y)), y])


def emd_l2(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(1/C) sum_k (P_k - T_k)^2 per sample."""
    p = softmax(z)
    t = np.eye(z.shape[1])[y]
    return ((np.cumsum(p, 1) - np.cumsum(t, 1)) ** 2).mean(axis=1)


def cost_matrix_loss(z: np.ndarray, y: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """(1/C) sum_i (p_i - t_i)^2 CM[y, i] per sample."""
    p = softmax(z)
    t = np.eye(z.shape[1])[y]
    return ((p - t) ** 2 * cm[y]).mean(axis=1)


def batch(seed: int, n: int = 16, c: int = 5, f: int = 6) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=gen, dtype=torch.float64) * 2
    target = torch.randint(0, c, (n,), generator=gen)
    feats = torch.rand(n, f, generator=gen, dtype=torch.float64)
    return logits, target, feats


# -- the values --------------------------------------------------------------------------------


def test_emd2_preset_is_the_authors_emd_l2() -> None:
    crit = EMDRecipeLoss.from_preset("emd2", 5)
    logits, y, _ = batch(0)
    got = crit(logits, y)
    np.testing.assert_allclose(float(got), emd_l2(logits.numpy(), y.numpy()).mean(), rtol=1e-10)
    assert not crit.in_warmup


def test_xe_preset_is_cross_entropy() -> None:
    crit = EMDRecipeLoss.from_preset("xe", 5)
    logits, y, _ = batch(1)
    np.testing.assert_allclose(
        float(crit(logits, y)), cross_entropy(logits.numpy(), y.numpy()).mean(), rtol=1e-10
    )


def test_fixed_term_weights_and_reduction() -> None:
    cm = ordinal_ground_distance(5, power=2.0) + torch.eye(5)
    crit = EMDRecipeLoss(
        5, emd_term="fixed", cost_matrix=cm, ce_weight=0.3, emd_weight=2.0, warmup_epochs=0
    )
    logits, y, _ = batch(2)
    z, t = logits.numpy(), y.numpy()
    expected = 0.3 * cross_entropy(z, t) + 2.0 * cost_matrix_loss(z, t, cm.double().numpy())
    np.testing.assert_allclose(float(crit(logits, y)), expected.mean(), rtol=1e-6)
    crit_none = EMDRecipeLoss(
        5,
        emd_term="fixed",
        cost_matrix=cm,
        ce_weight=0.3,
        emd_weight=2.0,
        warmup_epochs=0,
        reduction="none",
    )
    np.testing.assert_allclose(crit_none(logits, y).numpy(), expected, rtol=1e-6)
    crit_sum = EMDRecipeLoss(
        5,
        emd_term="fixed",
        cost_matrix=cm,
        ce_weight=0.3,
        emd_weight=2.0,
        warmup_epochs=0,
        reduction="sum",
    )
    np.testing.assert_allclose(float(crit_sum(logits, y)), expected.sum(), rtol=1e-6)


def test_xemd1_schedule_matches_the_authors() -> None:
    """CE for epochs 0-3; features of epoch 3 build the matrix used in epoch 4; epoch 4's
    features build the one used in epoch 5."""
    crit = EMDRecipeLoss.from_preset("xemd1", 5)
    direct = LearnedGroundDistance(5, mu=0.5, omega=1.0)
    prior = crit.ground.matrix.clone()
    for epoch in range(6):
        logits, y, feats = batch(10 + epoch)
        logits.requires_grad_(True)
        loss = crit(logits, y, features=feats)
        z, t = logits.detach().numpy(), y.numpy()
        if epoch < 4:
            assert crit.in_warmup
            np.testing.assert_allclose(float(loss.detach()), cross_entropy(z, t).mean(), rtol=1e-10)
        else:
            cm = direct.matrix.double().numpy()
            expected = cross_entropy(z, t) + cost_matrix_loss(z, t, cm)
            np.testing.assert_allclose(float(loss.detach()), expected.mean(), rtol=1e-6)
        loss.backward()
        if epoch >= 3:  # the authors rebuilt from the 4th epoch on (0-based epoch >= 3)
            direct.reset()
            direct.update(feats, y)
            direct.compute()
        crit.step_epoch()
        assert crit.current_epoch == epoch + 1
        if epoch < 3:
            assert torch.equal(crit.ground.matrix, prior)
            assert float(crit.ground.class_counts.sum()) == 0  # nothing collected yet
        else:
            assert torch.allclose(crit.ground.matrix, direct.matrix, atol=1e-6)
            assert float(crit.ground.class_counts.sum()) == 0  # cleared after each rebuild
    assert not torch.allclose(direct.matrix, prior)


def test_validation_passes_do_not_accumulate() -> None:
    crit = EMDRecipeLoss.from_preset("xemd2", 5, warmup_epochs=0)
    logits, y, feats = batch(3)
    with torch.no_grad():
        crit(logits, y, features=feats)
    crit.eval()
    crit(logits, y, features=feats)
    assert float(crit.ground.class_counts.sum()) == 0
    crit(logits, y, features=feats, accumulate=True)
    assert float(crit.ground.class_counts.sum()) == 16
    crit.train()
    crit(logits, y, features=feats, accumulate=False)
    assert float(crit.ground.class_counts.sum()) == 16
    no_collect = EMDRecipeLoss.from_preset("xemd1", 5, warmup_epochs=0, collect_features=False)
    no_collect(logits, y, features=feats)
    assert float(no_collect.ground.class_counts.sum()) == 0


# -- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["emd2", "xemd1", "xemd2", "fixed", "warmup"])
def test_gradcheck_float64(preset: str) -> None:
    logits, y, feats = batch(4, n=6, c=4)
    if preset == "fixed":
        crit = EMDRecipeLoss(
            4,
            emd_term="fixed",
            cost_matrix=ordinal_ground_distance(4) + torch.eye(4),
            ce_weight=0.7,
            emd_weight=1.3,
            warmup_epochs=0,
        )
    elif preset == "warmup":
        crit = EMDRecipeLoss.from_preset("xemd1", 4)
    else:
        crit = EMDRecipeLoss.from_preset(preset, 4, warmup_epochs=0)
        if crit.ground is not None:  # a learned, non-prior matrix
            crit.ground.update(feats, y)
            crit.step_epoch()
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: crit(z, y), (logits,))
    soft = torch.softmax(torch.randn(6, 4, dtype=torch.float64), 1)
    if preset in ("emd2", "warmup"):  # soft targets: CE and squared EMD accept distributions
        assert torch.autograd.gradcheck(lambda z: crit(z, soft), (logits,))


# -- the authors' extra pass -------------------------------------------------------------------


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.5)
        )
        self.head = nn.Linear(16, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_refresh_from_is_deterministic_mirrored_and_restores_mode() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(24, 3, 8, 8, generator=gen)
    y = torch.arange(24) % 3
    loader = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]
    model = TinyNet().train()
    crit = EMDRecipeLoss.from_preset("xemd1", 3, warmup_epochs=2, collect_features=False)
    assert crit.refresh_from(model, loader) is False  # epoch 0 < K - 1: nothing to do
    crit.step_epoch()
    assert crit.refresh_from(model, loader) is True
    assert model.training
    model.eval()
    with torch.no_grad():
        f = (model.features(x) + model.features(x.flip(-1))) / 2
    direct = LearnedGroundDistance(3)
    direct.update(f, y)
    assert torch.allclose(crit.ground.matrix, direct.compute(), atol=1e-6)
    assert all(p.grad is None for p in model.parameters())
    assert float(crit.ground.class_counts.sum()) == 0
    before = crit.ground.matrix.clone()
    crit.step_epoch()  # nothing accumulated: the refreshed matrix stays
    assert torch.equal(crit.ground.matrix, before)
    with pytest.raises(ValueError, match="mirror=False"):
        crit.refresh_from(model, [(torch.rand(4, 5), torch.tensor([0, 1, 2, 0]))])
    with pytest.raises(ValueError, match="emd_term='learned'"):
        EMDRecipeLoss.from_preset("emd2", 3).refresh_from(model, loader)


# -- state ---------------------------------------------------------------------------------------


def test_state_dict_restores_epoch_and_matrix() -> None:
    crit = EMDRecipeLoss.from_preset("xemd2", 5, warmup_epochs=1)
    for seed in range(3):
        logits, y, feats = batch(20 + seed)
        crit(logits, y, features=feats)
        crit.step_epoch()
    logits, y, feats = batch(30)
    crit(logits, y, features=feats)  # some statistics pending
    fresh = EMDRecipeLoss.from_preset("xemd2", 5, warmup_epochs=1)
    fresh.load_state_dict(crit.state_dict())
    assert fresh.current_epoch == 3
    assert torch.equal(fresh.ground.matrix, crit.ground.matrix)
    assert torch.equal(fresh.ground.feature_sums, crit.ground.feature_sums)
    assert torch.equal(fresh(logits, y), crit(logits, y))


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"emd_term": "sinkhorn"}, "'sinkhorn'"),
        ({"ce_weight": -1.0}, "ce_weight.*-1.0"),
        ({"emd_weight": float("nan")}, "emd_weight"),
        ({"ce_weight": 0.0, "emd_weight": 0.0}, "both 0"),
        ({"warmup_epochs": -1}, "warmup_epochs.*-1"),
        ({"warmup_epochs": 1.5}, "warmup_epochs"),
        ({"emd_term": "fixed"}, "needs cost_matrix"),
        ({"emd_term": "fixed", "cost_matrix": torch.ones(3, 3)}, r"\(4, 4\).*\(3, 3\)"),
        ({"emd_term": "squared", "cost_matrix": torch.ones(4, 4)}, "only used with"),
        ({"emd_term": "fixed", "cost_matrix": torch.full((4, 4), float("nan"))}, "finite"),
        ({"ground": LearnedGroundDistance(3)}, "num_classes=3, expected 4"),
        ({"emd_term": "squared", "ground": LearnedGroundDistance(4)}, "only used with"),
        ({"mu": 1.5}, "mu must be in"),
        ({"omega": 0.0}, "omega"),
        ({"input_type": "scores"}, "'scores'"),
        ({"reduction": "avg"}, "'avg'"),
        ({"weight": torch.ones(3)}, r"weight must have shape \(4,\)"),
    ],
)
def test_constructor_rejects_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EMDRecipeLoss(4, **kwargs)


def test_other_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown preset 'xemd3'"):
        EMDRecipeLoss.from_preset("xemd3", 4)
    with pytest.raises(ValueError, match="num_classes"):
        EMDRecipeLoss(1)
    crit = EMDRecipeLoss.from_preset("xemd1", 4, warmup_epochs=0)
    with pytest.raises(ValueError, match="non-negative"):
        crit(torch.randn(2, 4), torch.tensor([0, 1]), features=-torch.ones(2, 3))
    with pytest.raises(ValueError, match="epoch"):
        crit.set_epoch(-1)
    assert recipe.CombinedLoss is EMDRecipeLoss
