"""Tests of the log-domain Sinkhorn EMD (emdloss._sinkhorn) against POT's exact LP and Sinkhorn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import emdloss._sinkhorn as sk
from emdloss._sinkhorn import DEFAULT_EPSILON, sinkhorn_emd

# Measured worst case of |sinkhorn_emd - exact LP| / max(cost) at the default epsilon = 0.01
# over Dirichlet soft targets, C <= 30 and the three cost families below: 3.8e-3 (squared
# cost, C = 30; see docs/benchmarks.md). The test asserts 5e-3, a little margin above it.
DEFAULT_BOUND = 5e-3


def _costs(c: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    i = np.arange(c, dtype=float)
    points = rng.normal(size=(c, 3))
    return {
        "abs": np.abs(i[:, None] - i[None, :]),
        "squared": (i[:, None] - i[None, :]) ** 2,
        "metric": np.linalg.norm(points[:, None] - points[None, :], axis=-1),  # random metric
    }


def _pairs(c: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Concentration 0.5 gives many near-empty classes: the hard, near-degenerate case.
    return rng.dirichlet(np.ones(c), size=m), rng.dirichlet(np.full(c, 0.5), size=m)


def _exact(a: np.ndarray, b: np.ndarray, cost: np.ndarray) -> np.ndarray:
    ot = pytest.importorskip("ot")
    return np.array([ot.emd2(a[k], b[k], cost) for k in range(len(a))])


@pytest.mark.parametrize("c", [5, 12])
@pytest.mark.parametrize("name", ["abs", "squared", "metric"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_default_epsilon_error_against_exact_lp(c: int, name: str, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(c)
    cost = _costs(c, rng)[name]
    a, b = _pairs(c, 48, rng)
    exact = _exact(a, b, cost)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it must converge at the default settings
        got = sinkhorn_emd(
            torch.tensor(a, dtype=dtype),
            torch.tensor(b, dtype=dtype),
            torch.tensor(cost, dtype=dtype),
        )
    assert got.dtype == dtype and got.shape == (48,)
    err = (got.double().numpy() - exact) / cost.max()
    assert np.abs(err).max() <= DEFAULT_BOUND
    # The entropic plan is feasible (to tol), so its cost cannot be below the LP optimum.
    assert err.min() >= -1e-4


def test_error_shrinks_with_epsilon() -> None:
    rng = np.random.default_rng(3)
    cost = _costs(8, rng)["metric"]
    a, b = _pairs(8, 32, rng)
    exact = _exact(a, b, cost)
    errors = []
    for eps in (0.1, 0.03, 0.01, 0.003):
        got = sinkhorn_emd(torch.tensor(a), torch.tensor(b), torch.tensor(cost), epsilon=eps)
        errors.append(np.abs(got.numpy() - exact).max())
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.2 * errors[0]


@pytest.mark.parametrize("eps", [0.1, 0.05, 0.02])
def test_matches_pot_sinkhorn2(eps: float) -> None:
    ot = pytest.importorskip("ot")
    # Same entropic problem (KL to a b^T and POT's entropy give the same plan); POT's
    # sinkhorn2 returns the transport cost <F, D> of that plan, as we do.
    rng = np.random.default_rng(7)
    for cost in _costs(7, rng).values():
        a, b = _pairs(7, 6, rng)
        got = sinkhorn_emd(torch.tensor(a), torch.tensor(b), torch.tensor(cost), epsilon=eps)
        want = [
            ot.sinkhorn2(a[k], b[k], cost, eps * cost.max(), stopThr=1e-13, numItermax=200_000)
            for k in range(len(a))
        ]
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-7, atol=1e-9 * cost.max())


@pytest.mark.parametrize("eps", [0.05, 0.01, 1e-3, 1e-4])
def test_one_hot_marginals_exact_and_finite(eps: float) -> None:
    # With a one-hot target the only feasible plan is a e_y^T: EMD = sum_i a_i D[i, y] exactly.
    # The last row is soft, so the whole batch goes through the iterations (not the shortcut).
    rng = np.random.default_rng(11)
    cost = torch.tensor(_costs(6, rng)["squared"])
    logits = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 5, 2, 3, 0])
    b = torch.cat([torch.nn.functional.one_hot(y, 6).double(), torch.full((1, 6), 1 / 6)])
    a = torch.softmax(logits, dim=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the soft row may not converge at 1e-4
        got = sinkhorn_emd(a, b, cost, epsilon=eps, max_iter=100)
    want = (a[:5] * cost[:, y].T).sum(1)
    torch.testing.assert_close(got[:5], want, rtol=1e-9, atol=1e-12)
    assert torch.isfinite(got).all()
    got[:5].sum().backward(retain_graph=True)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    (grad_want,) = torch.autograd.grad(want.sum(), logits)
    torch.testing.assert_close(logits.grad, grad_want, rtol=1e-6, atol=1e-9)
    # One-hot inputs against one-hot and soft targets, also through the iterations.
    a_hot = torch.nn.functional.one_hot(torch.tensor([1, 4, 2, 0, 0, 3]), 6).double()
    both = sinkhorn_emd(a_hot, b, cost, epsilon=eps)
    torch.testing.assert_close(both[:5], cost[a_hot[:5].argmax(1), y])
    torch.testing.assert_close(both[5], cost[3].mean())
    soft = torch.softmax(torch.randn(6, 6, dtype=torch.float64), 1)
    other = sinkhorn_emd(a_hot, soft, cost, epsilon=eps)
    torch.testing.assert_close(other, (soft * cost[a_hot.argmax(1)]).sum(1))


def test_all_one_hot_targets_shortcut_matches_iterations() -> None:
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(12)
    cost = torch.tensor(_costs(7, rng)["metric"])
    za = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    b = torch.nn.functional.one_hot(torch.tensor([6, 0, 3, 3]), 7).double()
    shortcut = sinkhorn_emd(torch.softmax(za, 1), b, cost)
    padded = torch.cat([b, torch.full((1, 7), 1 / 7, dtype=torch.float64)])
    za_pad = torch.cat([za, torch.zeros(1, 7, dtype=torch.float64)])
    iterated = sinkhorn_emd(torch.softmax(za_pad, 1), padded, cost)[:4]
    torch.testing.assert_close(shortcut, iterated, rtol=1e-9, atol=1e-12)
    (g1,) = torch.autograd.grad(shortcut.sum(), za)
    (g2,) = torch.autograd.grad(iterated.sum(), za)
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-9)
    want = [
        ot.emd2(p, t, cost.numpy())
        for p, t in zip(torch.softmax(za, 1).detach().numpy(), b.numpy(), strict=True)
    ]
    np.testing.assert_allclose(shortcut.detach().numpy(), want, rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_epsilon_soft_marginals_stay_finite(dtype: torch.dtype) -> None:
    # At epsilon = 1e-3 the kernel exp(-D / eps) underflows (POT's sinkhorn2 gives NaN or 0);
    # in the log domain values and gradients stay finite, with zeros in the marginals too.
    rng = np.random.default_rng(5)
    cost = torch.tensor(_costs(8, rng)["abs"], dtype=dtype)
    logits = torch.randn(16, 8, dtype=dtype, requires_grad=True)
    b = torch.tensor(_pairs(8, 16, rng)[1], dtype=dtype)
    b[:, 3] = 0.0
    b = b / b.sum(1, keepdim=True)
    exact = _exact(
        torch.softmax(logits, 1).detach().double().numpy(),
        b.double().numpy(),
        cost.double().numpy(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # convergence at 1e-3 is not promised
        got = sinkhorn_emd(torch.softmax(logits, 1), b, cost, epsilon=1e-3, max_iter=200)
    assert torch.isfinite(got).all()
    got.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert np.abs(got.detach().double().numpy() - exact).max() <= 0.02 * float(cost.max())


def test_gradcheck_float64() -> None:
    # Parametrise a, b by logits: only perturbations that keep the rows on the simplex are
    # meaningful. The cost has a unique maximum (max(cost) sets epsilon and is differentiated).
    rng = np.random.default_rng(2)
    c = 5
    cost = torch.tensor(rng.uniform(0.5, 2.0, size=(c, c)))
    cost.fill_diagonal_(0.1)  # > 0: gradcheck perturbs every entry both ways
    cost[0, 4] = 3.0
    cost.requires_grad_(True)
    za = torch.randn(3, c, dtype=torch.float64, requires_grad=True)
    zb = torch.randn(3, c, dtype=torch.float64, requires_grad=True)

    def fn(za: torch.Tensor, zb: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        a, b = torch.softmax(za, 1), torch.softmax(zb, 1)
        return sinkhorn_emd(a, b, cost, epsilon=0.05, tol=1e-13)

    assert torch.autograd.gradcheck(fn, (za, zb, cost), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_with_zero_target_entries() -> None:
    # Zero entries in the target: the log is masked, the gradient is still exact.
    c = 6
    i = torch.arange(c, dtype=torch.float64)
    cost = (i[:, None] - i[None, :]).abs()
    b = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0, 0.0], [0.2, 0.0, 0.0, 0.0, 0.3, 0.5]]).double()
    za = torch.randn(2, c, dtype=torch.float64, requires_grad=True)

    def fn(za: torch.Tensor) -> torch.Tensor:
        return sinkhorn_emd(torch.softmax(za, 1), b, cost, epsilon=0.05, tol=1e-13)

    assert torch.autograd.gradcheck(fn, (za,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_batched_equals_per_pair() -> None:
    rng = np.random.default_rng(9)
    cost = torch.tensor(_costs(9, rng)["metric"])
    a, b = (torch.tensor(x) for x in _pairs(9, 10, rng))
    za = torch.log(a).requires_grad_(True)
    batched = sinkhorn_emd(torch.softmax(za, 1), b, cost)
    (grad_batched,) = torch.autograd.grad(batched.sum(), za)
    for k in range(10):
        zk = za[k : k + 1].detach().requires_grad_(True)
        single = sinkhorn_emd(torch.softmax(zk, 1), b[k : k + 1], cost)
        (grad_single,) = torch.autograd.grad(single.sum(), zk)
        torch.testing.assert_close(single[0], batched[k], rtol=0, atol=1e-8)
        torch.testing.assert_close(grad_single[0], grad_batched[k], rtol=1e-5, atol=1e-7)


def test_chunked_equals_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pairs are solved in memory-bounded chunks (issue 14): chunks of one pair give the values
    # and gradients (to a, b and the shared cost) of one batch, including max(cost) in epsilon.
    rng = np.random.default_rng(11)
    cost = torch.tensor(_costs(8, rng)["metric"]).requires_grad_(True)
    a, b = (torch.tensor(x) for x in _pairs(8, 5, rng))
    za = torch.log(a).requires_grad_(True)

    def run() -> tuple[torch.Tensor, ...]:
        value = sinkhorn_emd(torch.softmax(za, 1), b, cost)
        return (value, *torch.autograd.grad((value * torch.arange(1.0, 6.0)).sum(), (za, cost)))

    assert sk._chunk_pairs(8) >= 5  # one chunk by default
    whole = run()
    monkeypatch.setattr(sk, "CHUNK_BYTES", 1)
    assert sk._chunk_pairs(8) == 1
    for got, want in zip(run(), whole, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_chunk_size_follows_the_budget() -> None:
    # _BUFFERS_PER_PAIR float64 C x C buffers per pair within CHUNK_BYTES; at least one pair.
    per_pair = sk._BUFFERS_PER_PAIR * 8 * 1000 * 1000
    assert sk._chunk_pairs(1000) == sk.CHUNK_BYTES // per_pair == 2
    assert sk._chunk_pairs(4000) == 1
    assert sk._chunk_pairs(10) > 1000


def test_sinkhorn_only_path_for_many_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    ot = pytest.importorskip("ot")
    # Above _NEWTON_MAX_C classes only Sinkhorn steps are taken: same fixed point.
    rng = np.random.default_rng(4)
    cost = _costs(7, rng)["metric"]
    a, b = _pairs(7, 8, rng)
    with_newton = sinkhorn_emd(torch.tensor(a), torch.tensor(b), torch.tensor(cost), epsilon=0.05)
    monkeypatch.setattr(sk, "_NEWTON_MAX_C", 0)
    plain = sinkhorn_emd(
        torch.tensor(a), torch.tensor(b), torch.tensor(cost), epsilon=0.05, max_iter=20_000
    )
    torch.testing.assert_close(plain, with_newton, rtol=0, atol=1e-7)
    want = [ot.sinkhorn2(a[k], b[k], cost, 0.05 * cost.max(), stopThr=1e-13) for k in range(8)]
    np.testing.assert_allclose(plain.numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(6)
    cost = torch.tensor(_costs(5, rng)["abs"], dtype=torch.float32)
    a, b = (torch.tensor(x, dtype=torch.float32) for x in _pairs(5, 4, rng))
    ref = sinkhorn_emd(a, b, cost)
    got = sinkhorn_emd(a.to(dtype), b.to(dtype), cost.to(dtype))
    assert got.dtype == dtype
    # Only the rounding of the inputs and of the output differ (b is rescaled to a's mass).
    a16, b16 = a.to(dtype).float(), b.to(dtype).float()
    ref_rounded = sinkhorn_emd(
        a16, b16 * (a16.sum(1, keepdim=True) / b16.sum(1, keepdim=True)), cost
    )
    torch.testing.assert_close(got.float(), ref_rounded.to(dtype).float())
    assert (got.float() - ref).abs().max() < 0.05


def test_zero_cost_and_empty_batch() -> None:
    a = torch.softmax(torch.randn(3, 4), 1)
    b = torch.softmax(torch.randn(3, 4), 1)
    assert torch.equal(sinkhorn_emd(a, b, torch.zeros(4, 4)), torch.zeros(3))
    empty = sinkhorn_emd(torch.zeros(0, 4), torch.zeros(0, 4), torch.ones(4, 4))
    assert empty.shape == (0,)


def test_non_convergence_warns() -> None:
    rng = np.random.default_rng(8)
    cost = torch.tensor(_costs(8, rng)["abs"])
    a, b = (torch.tensor(x) for x in _pairs(8, 8, rng))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        sinkhorn_emd(a, b, cost, epsilon=1e-3, max_iter=1)


def test_default_epsilon_is_documented_value() -> None:
    assert DEFAULT_EPSILON == 0.01


@pytest.mark.parametrize(
    ("a", "b", "cost", "kwargs", "match"),
    [
        (torch.ones(2, 3) / 3, torch.ones(2, 4) / 4, torch.ones(3, 3), {}, "shape"),
        (
            torch.ones(2, 3) / 3,
            torch.ones(2, 3) / 3,
            torch.ones(3, 4),
            {},
            r"cost must have shape \(3, 3\)",
        ),
        (torch.ones(3) / 3, torch.ones(3) / 3, torch.ones(3, 3), {}, "shape"),
        (
            torch.tensor([[1.5, -0.5]]),
            torch.tensor([[0.5, 0.5]]),
            torch.ones(2, 2),
            {},
            "a must be",
        ),
        (
            torch.tensor([[0.5, 0.5]]),
            torch.tensor([[float("nan"), 0.5]]),
            torch.ones(2, 2),
            {},
            "b must be",
        ),
        (
            torch.tensor([[0.5, 0.5]]),
            torch.tensor([[0.5, 0.5]]),
            -torch.ones(2, 2),
            {},
            "cost must be",
        ),
        (torch.tensor([[0.5, 0.5]]), torch.tensor([[0.5, 0.6]]), torch.ones(2, 2), {}, "same mass"),
        (
            torch.tensor([[0.5, 0.5]]),
            torch.tensor([[0.5, 0.5]]),
            torch.ones(2, 2),
            {"epsilon": 0.0},
            "epsilon",
        ),
        (
            torch.tensor([[0.5, 0.5]]),
            torch.tensor([[0.5, 0.5]]),
            torch.ones(2, 2),
            {"max_iter": 0},
            "max_iter",
        ),
        (
            torch.tensor([[0.5, 0.5]]),
            torch.tensor([[0.5, 0.5]]),
            torch.ones(2, 2),
            {"tol": -1.0},
            "tol",
        ),
    ],
)
def test_bad_input_raises(
    a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, kwargs: dict[str, float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        sinkhorn_emd(a, b, cost, **kwargs)  # type: ignore[arg-type]


def test_integer_tensor_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        sinkhorn_emd(torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2), torch.ones(2, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(10)
    cost = torch.tensor(_costs(10, rng)["metric"])
    a, b = (torch.tensor(x) for x in _pairs(10, 64, rng))
    cpu = sinkhorn_emd(a, b, cost)
    gpu = sinkhorn_emd(a.cuda(), b.cuda(), cost.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-7)
