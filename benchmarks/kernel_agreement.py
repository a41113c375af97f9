"""How closely the C++ CPU kernel and the PyTorch path agree, in float32 (and float64).

For a few shapes and seeds this computes ``squared_emd`` (logits, class-index targets) and its
gradient with ``implementation("cpp")`` and with ``implementation("fused")`` (the PyTorch
analytic kernels), both against a float64 reference, and prints the largest absolute and
relative differences. The two implementations sum in different orders (SIMD lanes, a
polynomial ``exp``), so they agree to rounding, not bit for bit.

Run: ``python benchmarks/kernel_agreement.py`` (builds the kernel if needed, 25-50 s).
"""

from __future__ import annotations

import argparse

import torch

import emdloss
from emdloss import _ordinal
from emdloss.functional import squared_emd

SHAPES = ((64, 5), (1024, 8), (1024, 100), (256, 1000), (8, 10, 32, 32))


def _run(impl: str, x: torch.Tensor, y: torch.Tensor, reduction: str) -> tuple[torch.Tensor, ...]:
    z = x.clone().requires_grad_(True)
    with _ordinal.implementation(impl):
        loss = squared_emd(z, y, reduction=reduction)
    (grad,) = torch.autograd.grad(loss.sum(), z)
    return loss.detach(), grad


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a64, b64 = a.double(), b.double()
    absolute = float((a64 - b64).abs().max())
    scale = float(b64.abs().max())
    return absolute, absolute / scale if scale > 0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if not emdloss.build_cpu_kernel():
        raise SystemExit("the C++ CPU kernel could not be built here")
    print(f"torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(
        "dtype   shape              reduction  quantity  cpp-vs-fused abs / rel    "
        "cpp-vs-f64 rel   fused-vs-f64 rel"
    )
    for dtype in (torch.float32, torch.float64):
        for shape in SHAPES:
            for reduction in ("mean", "none"):
                worst = {k: [0.0, 0.0, 0.0, 0.0] for k in ("loss", "grad")}
                for seed in range(args.seeds):
                    g = torch.Generator().manual_seed(seed)
                    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 3
                    y = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
                    ref = _run("reference", x, y, reduction)
                    cpp = _run("cpp", x.to(dtype), y, reduction)
                    fused = _run("fused", x.to(dtype), y, reduction)
                    for k, name in enumerate(("loss", "grad")):
                        a, r = _diff(cpp[k], fused[k])
                        w = worst[name]
                        w[0], w[1] = max(w[0], a), max(w[1], r)
                        w[2] = max(w[2], _diff(cpp[k], ref[k])[1])
                        w[3] = max(w[3], _diff(fused[k], ref[k])[1])
                for name, w in worst.items():
                    print(
                        f"{str(dtype)[6:]:8s}{shape!s:19s}{reduction:11s}{name:10s}"
                        f"{w[0]:10.2e} / {w[1]:8.2e}      {w[2]:8.2e}         {w[3]:8.2e}"
                    )


if __name__ == "__main__":
    main()
