"""Bad input gets a ValueError/TypeError naming the value and what was expected."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import emdloss
from emdloss import functional as EF

C = 4


def _logits(n: int = 3) -> torch.Tensor:
    return torch.randn(n, C, generator=torch.Generator().manual_seed(0))


def _soft(n: int = 3) -> torch.Tensor:
    return torch.full((n, C), 1.0 / C)


ALL: dict[str, Callable[..., torch.Tensor]] = {
    "squared_emd": EF.squared_emd,
    "emd": EF.emd,
    "ground_emd": lambda x, t, **kw: EF.ground_emd(x, t, torch.ones(C, C), **kw),
    "cost_matrix_emd": lambda x, t, **kw: EF.cost_matrix_emd(x, t, torch.ones(C, C), **kw),
}


# ------------------------------------------------------------------ shape and type checks


@pytest.mark.parametrize("fn", ALL.values(), ids=ALL.keys())
def test_input_shape_and_type(fn: Callable[..., torch.Tensor]) -> None:
    y = torch.tensor([0, 1, 2])
    with pytest.raises(TypeError, match=r"input must be a torch.Tensor"):
        fn([[0.0] * C] * 3, y)
    with pytest.raises(TypeError, match=r"floating-point.*torch.int64"):
        fn(torch.zeros(3, C, dtype=torch.long), y)
    with pytest.raises(ValueError, match=r"shape \(N, C\).*got shape \(4,\)"):
        fn(torch.zeros(4), y)
    with pytest.raises(ValueError, match=r"at least 2 classes.*C=1"):
        fn(torch.zeros(3, 1), y)


@pytest.mark.parametrize("fn", ALL.values(), ids=ALL.keys())
def test_target_shape_and_type(fn: Callable[..., torch.Tensor]) -> None:
    x = _logits()
    with pytest.raises(ValueError, match=r"class-index target must have shape \(3,\).*\(2,\)"):
        fn(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"class-index target must have shape \(3, 5\)"):
        fn(torch.zeros(3, C, 5), torch.zeros(3, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"distribution target must have the input's shape"):
        fn(x, torch.full((3, C + 1), 1.0 / (C + 1)))
    with pytest.raises(TypeError, match=r"torch.bool"):
        fn(x, torch.zeros(3, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"target must be a torch.Tensor"):
        fn(x, [0, 1, 2])


@pytest.mark.parametrize("fn", ALL.values(), ids=ALL.keys())
def test_option_names(fn: Callable[..., torch.Tensor]) -> None:
    x, y = _logits(), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"input_type must be one of .*'softmax'"):
        fn(x, y, input_type="softmax")
    with pytest.raises(ValueError, match=r"reduction must be one of .*'avg'"):
        fn(x, y, reduction="avg")
    with pytest.raises(TypeError, match=r"ignore_index must be an int"):
        fn(x, y, ignore_index=1.5)


def test_specific_options() -> None:
    x, y = _logits(), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"normalization must be one of .*'max'"):
        EF.squared_emd(x, y, normalization="max")
    with pytest.raises(ValueError, match=r"method must be one of .*'lp'"):
        EF.ground_emd(x, y, torch.ones(C, C), method="lp")
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"p must be a finite number >= 1"):
            EF.emd(x, y, p=bad)
    with pytest.raises(TypeError, match=r"p must be a real number"):
        EF.emd(x, y, p=True)


# -------------------------------------------------------------------- class indices


@pytest.mark.parametrize("fn", ALL.values(), ids=ALL.keys())
def test_class_index_out_of_range(fn: Callable[..., torch.Tensor]) -> None:
    x = _logits()
    with pytest.raises(ValueError, match=r"class index 4 at position \(1,\).*\[0, 4\)"):
        fn(x, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match=r"class index -1 .*ignore_index=-100"):
        fn(x, torch.tensor([0, -1, 1]))
    fn(x, torch.tensor([0, -100, 1]))  # the ignored value itself is fine
    with pytest.raises(ValueError, match=r"class index -100 .*ignore_index=-1"):
        fn(x, torch.tensor([0, -100, 1]), ignore_index=-1)
    with pytest.raises(ValueError, match=r"class index 7 at position \(0, 2\)"):
        fn(torch.zeros(2, C, 3), torch.tensor([[0, 1, 7], [0, 0, 0]]))


# ------------------------------------------------------------------ soft targets


@pytest.mark.parametrize("fn", ["squared_emd", "emd", "cost_matrix_emd"])
def test_soft_target_values(fn: str) -> None:
    loss = ALL[fn]
    x = _logits()
    negative = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.2, -0.2, 0.0, 0.0], [0.25] * 4])
    with pytest.raises(ValueError, match=r"holds -0.2 at \(1, 1\).*non-negative"):
        loss(x, negative)
    unnormalised = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25] * 4, [0.3, 0.3, 0.3, 0.0]])
    with pytest.raises(ValueError, match=r"row at \(2,\) sums to 0.9"):
        loss(x, unnormalised)
    nan = _soft()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"holds nan"):
        loss(x, nan)


def test_ground_emd_exact_needs_one_hot() -> None:
    x = _logits()
    soft = torch.eye(C)[:3].clone()
    soft[1] = torch.tensor([0.0, 0.6, 0.4, 0.0])
    with pytest.raises(ValueError, match=r"row at \(1,\) is a soft distribution.*sinkhorn"):
        EF.ground_emd(x, soft, torch.ones(C, C))


# ------------------------------------------------------------- probability inputs


@pytest.mark.parametrize("fn", ALL.values(), ids=ALL.keys())
def test_probability_inputs(fn: Callable[..., torch.Tensor]) -> None:
    y = torch.tensor([0, 1, 2])
    probs = _logits().softmax(1)
    bad = probs.clone()
    bad[2, 3] = 1.5
    with pytest.raises(ValueError, match=r"holds 1.5 at \(2, 3\).*probabilities in \[0, 1\]"):
        fn(bad, y, input_type="probs")
    bad = probs.clone()
    bad[1, 0] = -0.5
    with pytest.raises(ValueError, match=r"holds -0.5 at \(1, 0\)"):
        fn(bad, y, input_type="probs")
    with pytest.raises(ValueError, match=r"row at \(0,\) sums to 0.5"):
        fn(probs * 0.5, y, input_type="probs")
    with pytest.raises(ValueError, match=r"log_probs.*<= 0"):
        fn(probs.log() + 1.0, y, input_type="log_probs")
    with pytest.raises(ValueError, match=r"row at \(0,\) sums to"):
        fn(probs.log() - 1.0, y, input_type="log_probs")
    # logits are not range-checked: any real value is valid
    fn(_logits() * 100, y, input_type="logits")


# ------------------------------------------------------------ class parameters


def test_positions() -> None:
    x, y = _logits(), torch.tensor([0, 1, 2])
    for fn in (EF.squared_emd, EF.emd):
        with pytest.raises(ValueError, match=r"positions must be a 1-D sequence of length C=4"):
            fn(x, y, positions=[0.0, 1.0, 2.0])
        with pytest.raises(ValueError, match=r"strictly increasing.*positions\[1\] = 2"):
            fn(x, y, positions=[0.0, 2.0, 2.0, 3.0])
        with pytest.raises(ValueError, match=r"strictly increasing.*positions\[2\] = 3 >="):
            fn(x, y, positions=torch.tensor([0.0, 2.0, 3.0, 1.0]))
        with pytest.raises(ValueError, match=r"positions\[3\] = inf"):
            fn(x, y, positions=[0.0, 1.0, 2.0, float("inf")])
        with pytest.raises(TypeError, match=r"positions must be a tensor or a sequence"):
            fn(x, y, positions=["a", "b", "c", "d"])


@pytest.mark.parametrize("fn", ALL.values(), ids=ALL.keys())
def test_weight(fn: Callable[..., torch.Tensor]) -> None:
    x, y = _logits(), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"weight must be a 1-D sequence of length C=4.*\(3,\)"):
        fn(x, y, weight=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"weight\[2\] = -1; .*non-negative"):
        fn(x, y, weight=[1.0, 1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match=r"weight\[0\] = nan"):
        fn(x, y, weight=[float("nan"), 1.0, 1.0, 1.0])


def test_ground_distance() -> None:
    x, y = _logits(), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"ground_distance must have shape \(4, 4\).*\(3, 3\)"):
        EF.ground_emd(x, y, torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"ground_distance must have shape \(4, 4\).*\(4,\)"):
        EF.ground_emd(x, y, torch.ones(4))
    d = torch.ones(C, C)
    d[1, 2] = -0.5
    with pytest.raises(ValueError, match=r"ground_distance\[1, 2\] = -0.5.*non-negative"):
        EF.ground_emd(x, y, d)
    for value in (float("inf"), float("nan")):
        d = torch.ones(C, C)
        d[3, 0] = value
        with pytest.raises(ValueError, match=rf"ground_distance\[3, 0\] = {value}.*finite"):
            EF.ground_emd(x, y, d)
    with pytest.raises(TypeError, match=r"ground_distance must be a torch.Tensor"):
        EF.ground_emd(x, y, [[0.0] * C] * C)


def test_cost_matrix() -> None:
    x, y = _logits(), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"cost_matrix must have shape \(4, 4\)"):
        EF.cost_matrix_emd(x, y, torch.ones(4, 5))
    cm = torch.ones(C, C)
    cm[0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"cost_matrix\[0, 1\] = nan; entries must be finite$"):
        EF.cost_matrix_emd(x, y, cm)
    EF.cost_matrix_emd(x, y, torch.ones(C, C) - 2.0)  # negative entries are allowed


def test_device_mismatch_is_reported() -> None:
    target = torch.tensor([0, 1, 2], device="meta")
    with pytest.raises(ValueError, match=r"target is on meta but input is on cpu"):
        EF.squared_emd(_logits(), target)


# ------------------------------------------------------------------- the switch


def test_switch_skips_only_the_value_checks() -> None:
    x = _logits()
    unnormalised = torch.full((3, C), 0.3)
    assert emdloss.is_validation_enabled()
    with pytest.raises(ValueError, match=r"sums to 1.2"):
        EF.squared_emd(x, unnormalised)
    with emdloss.validation(False):
        assert not emdloss.is_validation_enabled()
        assert torch.isfinite(EF.squared_emd(x, unnormalised))  # not inspected
        EF.emd(x, torch.tensor([0, -100, 1]))  # ignore_index still honoured
        with pytest.raises(ValueError, match=r"class-index target must have shape"):
            EF.squared_emd(x, torch.tensor([0, 1]))  # shape checks always run
        with pytest.raises(ValueError, match=r"reduction must be one of"):
            EF.squared_emd(x, torch.tensor([0, 1, 2]), reduction="avg")
    assert emdloss.is_validation_enabled()


def test_switch_restores_after_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"boom"), emdloss.validation(False):
        raise RuntimeError("boom")
    assert emdloss.is_validation_enabled()
    emdloss.set_validation(False)
    try:
        with emdloss.validation(True):
            assert emdloss.is_validation_enabled()
        assert not emdloss.is_validation_enabled()
    finally:
        emdloss.set_validation(True)
    with pytest.raises(TypeError, match=r"enabled must be a bool"):
        emdloss.set_validation(1)  # type: ignore[arg-type]


def test_value_checks_do_not_run_under_compile() -> None:
    """Inside torch.compile the value checks are skipped, so the graph has no break."""
    torch._dynamo.reset()
    fn = torch.compile(
        lambda a, b: EF.squared_emd(a, b, weight=[1.0, 2.0, 1.0, 1.0]),
        backend="eager",
        fullgraph=True,
    )
    x, y = _logits(), torch.tensor([0, 3, -100])
    torch.testing.assert_close(fn(x, y), EF.squared_emd(x, y, weight=[1.0, 2.0, 1.0, 1.0]))
