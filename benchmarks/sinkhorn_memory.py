"""Peak memory and time of the Sinkhorn path (soft targets, general ground distance).

Each size runs in a fresh Python process (so that one size's peak cannot hide another's):
``emdloss.functional.ground_emd(..., method="sinkhorn")``-equivalent work, i.e.
``emdloss._sinkhorn.sinkhorn_emd`` on N pairs of soft float32 distributions (a softmax of
random logits, seeded) with the cost |i - j|, forward and backward to the logits. The child
reports the increase of its peak resident memory over the resident memory before the call
(``VmHWM`` after ``/proc/self/clear_refs``, Linux; elsewhere the increase of ``ru_maxrss``,
which can under-count) and the wall time of the call; the parent prints one row per size.

Run::

    python benchmarks/sinkhorn_memory.py                    # N=16, C=1000 and N=4, C=4000
    python benchmarks/sinkhorn_memory.py --sizes 16x200     # others, NxC
    python benchmarks/sinkhorn_memory.py --quick            # smoke run (tiny sizes)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

DEFAULT_SIZES = ("16x1000", "4x4000")
QUICK_SIZES = ("4x30",)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def child(n: int, c: int, seed: int) -> dict[str, float | str]:
    """One measurement in this process: forward + backward of N pairs at C classes."""
    import torch

    from emdloss._sinkhorn import sinkhorn_emd

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    gen = torch.Generator().manual_seed(seed)
    pos = torch.arange(c, dtype=torch.float32)
    cost = (pos[:, None] - pos[None, :]).abs()
    logits = (2 * torch.randn(n, c, generator=gen)).requires_grad_(True)
    target = torch.softmax(2 * torch.randn(n, c, generator=gen), dim=1)
    # warm-up on a tiny problem: lazy initialisation is not what we measure
    tiny = torch.softmax(torch.randn(2, 3), 1)
    sinkhorn_emd(tiny, tiny.flip(1), (torch.arange(3.0)[:, None] - torch.arange(3.0)).abs())
    before_kb = _status_kb("VmRSS") or 0
    exact = _reset_peak()
    base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    value = sinkhorn_emd(torch.softmax(logits, 1), target, cost)
    value.sum().backward()
    seconds = time.perf_counter() - start
    if exact:
        peak_kb = (_status_kb("VmHWM") or 0) - before_kb
        how = "VmHWM - VmRSS"
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_maxrss
        how = "ru_maxrss increase (may under-count)"
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    return {
        "n": n,
        "c": c,
        "peak_gb": peak_kb / 2**20,
        "seconds": seconds,
        "value_mean": float(value.mean()),
        "method": how,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=None, help="NxC, e.g. 16x1000")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n, c = (int(v) for v in args.child.split("x"))
        print(json.dumps(child(n, c, args.seed)))
        return
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    print(
        f"# Sinkhorn peak memory, one process per size; {platform.processor() or platform.machine()}"
    )
    print("| N | C | peak added (GB) | time fwd+bwd (s) | how measured |")
    print("|---|---|---|---|---|")
    for size in sizes:
        cmd = [sys.executable, __file__, "--child", size, "--seed", str(args.seed)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            print(f"| {size.split('x')[0]} | {size.split('x')[1]} | failed | - | {tail} |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"| {row['n']} | {row['c']} | {row['peak_gb']:.3f} | {row['seconds']:.1f} "
            f"| {row['method']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
