"""The losses under autocast, torch.func and torch.compile(fullgraph=True), as F.cross_entropy.

Issue 21, items 10, 20, 21 and 23. Every public loss, functional and module, and the recipe:
under ``torch.autocast`` they compute and return float32 (as ``F.cross_entropy``, which is on
autocast's float32 list); ``torch.func.grad``, ``vmap``, ``vmap(grad)`` and ``jacrev`` give what
plain autograd and a loop give; ``torch.compile(fullgraph=True)`` traces every path without a
graph break and gives the eager numbers.

Named for emdloss.functional; also covers the modules of emdloss.losses and emdloss.recipe.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad, jacrev, vmap

import emdloss
from emdloss import functional as EF
from emdloss.ground import ordinal_ground_distance
from emdloss.losses import CostMatrixEMDLoss, EMDLoss, GroundEMDLoss, SquaredEMDLoss
from emdloss.recipe import EMDRecipeLoss

#: Verified on torch 2.14.1. On torch 2.5.0, the floor, the Sinkhorn ops under torch.func hit a
#: functorch internal assertion and break the graph under compile, and the recipe's epoch
#: counter is read with Tensor.item under fullgraph; versions in between were not tried.
_TORCH = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
needs_recent_torch = pytest.mark.skipif(
    _TORCH < (2, 14), reason="verified on torch >= 2.14 only (fails on torch 2.5)"
)

C = 5
_D = ordinal_ground_distance(C)
_CM = torch.eye(C) - 0.5 * _D / _D.max()

Loss = Callable[[Tensor, Tensor], Tensor]

# name -> (loss of (input, target), whether targets are soft distributions)
LOSSES: dict[str, tuple[Loss, bool]] = {
    "squared_emd": (lambda x, y: EF.squared_emd(x, y), False),
    "squared_emd_positions": (
        lambda x, y: EF.squared_emd(x, y, positions=[0.0, 1.0, 3.0, 4.0, 8.0]),
        False,
    ),
    "squared_emd_soft": (lambda x, y: EF.squared_emd(x, y), True),
    "emd_p1": (lambda x, y: EF.emd(x, y), False),
    "emd_p2": (lambda x, y: EF.emd(x, y, p=2), False),
    "emd_p2_soft": (lambda x, y: EF.emd(x, y, p=2), True),
    "ground_emd_exact": (lambda x, y: EF.ground_emd(x, y, _D.to(x)), False),
    "ground_emd_sinkhorn": (lambda x, y: EF.ground_emd(x, y, _D.to(x), method="sinkhorn"), True),
    "cost_matrix_emd": (lambda x, y: EF.cost_matrix_emd(x, y, _CM.to(x)), False),
}


def _data(soft: bool, dtype: torch.dtype = torch.float64, n: int = 4) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, C, generator=g, dtype=dtype)
    if soft:
        return x, torch.softmax(torch.randn(n, C, generator=g, dtype=dtype), dim=1)
    return x, torch.randint(0, C, (n,), generator=g)


def _names_marked(names: list[str]) -> list[object]:
    """The loss names, the Sinkhorn path marked as needing a recent torch."""
    return [
        pytest.param(n, marks=needs_recent_torch) if n == "ground_emd_sinkhorn" else n
        for n in names
    ]


def _autograd_grad(loss: Loss, x: Tensor, y: Tensor) -> Tensor:
    z = x.detach().requires_grad_(True)
    (out,) = torch.autograd.grad(loss(z, y), z)
    return out


# --------------------------------------------------------------------------------- torch.func


@pytest.mark.parametrize("validate", [True, False], ids=["checked", "unchecked"])
@pytest.mark.parametrize("name", _names_marked(list(LOSSES)))
def test_torch_func_transforms_match_autograd_and_a_loop(name: str, validate: bool) -> None:
    loss, soft = LOSSES[name]
    x, y = _data(soft)
    with emdloss.validation(validate):
        expected = _autograd_grad(loss, x, y)
        # grad: the gradient of the mean over the batch, as plain autograd gives it
        torch.testing.assert_close(grad(loss)(x, y), expected)
        # jacrev of the per-row losses: row i of the Jacobian is the gradient of loss i
        rows = jacrev(lambda z: torch.stack([loss(z[i : i + 1], y[i : i + 1]) for i in range(4)]))(
            x
        )
        torch.testing.assert_close(rows.sum(0), expected * 4)

        def one(a: Tensor, b: Tensor) -> Tensor:
            return loss(a[None], b[None])

        # vmap: per-sample losses equal a loop of single-sample calls
        looped = torch.stack([one(x[i], y[i]) for i in range(4)])
        torch.testing.assert_close(vmap(one)(x, y), looped)
        # vmap(grad): per-sample gradients equal a loop of single-sample autograd gradients
        per_sample = torch.stack([_autograd_grad(one, x[i], y[i]) for i in range(4)])
        torch.testing.assert_close(vmap(grad(one))(x, y), per_sample)


def test_torch_func_jacrev_of_the_batch_loss_matches_autograd() -> None:
    x, y = _data(False)
    for name in ("squared_emd", "emd_p1", "ground_emd_exact"):
        loss = LOSSES[name][0]
        torch.testing.assert_close(jacrev(loss)(x, y), _autograd_grad(loss, x, y))


def test_torch_func_grad_of_grad_matches_autograd_double_backward() -> None:
    """Second order through torch.func (a Hessian-vector product) equals autograd's."""
    x, y = _data(False)
    v = torch.randn_like(x)
    for name in ("squared_emd", "emd_p1", "ground_emd_exact"):
        loss = LOSSES[name][0]
        hvp = grad(lambda z, f=loss: (grad(f)(z, y) * v).sum())(x)
        z = x.detach().requires_grad_(True)
        (g1,) = torch.autograd.grad(loss(z, y), z, create_graph=True)
        (expected,) = torch.autograd.grad((g1 * v).sum(), z)
        torch.testing.assert_close(hvp, expected)


# ----------------------------------------------------------------------------------- autocast


def _linear_logits() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, generator=g), torch.randn(C, 6, generator=g)


MODULES: dict[str, Callable[[], torch.nn.Module]] = {
    "SquaredEMDLoss": lambda: SquaredEMDLoss(),
    "EMDLoss": lambda: EMDLoss(p=2),
    "GroundEMDLoss": lambda: GroundEMDLoss(_D),
    "GroundEMDLoss_sinkhorn": lambda: GroundEMDLoss(_D, method="sinkhorn"),
    "CostMatrixEMDLoss": lambda: CostMatrixEMDLoss(_CM),
    "EMDRecipeLoss": lambda: EMDRecipeLoss(C, emd_term="fixed", cost_matrix=_CM, warmup_epochs=0),
    "EMDRecipeLoss_learned": lambda: EMDRecipeLoss.from_preset("xemd1", C, warmup_epochs=0),
    "EMDRecipeLoss_squared": lambda: EMDRecipeLoss.from_preset("emd2", C),
}


@pytest.mark.parametrize("name", list(LOSSES) + list(MODULES))
def test_autocast_computes_and_returns_float32_like_cross_entropy(name: str) -> None:
    if name in LOSSES:
        loss, soft = LOSSES[name]
    else:
        loss, soft = MODULES[name](), name == "GroundEMDLoss_sinkhorn"
    feats, w = _linear_logits()
    _, y = _data(soft, torch.float32, n=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = F.linear(feats, w)
        assert logits.dtype == torch.bfloat16
        out = loss(logits, y)
        assert F.cross_entropy(logits, torch.zeros(8, dtype=torch.long)).dtype == torch.float32
    assert out.dtype == torch.float32
    # exactly the float32 loss of the bf16 logits (what cross-entropy does), not a rounded one
    torch.testing.assert_close(out, loss(logits.float(), y.float() if soft else y))


def test_autocast_leaves_float64_and_plain_half_alone() -> None:
    x, y = _data(False, torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert EF.squared_emd(x, y).dtype == torch.float64
    assert EF.squared_emd(x.bfloat16(), y).dtype == torch.bfloat16  # no autocast: input dtype


# ------------------------------------------------------------------ torch.compile(fullgraph=True)


def _compile(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    torch._dynamo.reset()
    return torch.compile(fn, backend="aot_eager", fullgraph=True)  # type: ignore[return-value]


@pytest.mark.parametrize("name", _names_marked(list(LOSSES)))
def test_compile_fullgraph_every_path_matches_eager(name: str) -> None:
    loss, soft = LOSSES[name]
    x, y = _data(soft, torch.float32)
    explained = torch._dynamo.explain(loss)(x, y)
    assert explained.graph_break_count == 0, explained.break_reasons
    z = x.clone().requires_grad_(True)
    out = _compile(loss)(z, y)
    out.backward()
    torch.testing.assert_close(out, loss(x, y))
    assert z.grad is not None
    torch.testing.assert_close(z.grad, _autograd_grad(loss, x, y))


@needs_recent_torch
def test_compile_fullgraph_sinkhorn_module_has_no_graph_break() -> None:
    """The Sinkhorn GroundEMDLoss had 8 graph breaks and failed fullgraph on Tensor.tolist()."""
    criterion = GroundEMDLoss(_D, method="sinkhorn")
    x, soft = _data(True, torch.float32)
    explained = torch._dynamo.explain(criterion)(x, soft)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch.testing.assert_close(_compile(criterion)(x, soft), criterion(x, soft))


@needs_recent_torch
def test_compile_fullgraph_recipe_with_learned_ground_distance() -> None:
    """xemd1 under fullgraph compile through the epochs that collect features (item 10)."""
    torch.manual_seed(0)
    compiled_crit = EMDRecipeLoss.from_preset("xemd1", C, warmup_epochs=2)
    eager_crit = EMDRecipeLoss.from_preset("xemd1", C, warmup_epochs=2)
    step = _compile(lambda lg, y, ft: compiled_crit(lg, y, features=ft))
    for _ in range(4):  # warm-up, the collecting last warm-up epoch, two with the learned matrix
        for _ in range(2):
            logits, y, feats = torch.randn(8, C), torch.randint(0, C, (8,)), torch.rand(8, 3)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # dynamo's recompilation notes
                got = step(logits, y, feats)
            torch.testing.assert_close(got, eager_crit(logits, y, features=feats))
        compiled_crit.step_epoch()
        eager_crit.step_epoch()
        torch.testing.assert_close(compiled_crit.ground.matrix, eager_crit.ground.matrix)
    assert int(compiled_crit.ground.num_computes) >= 2


@needs_recent_torch
def test_sinkhorn_vmap_rules_for_a_cost_per_element_and_its_gradient() -> None:
    """The Sinkhorn ops' vmap rules: a batched cost, and per-element gradients of a shared one."""
    from emdloss._sinkhorn import sinkhorn_emd

    g = torch.Generator().manual_seed(3)
    a = torch.softmax(torch.randn(3, 2, C, generator=g, dtype=torch.float64), -1)
    b = torch.softmax(torch.randn(3, 2, C, generator=g, dtype=torch.float64), -1)
    costs = _D.double() * (1.0 + torch.rand(3, 1, 1, generator=g, dtype=torch.float64))

    def total(x: Tensor, y: Tensor, d: Tensor) -> Tensor:
        return sinkhorn_emd(x, y, d).sum()

    looped = torch.stack([total(a[k], b[k], costs[k]) for k in range(3)])
    torch.testing.assert_close(vmap(total)(a, b, costs), looped)
    # per-element gradients with respect to a shared cost matrix
    shared = _D.double()
    per_element = vmap(grad(total, argnums=2), in_dims=(0, 0, None))(a, b, shared)
    expected = []
    for k in range(3):
        d = shared.clone().requires_grad_(True)
        (gd,) = torch.autograd.grad(total(a[k], b[k], d), d)
        expected.append(gd)
    torch.testing.assert_close(per_element, torch.stack(expected))


def test_torch_func_with_the_cpp_implementation_falls_back_to_the_fused_kernels() -> None:
    """The C++ kernel's autograd node cannot be transformed: under torch.func it is not used."""
    x, y = _data(False)

    def one(a: Tensor, b: Tensor) -> Tensor:
        return EF.squared_emd(a[None], b[None])

    expected = vmap(grad(one))(x, y)
    try:
        with emdloss.implementation("cpp"):
            got = vmap(grad(one))(x, y)
            batch = grad(lambda z: EF.squared_emd(z, y))(x)
    except RuntimeError as error:  # no compiler here
        pytest.skip(f"the C++ kernel does not build: {error}")
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(batch, _autograd_grad(LOSSES["squared_emd"][0], x, y))


def test_autocast_under_compile_fullgraph() -> None:
    x, y = _data(False, torch.float32)
    compiled = _compile(lambda a, b: EF.squared_emd(a, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(x.bfloat16(), y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, EF.squared_emd(x.bfloat16().float(), y))
