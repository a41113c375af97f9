"""Property tests (hypothesis): metric properties, invariances, stability, fused == reference.

Named for emdloss.functional; the fused == reference property covers emdloss._ordinal_fused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("hypothesis")

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from emdloss import _ordinal
from emdloss import functional as EF

DT = torch.float64
SETTINGS = settings(max_examples=50, deadline=None)

classes = st.integers(min_value=2, max_value=9)
unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def distributions(draw: st.DrawFn, rows: int = 1, c: int | None = None) -> torch.Tensor:
    """``rows`` probability vectors over ``c`` classes (exact zeros allowed, rows sum to 1)."""
    c = c if c is not None else draw(classes)
    raw = draw(arrays(np.float64, (rows, c), elements=unit))
    raw[:, 0] += 1e-3  # never an all-zero row
    return torch.tensor(raw / raw.sum(axis=1, keepdims=True), dtype=DT)


@st.composite
def triples(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    c = draw(classes)
    a, b, d = (draw(distributions(rows=1, c=c)) for _ in range(3))
    steps = draw(arrays(np.float64, c, elements=st.floats(0.1, 5.0)))
    return a, b, d, torch.tensor(np.cumsum(steps), dtype=DT)


def _probs_loss(name: str, a: torch.Tensor, b: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    kw = {"input_type": "probs", "reduction": "none", "positions": pos}
    if name == "squared":
        return EF.squared_emd(a, b, **kw)
    if name == "w1":
        return EF.emd(a, b, **kw)
    return EF.emd(a, b, p=2, **kw)


@SETTINGS
@given(triples(), st.sampled_from(["squared", "w1", "w2"]))
def test_symmetry_and_zero_iff_equal(
    case: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], name: str
) -> None:
    a, b, _, pos = case
    ab, ba = _probs_loss(name, a, b, pos), _probs_loss(name, b, a, pos)
    torch.testing.assert_close(ab, ba, rtol=1e-9, atol=1e-12)
    assert _probs_loss(name, a, a, pos).abs().item() <= 1e-12
    gap = (a - b).abs().max().item()
    if gap > 1e-6:  # different distributions: strictly positive
        assert ab.item() > 0
    assert ab.item() >= -1e-12


@SETTINGS
@given(triples())
def test_w1_triangle_inequality(
    case: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    a, b, c, pos = case
    ac, ab, bc = (_probs_loss("w1", u, v, pos) for u, v in ((a, c), (a, b), (b, c)))
    assert ac.item() <= ab.item() + bc.item() + 1e-12
    # and W2 = sqrt(W2^2) too
    ac2, ab2, bc2 = (_probs_loss("w2", u, v, pos).sqrt() for u, v in ((a, c), (a, b), (b, c)))
    assert ac2.item() <= ab2.item() + bc2.item() + 1e-9


@SETTINGS
@given(
    st.integers(2, 8),
    st.integers(1, 6),
    st.floats(-50.0, 50.0),
    st.sampled_from(["squared", "w1", "w2", "ground", "cost"]),
    st.integers(0, 2**16),
)
def test_invariant_to_a_constant_added_to_logits(
    c: int, n: int, shift: float, name: str, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=DT) * 3
    target = torch.randint(0, c, (n,), generator=g)
    d = torch.rand(c, c, generator=g, dtype=DT)
    losses = {
        "squared": lambda x: EF.squared_emd(x, target, reduction="none"),
        "w1": lambda x: EF.emd(x, target, reduction="none"),
        "w2": lambda x: EF.emd(x, target, p=2, reduction="none"),
        "ground": lambda x: EF.ground_emd(x, target, d, reduction="none"),
        "cost": lambda x: EF.cost_matrix_emd(x, target, d - 0.5, reduction="none"),
    }
    x = logits.clone().requires_grad_(True)
    y = (logits + shift).requires_grad_(True)
    lx, ly = losses[name](x), losses[name](y)
    torch.testing.assert_close(lx, ly, rtol=1e-9, atol=1e-12)
    (gx,), (gy,) = torch.autograd.grad(lx.sum(), x), torch.autograd.grad(ly.sum(), y)
    torch.testing.assert_close(gx, gy, rtol=1e-7, atol=1e-12)
    # a shift along the all-ones direction changes nothing, so the gradient is orthogonal to it
    assert gx.sum(dim=1).abs().max().item() <= 1e-9


@SETTINGS
@given(
    st.integers(2, 8),
    st.integers(1, 5),
    st.sampled_from([torch.float32, torch.float64]),
    st.sampled_from(["squared", "w1", "w2", "ground", "cost"]),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_finite_for_huge_logits(
    c: int, n: int, dtype: torch.dtype, name: str, soft: bool, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = (torch.rand(n, c, generator=g, dtype=dtype) * 2 - 1) * 1e4
    logits[0, 0] = 1e4  # the extremes themselves
    logits[-1, -1] = -1e4
    if soft and name != "ground":
        raw = torch.rand(n, c, generator=g, dtype=dtype)
        target: torch.Tensor = raw / raw.sum(1, keepdim=True)
    else:
        target = torch.randint(0, c, (n,), generator=g)
    d = torch.rand(c, c, generator=g, dtype=dtype)
    x = logits.clone().requires_grad_(True)
    loss = {
        "squared": lambda: EF.squared_emd(x, target),
        "w1": lambda: EF.emd(x, target),
        "w2": lambda: EF.emd(x, target, p=2),
        "ground": lambda: EF.ground_emd(x, target, d),
        "cost": lambda: EF.cost_matrix_emd(x, target, d),
    }[name]()
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


@SETTINGS
@given(
    st.integers(2, 12),
    st.lists(st.integers(1, 4), min_size=0, max_size=2),
    st.integers(1, 5),
    st.sampled_from(["logits", "probs", "log_probs"]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_fused_equals_reference(
    c: int,
    spatial: list[int],
    n: int,
    input_type: str,
    soft: bool,
    squared: bool,
    with_positions: bool,
    seed: int,
) -> None:
    g = torch.Generator().manual_seed(seed)
    shape = (n, c, *spatial)
    logits = torch.randn(*shape, generator=g, dtype=DT) * 4
    x0 = {"logits": logits, "probs": logits.softmax(1), "log_probs": logits.log_softmax(1)}[
        input_type
    ]
    if soft:
        raw = torch.rand(*shape, generator=g, dtype=DT)
        target: torch.Tensor = raw / raw.sum(1, keepdim=True)
    else:
        target = torch.randint(0, c, (n, *spatial), generator=g)
    view = (n, c, -1) if spatial else (n, c)
    x0, target = x0.reshape(view), target.reshape(view if soft else view[:1] + view[2:])
    gaps = None
    if with_positions:
        gaps = _ordinal.gap_weights(torch.rand(c, generator=g, dtype=DT).add(0.1).cumsum(0))
    grad_out = torch.randn(x0.shape[0], *x0.shape[2:], generator=g, dtype=DT)
    out = {}
    for impl in ("fused", "reference"):
        x = x0.clone().requires_grad_(True)
        with _ordinal.implementation(impl):
            rows = _ordinal.cdf_loss(x, target, gaps, squared=squared, input_type=input_type)
        out[impl] = (rows, torch.autograd.grad(rows, x, grad_out)[0])
    torch.testing.assert_close(out["fused"], out["reference"], rtol=1e-12, atol=1e-12)
