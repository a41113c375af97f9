"""The nn.Module losses: same numbers as the functional API, buffers that follow the module."""

from __future__ import annotations

import io

import pytest
import torch

import emdloss
from emdloss import functional as EF
from emdloss.ground import ordinal_ground_distance
from emdloss.losses import CostMatrixEMDLoss, EMDLoss, GroundEMDLoss, SquaredEMDLoss


def _batch(c: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, c, generator=g)
    index = torch.randint(0, c, (6,), generator=g)
    soft = torch.rand(6, c, generator=g)
    return logits, index, soft / soft.sum(1, keepdim=True)


def test_exported_from_package_root() -> None:
    for name in ("SquaredEMDLoss", "EMDLoss", "GroundEMDLoss", "CostMatrixEMDLoss"):
        assert getattr(emdloss, name) is getattr(emdloss.losses, name)
    assert emdloss.functional is EF
    assert callable(emdloss.set_validation) and callable(emdloss.validation)


def test_squared_emd_loss_matches_functional_and_dlordinal() -> None:
    DlordinalEMDLoss = pytest.importorskip("dlordinal.losses").EMDLoss
    logits, index, soft = _batch()
    pos = [0.0, 1.0, 3.0, 4.0, 8.0]
    weight = [1.0, 2.0, 0.5, 1.0, 1.0]
    module = SquaredEMDLoss(positions=pos, normalization="rps", weight=weight, reduction="sum")
    for target in (index, soft):
        expected = EF.squared_emd(
            logits, target, positions=pos, normalization="rps", weight=weight, reduction="sum"
        )
        torch.testing.assert_close(module(logits, target), expected)
    torch.testing.assert_close(
        SquaredEMDLoss(normalization="sum")(logits, index), DlordinalEMDLoss(5)(logits, index)
    )


def test_emd_loss_matches_functional() -> None:
    logits, index, soft = _batch()
    for p in (1, 2.5):
        module = EMDLoss(p=p, positions=torch.arange(5.0) * 2, ignore_index=3)
        for target in (index, soft):
            expected = EF.emd(logits, target, p=p, positions=torch.arange(5.0) * 2, ignore_index=3)
            torch.testing.assert_close(module(logits, target), expected)


def test_ground_emd_loss_matches_functional() -> None:
    logits, index, soft = _batch()
    d = ordinal_ground_distance(5, power=2)
    torch.testing.assert_close(GroundEMDLoss(d)(logits, index), EF.ground_emd(logits, index, d))
    sinkhorn = GroundEMDLoss(d, method="sinkhorn", epsilon=0.02, max_iter=500, tol=1e-5)
    torch.testing.assert_close(
        sinkhorn(logits, soft),
        EF.ground_emd(logits, soft, d, method="sinkhorn", epsilon=0.02, max_iter=500, tol=1e-5),
    )


def test_cost_matrix_loss_matches_functional_and_updates() -> None:
    logits, index, _ = _batch()
    cm = torch.rand(5, 5, generator=torch.Generator().manual_seed(1)) - 0.5
    module = CostMatrixEMDLoss(cm, input_type="probs", reduction="none")
    probs = logits.softmax(1)
    torch.testing.assert_close(
        module(probs, index),
        EF.cost_matrix_emd(probs, index, cm, input_type="probs", reduction="none"),
    )
    module.set_cost_matrix(cm * 2)
    assert torch.equal(module.cost_matrix, cm * 2)  # the caller's matrix is not aliased
    torch.testing.assert_close(
        module(probs, index),
        2 * EF.cost_matrix_emd(probs, index, cm, input_type="probs", reduction="none"),
    )
    with pytest.raises(ValueError, match=r"cost_matrix must have shape \(5, 5\)"):
        module.set_cost_matrix(torch.ones(4, 4))


def test_buffers_follow_the_module() -> None:
    d = ordinal_ground_distance(5)
    modules = [
        SquaredEMDLoss(positions=[0, 1, 2, 3, 5], weight=torch.ones(5)),
        EMDLoss(positions=torch.arange(5.0), weight=[1, 2, 3, 4, 5]),
        GroundEMDLoss(d, weight=torch.ones(5)),
        CostMatrixEMDLoss(d),
    ]
    logits, index, _ = _batch()
    for module in modules:
        names = {name for name, _ in module.named_buffers()}
        assert names, module
        module.double()
        for buf in module.buffers():
            assert buf.dtype == torch.float64
        assert module(logits.double(), index).dtype == torch.float64
        state = module.state_dict()
        assert names <= set(state)
        # round trip through torch.save
        blob = io.BytesIO()
        torch.save(state, blob)
        blob.seek(0)
        module.load_state_dict(torch.load(blob))
        if torch.cuda.is_available():  # pragma: no cover - exercised on GPU machines
            module.cuda()
            assert module(logits.cuda(), index.cuda()).device.type == "cuda"


def test_unset_buffers_are_none_and_repr() -> None:
    module = SquaredEMDLoss()
    assert module.weight is None and module.positions is None
    assert "normalization='class_mean'" in repr(module)
    assert "p=2.0" in repr(EMDLoss(p=2))
    assert "method='exact'" in repr(GroundEMDLoss(torch.ones(3, 3)))


def test_module_backward() -> None:
    logits, index, _ = _batch()
    x = logits.clone().requires_grad_(True)
    SquaredEMDLoss()(x, index).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_invalid_options_fail_at_construction() -> None:
    with pytest.raises(ValueError, match=r"normalization must be one of"):
        SquaredEMDLoss(normalization="l2")
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        EMDLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"input_type must be one of"):
        CostMatrixEMDLoss(torch.ones(3, 3), input_type="scores")
    with pytest.raises(ValueError, match=r"p must be a finite number >= 1"):
        EMDLoss(p=0.5)
    with pytest.raises(ValueError, match=r"method must be one of"):
        GroundEMDLoss(torch.ones(3, 3), method="lp")
    with pytest.raises(ValueError, match=r"square \(C, C\) matrix"):
        GroundEMDLoss(torch.ones(3, 2))
    with pytest.raises(TypeError, match=r"cost_matrix must be a torch.Tensor"):
        CostMatrixEMDLoss([[1.0, 0.0], [0.0, 1.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"weight must be a tensor or a sequence"):
        SquaredEMDLoss(weight=["a", "b"])  # type: ignore[list-item]
