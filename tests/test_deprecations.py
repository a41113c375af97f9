"""Clearer names with the old ones kept as deprecated aliases (issue 9)."""

from __future__ import annotations

import pytest
import torch

from emdloss import EMDRecipeLoss, SquaredEMDLoss
from emdloss import functional as EF
from emdloss.ground import ordinal_ground_distance


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1, 0])


def test_normalization_mean_is_a_deprecated_alias_of_class_mean() -> None:
    x, y = _data()
    new = EF.squared_emd(x, y, normalization="class_mean")
    with pytest.warns(DeprecationWarning, match=r"normalization='mean' is deprecated.*class_mean"):
        old = EF.squared_emd(x, y, normalization="mean")
    assert old == new
    # the value of "class_mean" is 1/C times the sum over the C CDF terms (the authors' loss)
    torch.testing.assert_close(new, EF.squared_emd(x, y, normalization="sum") / 4)
    assert EF.squared_emd(x, y) == new  # still the default


def test_module_normalization_alias() -> None:
    x, y = _data()
    with pytest.warns(DeprecationWarning, match="class_mean"):
        module = SquaredEMDLoss(normalization="mean")
    assert module.normalization == "class_mean"
    assert module(x, y) == SquaredEMDLoss()(x, y)


def test_recipe_ground_distance_is_a_deprecated_alias_of_cost_matrix() -> None:
    x, y = _data()
    cm = ordinal_ground_distance(4) - 0.5  # negative entries: a cost matrix, not a distance
    kw = {"emd_term": "fixed", "warmup_epochs": 0}
    new = EMDRecipeLoss(4, cost_matrix=cm, **kw)  # type: ignore[arg-type]
    with pytest.warns(DeprecationWarning, match="pass cost_matrix"):
        old = EMDRecipeLoss(4, ground_distance=cm, **kw)  # type: ignore[arg-type]
    assert old(x.float(), y) == new(x.float(), y)
    with pytest.raises(ValueError, match="not both"), pytest.warns(DeprecationWarning):
        EMDRecipeLoss(4, cost_matrix=cm, ground_distance=cm, **kw)  # type: ignore[arg-type]
