"""The compiled C++ CPU kernel of squared_emd against the pure-PyTorch reference path.

The kernel is built once per test session (30-50 s on a busy 2-core machine, once per machine:
later sessions load the cached build). Where no C++ compiler exists the tests are skipped,
except on CI, where a failed build is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import torch

from emdloss import _cpu_kernel, _ordinal
from emdloss.functional import squared_emd

RTOL = ATOL = 1e-12


@pytest.fixture(scope="module")
def built() -> None:
    if shutil.which("c++") is None and shutil.which("g++") is None and not os.environ.get("CI"):
        pytest.skip("no C++ compiler")
    assert _cpu_kernel.build(), "the C++ CPU kernel failed to build"


@pytest.fixture
def kernel(built: None) -> Iterator[None]:
    """The kernel runs only when asked for: every test here asks for it."""
    with _ordinal.implementation("cpp"):
        yield


def _reference(x: torch.Tensor, target: torch.Tensor, **kw: object) -> torch.Tensor:
    with _ordinal.implementation("reference"):
        return squared_emd(x, target, **kw)  # type: ignore[arg-type]


def _uses_kernel(out: torch.Tensor) -> bool:
    """Whether the C++ autograd node is in the graph (behind a reshape or dtype cast)."""
    nodes = [out.grad_fn]
    for _ in range(3):
        if any(node is not None and "SquaredEmd" in node.name() for node in nodes):
            return True
        nodes = [nxt for node in nodes if node is not None for nxt, _ in node.next_functions]
    return False


def _case(seed: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, object]]:
    g = torch.Generator().manual_seed(seed)
    c = int(torch.randint(2, 40, (1,), generator=g)) if seed % 3 else 100 + seed
    n = int(torch.randint(0 if seed == 5 else 1, 9, (1,), generator=g))
    spatial = [(), (3,), (2, 3)][seed % 3]
    x = torch.randn(n, c, *spatial, generator=g, dtype=torch.float64) * 4
    target = torch.randint(0, c, (n, *spatial), generator=g)
    kw: dict[str, object] = {
        "normalization": ["class_mean", "sum", "rps"][seed % 3],
        "reduction": ["mean", "sum", "none"][(seed // 3) % 3],
    }
    ignore = 1 if seed % 7 == 6 else -100  # also an ignore_index inside [0, C)
    if ignore != -100:
        kw["ignore_index"] = ignore
    if seed % 2 and target.numel() > 1:
        target.view(-1)[0] = ignore
    if seed % 4 == 1:
        kw["weight"] = torch.rand(c, generator=g, dtype=torch.float64) + 0.1
    if seed % 5 in (2, 3):
        kw["positions"] = torch.cumsum(torch.rand(c, generator=g, dtype=torch.float64) + 0.1, 0)
    return x, target, kw


@pytest.mark.parametrize("seed", range(24))
def test_kernel_matches_reference(kernel: None, seed: int) -> None:
    x, target, kw = _case(seed)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    out = squared_emd(a, target, **kw)  # type: ignore[arg-type]
    ref = _reference(b, target, **kw)
    assert _uses_kernel(out)
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL, equal_nan=True)
    grad = torch.randn_like(out)
    if ref.numel() and bool(ref.isfinite().all()):
        out.backward(grad)
        ref.backward(grad)
        torch.testing.assert_close(a.grad, b.grad, rtol=RTOL, atol=ATOL)


def test_gradcheck(kernel: None) -> None:
    x = torch.randn(3, 5, 2, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0, 4], [2, -100], [3, 1]])
    pos = torch.tensor([0.0, 1.0, 3.0, 3.5, 7.0], dtype=torch.float64)
    for reduction in ("none", "mean"):
        assert _uses_kernel(squared_emd(x, target, reduction=reduction))
        assert torch.autograd.gradcheck(
            lambda z, r=reduction: squared_emd(z, target, positions=pos, reduction=r), (x,)
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision(kernel: None, dtype: torch.dtype) -> None:
    x = torch.randn(64, 1000, dtype=torch.float64) * 3
    target = torch.randint(0, 1000, (64,))
    a = x.to(dtype).requires_grad_()
    out = squared_emd(a, target)
    assert out.dtype == dtype and _uses_kernel(out)
    out.backward()
    b = a.detach().double().requires_grad_()
    ref = _reference(b, target)
    ref.backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=0.0)
    assert a.grad is not None and b.grad is not None
    scale = float(b.grad.abs().max())
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=tol, atol=tol * scale)


def test_extreme_and_nan_logits(kernel: None) -> None:
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 0.0, 1e4]], requires_grad=True)
    target = torch.tensor([1, 0])
    out = squared_emd(x, target)
    out.backward()
    assert _uses_kernel(out) and torch.isfinite(out) and torch.isfinite(x.grad).all()
    torch.testing.assert_close(out, _reference(x.detach(), target))
    nan = torch.tensor([[0.0, float("nan"), 1.0]])
    assert torch.isnan(squared_emd(nan, torch.tensor([0])))


def test_bad_index_gives_the_usual_error(kernel: None) -> None:
    x, target = torch.zeros(2, 3), torch.tensor([0, 3])
    with pytest.raises(ValueError, match=r"class index 3 at position \(1,\)"):
        squared_emd(x, target)


def test_outside_the_supported_case_falls_back(kernel: None) -> None:
    x = torch.randn(4, 5).softmax(1)
    y = torch.tensor([0, 1, 2, 4])
    assert not _uses_kernel(squared_emd(x.requires_grad_(), y, input_type="probs"))
    soft = torch.full((4, 5), 0.2)
    assert not _uses_kernel(squared_emd(torch.randn(4, 5, requires_grad=True), soft))
    with _ordinal.implementation("reference"):
        assert not _uses_kernel(squared_emd(torch.randn(4, 5, requires_grad=True), y))


@pytest.mark.parametrize("setting", [None, "auto", "0"])
def test_a_build_alone_does_not_select_the_kernel(
    built: None, setting: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 9): ``auto`` used the kernel as soon as anyone had built it, so the
    numbers of a run depended on the machine's cache. Now only an explicit request selects it."""
    if setting is None:
        monkeypatch.delenv("EMDLOSS_CPU_KERNEL", raising=False)
    else:
        monkeypatch.setenv("EMDLOSS_CPU_KERNEL", setting)
    assert _cpu_kernel.is_loaded()  # built and loaded in this very process
    assert _ordinal.current_implementation() == "fused"
    x, y = torch.randn(4, 5, requires_grad=True), torch.zeros(4).long()
    assert not _uses_kernel(squared_emd(x, y))
    with _ordinal.implementation("cpp"):
        assert _ordinal.current_implementation() == "cpp"
        assert _uses_kernel(squared_emd(x, y))
    assert _ordinal.current_implementation() == "fused"


def test_environment_selects_the_kernel(built: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMDLOSS_CPU_KERNEL", "1")
    assert _ordinal.current_implementation() == "cpp"
    x, y = torch.randn(4, 5, requires_grad=True), torch.zeros(4).long()
    assert _uses_kernel(squared_emd(x, y))
    with _ordinal.implementation("fused"):  # an explicit block wins over the environment
        assert not _uses_kernel(squared_emd(x, y))
    monkeypatch.setenv("EMDLOSS_CPU_KERNEL", "maybe")
    with pytest.raises(ValueError, match="EMDLOSS_CPU_KERNEL"):
        _cpu_kernel.mode()


def test_failed_build_warns_once_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setattr(_cpu_kernel, "_state", {})
    monkeypatch.setattr(_cpu_kernel, "_FLAGS", ("--no-such-flag-for-emdloss",))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("EMDLOSS_CPU_KERNEL", "1")
    x, y = torch.randn(4, 5, requires_grad=True), torch.tensor([0, 1, 2, 4])
    with pytest.warns(RuntimeWarning, match="C\\+\\+ CPU kernel is unavailable"):
        out = squared_emd(x, y)
    assert not _uses_kernel(out)
    assert _ordinal.current_implementation() == "fused"
    torch.testing.assert_close(out, _reference(x.detach(), y))
    with _ordinal.implementation("fused"):  # no second warning, no second build attempt
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            squared_emd(x, y)


def test_build_kernel_command(kernel: None, capsys: pytest.CaptureFixture[str]) -> None:
    from emdloss.cli import main

    assert main(["build-kernel"]) == 0
    out = capsys.readouterr().out
    assert "squared_emd.cpp" in out and "-march=native" in out and "nothing to do" in out


def test_build_kernel_command_failure_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from emdloss.cli import main

    monkeypatch.setattr(_cpu_kernel, "_state", {})
    monkeypatch.setattr(_cpu_kernel, "_FLAGS", ("--no-such-flag-for-emdloss",))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert main(["build-kernel"]) == 2
    err = capsys.readouterr().err
    assert "did not build" in err and "emdloss[cpu-kernel]" in err


@pytest.mark.parametrize("seed", [1, 2, 4, 6, 9, 13, 17])
def test_second_order_is_exact_in_every_case(kernel: None, seed: int) -> None:
    """create_graph=True differentiates the C++ op's ATen formula: weights, gaps, ignore_index,
    every reduction (gradgradcheck also varies the incoming gradient)."""
    x, target, kw = _case(seed)
    x = x[:3, :7].contiguous().requires_grad_()  # small: gradgradcheck is numerical
    target = target[:3].clamp(max=6)
    if "weight" in kw:
        kw["weight"] = kw["weight"][:7]  # type: ignore[index]
    if "positions" in kw:
        kw["positions"] = kw["positions"][:7]  # type: ignore[index]
    assert _uses_kernel(squared_emd(x, target, **kw))  # type: ignore[arg-type]
    assert torch.autograd.gradgradcheck(lambda z: squared_emd(z, target, **kw), (x,))  # type: ignore[arg-type]


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("leaf", [True, False])
def test_backward_leaves_the_kept_gradient_intact(kernel: None, reduction: str, leaf: bool) -> None:
    """The backward scales the forward's gradient in place only when the graph is freed after
    it: with retain_graph=True a second backward must give the same gradient even after the
    first one was modified in place (as optimizers and gradient clipping do)."""
    x0 = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 9, (6,))
    x = x0 if leaf else x0 * 1.0
    out = squared_emd(x, target, reduction=reduction)
    assert _uses_kernel(out)
    expected = torch.autograd.grad(_reference(x0, target, reduction=reduction).sum() * 3, x0)[0]
    grad_out = torch.full_like(out, 3.0)
    out.backward(grad_out, retain_graph=True)
    first = x0.grad.clone()  # type: ignore[union-attr]
    torch.testing.assert_close(first, expected, rtol=RTOL, atol=ATOL)
    x0.grad.mul_(-7.0)  # type: ignore[union-attr]
    x0.grad = None
    out.backward(grad_out)  # the graph is freed after this one: the in-place path
    torch.testing.assert_close(x0.grad, expected, rtol=RTOL, atol=ATOL)
    one = squared_emd(x0, target)  # grad_output 1: the kept gradient is handed on unscaled
    (g,) = torch.autograd.grad(one, x0)
    (g_ref,) = torch.autograd.grad(_reference(x0, target), x0)
    torch.testing.assert_close(g, g_ref, rtol=RTOL, atol=ATOL)


def test_kernel_shares_torchs_openmp_threads(built: None) -> None:
    """Regression (issue 14): compiled without -fopenmp, ``at::parallel_for``'s pragma was
    ignored and the kernel ran on one thread whatever ``torch.set_num_threads`` said. Where
    torch runs on OpenMP, the build must call into it."""
    library = (_cpu_kernel._build_dir() / f"{_cpu_kernel._name()}.so").read_bytes()
    if not _cpu_kernel._openmp():
        pytest.skip("torch is not built with GNU OpenMP on this platform")
    assert "-fopenmp" in _cpu_kernel._flags()
    assert b"GOMP_parallel" in library
    # and it still agrees with the PyTorch path when several threads split the rows
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        x = torch.randn(3000, 40, dtype=torch.float64, requires_grad=True)
        y = torch.randint(0, 40, (3000,))
        with _ordinal.implementation("cpp"):
            out = squared_emd(x, y)
        assert _uses_kernel(out)
        torch.testing.assert_close(out, _reference(x, y), rtol=RTOL, atol=ATOL)
    finally:
        torch.set_num_threads(threads)
