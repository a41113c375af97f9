"""Speed and memory of the EMD losses against cross-entropy, measured side by side in one run.

For batch N (default 1024) and C = 8, 100, 1000 classes this times forward + backward of

* ``F.cross_entropy`` (the denominator of every ratio; with probability targets for the
  soft-target rows),
* ``emdloss.functional.squared_emd`` as a user gets it (the default: on the CPU the C++
  one-pass kernel of ``emdloss._cpu_kernel`` when it is built, else the PyTorch analytic
  kernels), with the C++ kernel kept out (the PyTorch analytic kernels every machine has), on
  each other implementation that ``emdloss._ordinal`` provides (``library``: the
  ``torch.library`` op; ``reference``: pure PyTorch, plain autograd through ``cumsum``), and
  with validation off,
* dlordinal's ``EMDLoss`` (the peer),
* POT's exact LP ``ot.emd2``, one pair at a time (a Python loop over the batch, which is the
  only way POT solves exact problems; on a sub-batch, scaled to N),
* ``emdloss.functional.ground_emd`` with D = |i - j|: the exact closed form for class-index
  targets, and the log-domain Sinkhorn for soft targets (on a sub-batch at large C, scaled),
* the same under ``torch.compile`` (cross-entropy and squared_emd),

and, in a fresh subprocess per measurement, the peak memory of forward + backward on a dense
input of shape (8, 80, 128, 128) (80 ordinal depth bins per pixel) against cross-entropy's.
It also measures the error of the Sinkhorn path against POT's exact LP over random soft
targets and cost matrices, and contrasts POT's ``ot.sinkhorn2`` at small regularisation.

Timing protocol: ``torch.set_num_threads`` fixed (``--threads``, default 1), and with one
thread the clock is the process's CPU time (``time.process_time``), so that other processes
sharing the cores do not inflate the numbers (``--clock wall`` for ``perf_counter``); every
case is warmed up;
then in each of ``--rounds`` rounds every case is timed once (a sample is ``inner`` calls,
chosen per case so that it lasts about ``--sample-ms``), in an order rotated from round to
round so that slow drifts of the machine load hit all cases alike. The ratio to
cross-entropy is taken within each round and the table reports its median and its
interquartile range over the rounds (the noise).

Memory protocol (CPU): a fresh Python process per (loss, shape) builds the input and target,
runs the loss once on a tiny input (so that lazy initialisation is not counted), resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``; Linux), and reports ``VmHWM`` after one
forward + backward minus ``VmRSS`` before it: the peak of resident memory the call added,
the input's gradient included. Where ``clear_refs`` is not available it falls back to the
increase of ``ru_maxrss``, which can under-count. On CUDA it uses
``torch.cuda.max_memory_allocated``.

Run::

    python benchmarks/loss_speed.py --paths     # the two paths at 1 and 2 threads (issue 14)
    python benchmarks/loss_speed.py             # the full table (several minutes)
    python benchmarks/loss_speed.py --quick     # smoke run, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import torch
import torch.nn.functional as F

DENSE_SHAPE = (8, 80, 128, 128)


# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One timed row: ``run()`` does forward + backward of ``scale`` batches' worth of work.

    ``scale`` > 1 when the case runs on a sub-batch (time is multiplied by it); ``baseline``
    names the cross-entropy case it is divided by.
    """

    name: str
    run: Callable[[], None]
    baseline: str = "cross_entropy"
    scale: float = 1.0
    note: str = ""
    samples: list[float] = field(default_factory=list)
    inner: int = 1


def _backward(loss: torch.Tensor, x: torch.Tensor) -> None:
    loss.backward()
    x.grad = None


@contextlib.contextmanager
def _implementation(name: str | None) -> Iterator[None]:
    """The implementation switch of emdloss._ordinal, when there is one."""
    if name is None:
        yield
        return
    from emdloss import _ordinal

    with _ordinal.implementation(name):
        yield


@contextlib.contextmanager
def _pytorch_only() -> Iterator[None]:
    """Keep the C++ CPU kernel out (``EMDLOSS_CPU_KERNEL=0``) even if this process loaded it.

    "fused" uses the C++ kernel whenever it is built; this measures the PyTorch kernels that
    every machine has. Benchmark-only: it also clears the loaded flag of emdloss._cpu_kernel.
    """
    try:
        from emdloss import _cpu_kernel
    except ImportError:
        yield
        return
    previous_env = os.environ.get("EMDLOSS_CPU_KERNEL")
    previous_loaded = _cpu_kernel._state.get("loaded", False)
    os.environ["EMDLOSS_CPU_KERNEL"] = "0"
    _cpu_kernel._state["loaded"] = False
    try:
        yield
    finally:
        _cpu_kernel._state["loaded"] = previous_loaded
        if previous_env is None:
            os.environ.pop("EMDLOSS_CPU_KERNEL", None)
        else:
            os.environ["EMDLOSS_CPU_KERNEL"] = previous_env


def _cpp_kernel_loaded() -> bool:
    try:
        from emdloss import _cpu_kernel
    except ImportError:
        return False
    return bool(_cpu_kernel.is_loaded())


def _implementations() -> tuple[str, ...]:
    try:
        from emdloss import _ordinal
    except ImportError:
        return ()
    return tuple(getattr(_ordinal, "IMPLEMENTATIONS", ()))


def _validation_off() -> contextlib.AbstractContextManager[None]:
    from emdloss import _validation

    return _validation.validation(False)


def build_cases(n: int, c: int, args: argparse.Namespace) -> list[Case]:
    """All timed cases for batch ``n`` and ``c`` classes (index targets unless noted)."""
    from emdloss import functional as EF

    gen = torch.Generator().manual_seed(c)
    x = torch.randn(n, c, generator=gen).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=gen)
    soft = torch.softmax(2 * torch.randn(n, c, generator=gen), dim=1)
    pos = torch.arange(c, dtype=torch.float32)
    dist = (pos[:, None] - pos[None, :]).abs()

    def ce() -> None:
        _backward(F.cross_entropy(x, y), x)

    def ce_soft() -> None:
        _backward(F.cross_entropy(x, soft), x)

    cases = [
        Case("cross_entropy", ce, note="index targets"),
        Case("cross_entropy_soft", ce_soft, note="probability targets"),
    ]

    def squared(impl: str | None, validate: bool = True, cpp: bool = True) -> Callable[[], None]:
        def run() -> None:
            with contextlib.ExitStack() as stack:
                stack.enter_context(_implementation(impl))
                if not validate:
                    stack.enter_context(_validation_off())
                if not cpp:
                    stack.enter_context(_pytorch_only())
                loss = EF.squared_emd(x, y)
            _backward(loss, x)

        return run

    cases.append(
        Case(
            "squared_emd (default)",
            squared(None),
            note="C++ kernel (built here)" if _cpp_kernel_loaded() else "no C++ kernel built",
        )
    )
    impls = _implementations()
    if "fused" in impls:
        cases.append(
            Case("squared_emd[fused, PyTorch only]", squared("fused", cpp=False), note="no C++")
        )
    for impl in impls:
        if impl not in ("fused", "cpp"):  # "fused" = default here, "cpp" = default when built
            cases.append(Case(f"squared_emd[{impl}]", squared(impl)))
    cases.append(Case("squared_emd (default, validation off)", squared(None, False)))

    if not args.no_peers:
        try:
            from dlordinal.losses import EMDLoss
        except ImportError:
            print("dlordinal not installed: skipping its row", file=sys.stderr)
        else:
            dl = EMDLoss(num_classes=c)

            def dlordinal_emd() -> None:
                _backward(dl(x, y), x)

            cases.append(Case("dlordinal EMDLoss", dlordinal_emd))

        try:
            import ot
        except ImportError:
            print("POT not installed: skipping its row", file=sys.stderr)
        else:
            m = min(n, args.pot_batch)
            xs, ys = x[:m], y[:m]
            onehot = F.one_hot(ys, c).to(x.dtype)

            def pot_emd2() -> None:
                p = torch.softmax(xs, dim=1)
                total = sum(ot.emd2(p[k], onehot[k], dist) for k in range(m)) / m
                _backward(total, x)

            cases.append(
                Case("POT ot.emd2 (exact LP, per pair)", pot_emd2, scale=n / m, note=f"{m} pairs")
            )

    def ground_exact() -> None:
        _backward(EF.ground_emd(x, y, dist), x)

    cases.append(Case("ground_emd[exact]", ground_exact))

    m_sk = min(n, args.sinkhorn_batch if c > 8 else n)
    xs_sk, soft_sk = x[:m_sk], soft[:m_sk]

    def ground_sinkhorn() -> None:
        _backward(EF.ground_emd(xs_sk, soft_sk, dist, method="sinkhorn"), x)

    if c <= args.sinkhorn_max_c:
        cases.append(
            Case(
                "ground_emd[sinkhorn] (soft targets)",
                ground_sinkhorn,
                baseline="cross_entropy_soft",
                scale=n / m_sk,
                note=f"{m_sk} pairs" if m_sk < n else "",
            )
        )

    if args.compile:
        compiled_ce = torch.compile(lambda x, y: F.cross_entropy(x, y), dynamic=False)
        compiled_sq = torch.compile(lambda x, y: EF.squared_emd(x, y), dynamic=False)

        def ce_compiled() -> None:
            _backward(compiled_ce(x, y), x)

        def squared_compiled() -> None:
            _backward(compiled_sq(x, y), x)

        cases.append(Case("cross_entropy, torch.compile", ce_compiled))
        cases.append(Case("squared_emd, torch.compile", squared_compiled))
    return cases


# ----------------------------------------------------------------------------- paths table

PATH_SETTINGS = ((1, 1024), (2, 4096))  # (torch threads, batch) of the paths table


def _both_clocks(run: Callable[[], None], inner: int) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) per call over ``inner`` calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(inner):
        run()
    return (time.process_time() - cpu) / inner, (time.perf_counter() - wall) / inner


def paths_table(args: argparse.Namespace) -> list[dict[str, Any]]:
    """squared_emd on the two paths a user can get, against cross-entropy, side by side.

    For each (threads, batch) of ``PATH_SETTINGS`` and each C: forward + backward of
    ``F.cross_entropy``, of ``squared_emd`` on the pure-PyTorch path (what a plain
    ``pip install`` runs) and on the C++ kernel (``implementation("cpp")``, built here if
    needed), timed in interleaved rounds with a rotated order; the ratio to cross-entropy is
    taken within each round (median and IQR over rounds), on process CPU time and on wall
    time. With one thread the CPU-time ratio is the one to read (other processes on the
    machine do not inflate it); with two threads CPU time sums both threads' work and wall
    time is what a user waits for, but is inflated whenever other processes hold the cores.
    """
    from emdloss import _ordinal
    from emdloss import functional as EF

    settings = [(1, 64), (2, 64)] if args.quick else list(PATH_SETTINGS)
    previous_threads = torch.get_num_threads()
    try:
        with _implementation("cpp"):
            kernel = True
    except RuntimeError:
        kernel = False
    rows: list[dict[str, Any]] = []
    for threads, n in settings:
        torch.set_num_threads(threads)
        for c in args.classes:
            gen = torch.Generator().manual_seed(c)
            x = torch.randn(n, c, generator=gen).requires_grad_(True)
            y = torch.randint(0, c, (n,), generator=gen)

            def ce(x: torch.Tensor = x, y: torch.Tensor = y) -> None:
                _backward(F.cross_entropy(x, y), x)

            def pytorch(x: torch.Tensor = x, y: torch.Tensor = y) -> None:
                with _pytorch_only():
                    loss = EF.squared_emd(x, y)
                _backward(loss, x)

            def cpp(x: torch.Tensor = x, y: torch.Tensor = y) -> None:
                with _ordinal.implementation("cpp"):
                    loss = EF.squared_emd(x, y)
                _backward(loss, x)

            cases = {"cross_entropy": ce, "default (PyTorch)": pytorch}
            if kernel:
                cases["C++ kernel"] = cpp
            inner = {}
            for name, run in cases.items():
                for _ in range(args.warmup):
                    run()
                once = _both_clocks(run, 1)[1]
                inner[name] = max(1, min(1000, round(args.sample_ms / 1000 / max(once, 1e-7))))
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
            names = list(cases)
            for r in range(args.rounds):
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    samples[name].append(_both_clocks(cases[name], inner[name]))
            for name in names:
                row: dict[str, Any] = {"threads": threads, "batch": n, "c": c, "path": name}
                for k, clock in enumerate(("cpu", "wall")):
                    ratios = [
                        s[k] / b[k]
                        for s, b in zip(samples[name], samples["cross_entropy"], strict=True)
                    ]
                    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
                    row[f"{clock}_ms"] = statistics.median(s[k] for s in samples[name]) * 1e3
                    row[f"{clock}_ratio"] = statistics.median(ratios)
                    row[f"{clock}_iqr"] = (q[0], q[2])
                rows.append(row)
                print(
                    f"| {threads} | {n} | {c} | {name} | {row['cpu_ms']:.3f} | "
                    f"{row['cpu_ratio']:.2f} [{row['cpu_iqr'][0]:.2f}, {row['cpu_iqr'][1]:.2f}] | "
                    f"{row['wall_ratio']:.2f} [{row['wall_iqr'][0]:.2f}, {row['wall_iqr'][1]:.2f}] |",
                    flush=True,
                )
    torch.set_num_threads(previous_threads)
    if not kernel:
        print("(the C++ kernel could not be built here: its rows are missing)")
    return rows


# ----------------------------------------------------------------------------- timing


def _time(
    run: Callable[[], None], inner: int, sync: Callable[[], None], clock: Callable[[], float]
) -> float:
    sync()
    start = clock()
    for _ in range(inner):
        run()
    sync()
    return (clock() - start) / inner


def measure(
    cases: list[Case],
    args: argparse.Namespace,
    sync: Callable[[], None],
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Warm up, calibrate ``inner`` per case, then time in rotated, interleaved rounds."""
    for case in cases:
        for _ in range(args.warmup):
            case.run()
        once = _time(case.run, 1, sync, clock)
        case.inner = max(1, min(1000, round(args.sample_ms / 1000 / max(once, 1e-7))))
    for r in range(args.rounds):
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            case.samples.append(_time(case.run, case.inner, sync, clock) * case.scale)


def summarise(cases: list[Case]) -> list[dict[str, Any]]:
    """Median time per case and the median / IQR of its per-round ratio to its baseline."""
    by_name = {case.name: case for case in cases}
    rows = []
    for case in cases:
        base = by_name[case.baseline]
        ratios = [t / b for t, b in zip(case.samples, base.samples, strict=True)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        rows.append(
            {
                "case": case.name,
                "ms": statistics.median(case.samples) * 1e3,
                "ratio": statistics.median(ratios),
                "ratio_q1": q[0],
                "ratio_q3": q[2],
                "baseline": case.baseline,
                "note": case.note,
            }
        )
    return rows


def single_shot_sinkhorn(classes: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One call (after none of warm-up) for C too large to repeat: seconds per pair."""
    from emdloss import functional as EF

    rows = []
    for c in classes:
        m = args.single_shot_pairs
        gen = torch.Generator().manual_seed(c)
        x = torch.randn(m, c, generator=gen).requires_grad_(True)
        soft = torch.softmax(2 * torch.randn(m, c, generator=gen), dim=1)
        pos = torch.arange(c, dtype=torch.float32)
        dist = (pos[:, None] - pos[None, :]).abs()
        start = time.perf_counter()
        EF.ground_emd(x, soft, dist, method="sinkhorn").backward()
        seconds = time.perf_counter() - start
        rows.append({"classes": c, "pairs": m, "seconds": seconds})
        print(
            f"\nground_emd[sinkhorn] at C = {c}: one forward + backward on {m} soft pairs took "
            f"{seconds:.1f} s ({seconds / m:.1f} s per pair; single shot, not interleaved)"
        )
    return rows


# ----------------------------------------------------------------------------- accuracy


def sinkhorn_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Error of the Sinkhorn path against POT's exact LP, and POT's own Sinkhorn at small eps."""
    import warnings

    import numpy as np
    import ot

    from emdloss._sinkhorn import sinkhorn_emd

    rng = np.random.default_rng(0)
    m = args.accuracy_pairs
    epsilons = (0.05, 0.01, 0.003, 0.001)
    print(
        f"\nSinkhorn (float64) against the exact LP (POT ot.emd2), {m} pairs per row: a ~ "
        "Dirichlet(1), b ~ Dirichlet(0.5); error = (sinkhorn - exact) / max(D).\n"
    )
    print("| C | D | epsilon | max abs error | median error | min error | not converged |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for c in args.accuracy_classes:
        i = np.arange(c, dtype=float)
        points = rng.normal(size=(c, 3))
        costs = {
            "abs": np.abs(i[:, None] - i[None, :]),
            "squared": (i[:, None] - i[None, :]) ** 2,
            "metric": np.linalg.norm(points[:, None] - points[None, :], axis=-1),
        }
        for name, cost in costs.items():
            a = rng.dirichlet(np.ones(c), size=m)
            b = rng.dirichlet(np.full(c, 0.5), size=m)
            exact = np.array([ot.emd2(a[k], b[k], cost) for k in range(m)])
            for eps in epsilons:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    got = sinkhorn_emd(
                        torch.tensor(a), torch.tensor(b), torch.tensor(cost), epsilon=eps
                    ).numpy()
                err = (got - exact) / cost.max()
                flag = "yes" if caught else ""
                rows.append(
                    {
                        "classes": c,
                        "cost": name,
                        "epsilon": eps,
                        "max_abs": float(np.abs(err).max()),
                        "median": float(np.median(err)),
                        "min": float(err.min()),
                        "warned": bool(caught),
                    }
                )
                print(
                    f"| {c} | {name} | {eps:g} | {np.abs(err).max():.1e} | {np.median(err):.1e} "
                    f"| {err.min():.1e} | {flag} |",
                    flush=True,
                )
    # POT's Sinkhorn (kernel e^{-D/reg} formed explicitly), torch backend so that gradients
    # can be checked too, at the same relative regularisation, pair by pair.
    c, m = 10, min(m, 50)
    i = np.arange(c, dtype=float)
    cost = np.abs(i[:, None] - i[None, :])
    a = rng.dirichlet(np.ones(c), size=m)
    targets = {
        "soft": rng.dirichlet(np.full(c, 0.5), size=m),
        "one-hot": np.eye(c)[rng.integers(0, c, size=m)],
    }
    print(
        f"\nPOT ot.sinkhorn2 (torch backend, reg = epsilon * max(D)) against emdloss on the same "
        f"problems: C = {c}, D = |i - j|, {m} pairs; counts of NaN values, NaN gradients (POT: "
        "or no gradient at all), and values off the exact LP by more than 1e-2 max(D).\n"
    )
    print("| targets | dtype | epsilon | POT NaN value / NaN or no grad / off | emdloss, same |")
    print("|---|---|---|---|---|")
    contrast = []
    for label, b in targets.items():
        exact = np.array([ot.emd2(a[k], b[k], cost) for k in range(m)])
        for dtype in (torch.float32, torch.float64):
            d = torch.tensor(cost, dtype=dtype)
            for eps in (0.05, 0.01, 0.003, 0.001):
                pot_vals, pot_bad_grad = [], 0
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for k in range(m):
                        ak = torch.tensor(a[k], dtype=dtype, requires_grad=True)
                        v = ot.sinkhorn2(ak, torch.tensor(b[k], dtype=dtype), d, eps * cost.max())
                        pot_vals.append(float(v))
                        if v.requires_grad:
                            (grad,) = torch.autograd.grad(v, ak)
                            pot_bad_grad += bool(torch.isnan(grad).any())
                        else:
                            pot_bad_grad += 1
                    aa = torch.tensor(a, dtype=dtype, requires_grad=True)
                    ours_t = sinkhorn_emd(aa, torch.tensor(b, dtype=dtype), d, epsilon=eps)
                    (ours_grad,) = torch.autograd.grad(ours_t.sum(), aa)
                pot, ours = np.array(pot_vals), ours_t.detach().double().numpy()
                row = {
                    "targets": label,
                    "dtype": str(dtype).replace("torch.", ""),
                    "epsilon": eps,
                    "pot_nan": int(np.isnan(pot).sum()),
                    "pot_bad_grad": pot_bad_grad,
                    "pot_off": int((np.abs(pot - exact) > 1e-2 * cost.max()).sum()),
                    "ours_nan": int(np.isnan(ours).sum()),
                    "ours_bad_grad": int(torch.isnan(ours_grad).any(1).sum()),
                    "ours_off": int((np.abs(ours - exact) > 1e-2 * cost.max()).sum()),
                }
                contrast.append(row)
                print(
                    f"| {label} | {row['dtype']} | {eps:g} | {row['pot_nan']} / "
                    f"{row['pot_bad_grad']} / {row['pot_off']} | {row['ours_nan']} / "
                    f"{row['ours_bad_grad']} / {row['ours_off']} |",
                    flush=True,
                )
    return {"lp": rows, "pot_contrast": contrast}


# ----------------------------------------------------------------------------- memory

MEMORY_CASES = (
    "cross_entropy",
    "squared_emd",
    "squared_emd[PyTorch fused]",
    "squared_emd[reference]",
    "ground_emd[exact]",
    "dlordinal EMDLoss",
)


def _loss_fn(name: str, c: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from emdloss import functional as EF

    if name == "cross_entropy":
        return F.cross_entropy
    if name in ("squared_emd", "squared_emd[PyTorch fused]", "squared_emd[reference]"):
        impl = "reference" if name.endswith("[reference]") else None

        def sq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with _implementation(impl if impl in _implementations() else None):
                return EF.squared_emd(x, y)

        return sq
    if name == "ground_emd[exact]":
        pos = torch.arange(c, dtype=torch.float32)
        dist = (pos[:, None] - pos[None, :]).abs()
        return lambda x, y: EF.ground_emd(x, y, dist)
    if name == "dlordinal EMDLoss":
        from dlordinal.losses import EMDLoss

        dl = EMDLoss(num_classes=c)
        # dlordinal takes (N, C) only: the dense input is moved to channels-last rows first
        # (that copy is part of what using it on dense outputs costs).
        return lambda x, y: dl(x.movedim(1, -1).reshape(-1, c), y.reshape(-1))
    raise ValueError(f"unknown memory case {name!r}")


def _proc_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_child(name: str, shape: tuple[int, ...], threads: int) -> dict[str, Any]:
    """Runs in a fresh process: peak resident memory added by one forward + backward."""
    torch.set_num_threads(threads)
    c = shape[1]
    fn = _loss_fn(name, c)
    # Lazy initialisation (kernels, thread pools) on a tiny input, not counted.
    tiny = torch.randn(2, c, 2, 2, requires_grad=True)
    fn(tiny, torch.randint(0, c, (2, 2, 2))).backward()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_(True)
    y = torch.randint(0, c, (shape[0], *shape[2:]), generator=gen)
    method = "VmHWM - VmRSS (clear_refs)"
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak RSS to the current RSS
        before = _proc_kib("VmRSS")
    except OSError:
        before = None
    if before is None:
        method = "ru_maxrss increase (may under-count)"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn(x, y).backward()
    after = _proc_kib("VmHWM") if method.startswith("VmHWM") else None
    if after is None:
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "case": name,
        "peak_mib": (after - before) / 1024,
        "input_mib": x.numel() * x.element_size() / 2**20,
        "method": method,
    }


def measure_memory(
    shape: tuple[int, ...], threads: int, names: tuple[str, ...], repeats: int
) -> list[dict[str, Any]]:
    """One fresh subprocess per measurement; the median over ``repeats`` per case."""
    rows = []
    for name in names:
        if name.startswith("dlordinal"):
            try:
                import dlordinal  # noqa: F401
            except ImportError:
                continue
        values = []
        result: dict[str, Any] = {}
        for _ in range(repeats):
            code = (
                "import json, sys; sys.path.insert(0, sys.argv[1]); import loss_speed as b; "
                "print(json.dumps(b.memory_child(sys.argv[2], tuple(json.loads(sys.argv[3])), "
                "int(sys.argv[4]))))"
            )
            env = dict(os.environ)
            if name == "squared_emd[PyTorch fused]":
                env["EMDLOSS_CPU_KERNEL"] = "0"  # the PyTorch kernels every machine has
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    code,
                    os.path.dirname(os.path.abspath(__file__)),
                    name,
                    json.dumps(list(shape)),
                    str(threads),
                ],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            values.append(result["peak_mib"])
        result["peak_mib"] = statistics.median(values)
        result["spread_mib"] = max(values) - min(values)
        rows.append(result)
    return rows


# ----------------------------------------------------------------------------- CUDA


def _cuda_cases(c: int, args: argparse.Namespace, dev: torch.device) -> list[Case]:
    from emdloss import functional as EF

    gen = torch.Generator(device=dev).manual_seed(c)
    x = torch.randn(args.batch, c, device=dev, generator=gen).requires_grad_(True)
    y = torch.randint(0, c, (args.batch,), device=dev, generator=gen)
    soft = torch.softmax(torch.randn(args.batch, c, device=dev, generator=gen), 1)
    pos = torch.arange(c, dtype=torch.float32, device=dev)
    dist = (pos[:, None] - pos[None, :]).abs()
    m = min(args.batch, args.sinkhorn_batch if c > 8 else args.batch)
    cases = [
        Case("cross_entropy", lambda: _backward(F.cross_entropy(x, y), x)),
        Case("cross_entropy_soft", lambda: _backward(F.cross_entropy(x, soft), x)),
        Case("squared_emd", lambda: _backward(EF.squared_emd(x, y), x)),
        Case("ground_emd[exact]", lambda: _backward(EF.ground_emd(x, y, dist), x)),
    ]
    if c <= args.sinkhorn_max_c:
        cases.append(
            Case(
                "ground_emd[sinkhorn] (soft targets)",
                lambda: _backward(EF.ground_emd(x[:m], soft[:m], dist, method="sinkhorn"), x),
                baseline="cross_entropy_soft",
                scale=args.batch / m,
            )
        )
    return cases


def _cuda_peak_mib(name: str, shape: tuple[int, ...], dev: torch.device) -> float:
    fn = _loss_fn(name, shape[1])
    x = torch.randn(shape, device=dev).requires_grad_(True)
    y = torch.randint(0, shape[1], (shape[0], *shape[2:]), device=dev)
    fn(x, y).backward()  # warm-up
    x.grad = None
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    fn(x, y).backward()
    torch.cuda.synchronize(dev)
    return (torch.cuda.max_memory_allocated(dev) - base) / 2**20


def cuda_section(args: argparse.Namespace) -> None:
    """Timing and peak memory on the GPU (only runs when CUDA is available)."""
    dev = torch.device("cuda")
    print(f"\n## CUDA: {torch.cuda.get_device_name(dev)}\n")
    print("| C | case | ms / fwd+bwd | ratio to CE (median [IQR]) |")
    print("|---|---|---|---|")
    for c in args.classes:
        cases = _cuda_cases(c, args, dev)
        measure(cases, args, torch.cuda.synchronize)
        for row in summarise(cases):
            print(
                f"| {c} | {row['case']} | {row['ms']:.3f} | {row['ratio']:.2f} "
                f"[{row['ratio_q1']:.2f}, {row['ratio_q3']:.2f}] |"
            )
    shape = tuple(args.dense_shape)
    size = torch.Size(shape).numel() * 4 / 2**20
    print(f"\nPeak CUDA memory added by forward + backward, input {shape} ({size:.0f} MiB):\n")
    print("| loss | MiB (max_memory_allocated) |\n|---|---|")
    for name in ("cross_entropy", "squared_emd", "ground_emd[exact]"):
        print(f"| {name} | {_cuda_peak_mib(name, shape, dev):.1f} |")


# ----------------------------------------------------------------------------- main


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, few rounds")
    parser.add_argument("--batch", type=int, default=None, help="batch N (default 1024)")
    parser.add_argument("--classes", type=int, nargs="+", default=None, help="C values")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default=None,
        help="cpu: process CPU time (default with one thread); wall: perf_counter",
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per case")
    parser.add_argument("--sample-ms", type=float, default=None, help="target ms per sample")
    parser.add_argument("--pot-batch", type=int, default=64, help="pairs timed for POT")
    parser.add_argument("--sinkhorn-batch", type=int, default=64, help="pairs for Sinkhorn, C>8")
    parser.add_argument("--single-shot-pairs", type=int, default=2, help="pairs, large-C Sinkhorn")
    parser.add_argument(
        "--sinkhorn-max-c",
        type=int,
        default=100,
        help="largest C with an interleaved Sinkhorn row (above it: one single-shot call)",
    )
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--no-peers", action="store_true", help="skip dlordinal and POT")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--accuracy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Sinkhorn error against the exact LP and the POT NaN contrast (needs POT)",
    )
    parser.add_argument("--accuracy-pairs", type=int, default=None)
    parser.add_argument("--accuracy-classes", type=int, nargs="+", default=None)
    parser.add_argument("--memory-repeats", type=int, default=None)
    parser.add_argument("--dense-shape", type=int, nargs=4, default=None)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument(
        "--paths",
        action="store_true",
        help="only the table of the two paths (PyTorch default, C++ kernel) at 1 and 2 threads",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "batch": 64 if quick else 1024,
        "classes": [8, 100] if quick else [8, 100, 1000],
        "rounds": 3 if quick else 15,
        "warmup": 1 if quick else 3,
        "sample_ms": 2.0 if quick else 40.0,
        "compile": False if quick else True,
        "memory_repeats": 1 if quick else 3,
        "accuracy": False if quick else True,
        "accuracy_pairs": 4 if quick else 100,
        "accuracy_classes": [5] if quick else [5, 10, 30],
        "dense_shape": [2, 8, 16, 16] if quick else list(DENSE_SHAPE),
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if quick:
        args.pot_batch = min(args.pot_batch, 8)
        args.sinkhorn_batch = min(args.sinkhorn_batch, 8)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.clock is None:
        args.clock = "cpu" if args.threads == 1 else "wall"
    # With one thread, the process's CPU time is what the loss costs, whatever else runs on
    # the machine; wall time would charge it for the other processes' share of the cores.
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    results: dict[str, Any] = {
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "batch": args.batch,
        "clock": args.clock,
        "timing": {},
    }
    if args.paths:
        print(
            f"# loss_speed --paths: {results['date']}, torch {results['torch']}, "
            f"{results['machine']}, {results['cpu_count']} CPUs, {args.rounds} rounds\n"
        )
        print("squared_emd forward + backward against F.cross_entropy (index targets, float32)\n")
        print("| threads | batch | C | path | CPU ms | ratio, CPU time [IQR] | ratio, wall [IQR] |")
        print("|---|---|---|---|---|---|---|")
        results["paths"] = paths_table(args)
        if args.json:
            tmp = args.json + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(results, fh, indent=1)
            os.replace(tmp, args.json)
        return 0
    print(
        f"# loss_speed: {results['date']}, torch {results['torch']}, {platform.processor() or ''}"
        f"{results['machine']}, {results['cpu_count']} CPUs, torch threads {args.threads}, "
        f"batch {args.batch}, {args.rounds} rounds, clock: {args.clock}\n"
    )
    print("| C | case | ms / fwd+bwd | ratio to CE (median [IQR]) | note |")
    print("|---|---|---|---|---|")
    for c in args.classes:
        cases = build_cases(args.batch, c, args)
        measure(cases, args, lambda: None, clock)
        rows = summarise(cases)
        results["timing"][str(c)] = rows
        for row in rows:
            note = row["note"]
            if row["baseline"] != "cross_entropy":
                note = (note + "; " if note else "") + "vs CE with probability targets"
            print(
                f"| {c} | {row['case']} | {row['ms']:.3f} | {row['ratio']:.2f} "
                f"[{row['ratio_q1']:.2f}, {row['ratio_q3']:.2f}] | {note} |",
                flush=True,
            )
    if args.accuracy:
        results["sinkhorn_accuracy"] = sinkhorn_accuracy(args)
    big = [c for c in args.classes if c > args.sinkhorn_max_c]
    if big and not args.quick:
        results["sinkhorn_single_shot"] = single_shot_sinkhorn(big, args)
    if args.memory:
        shape = tuple(args.dense_shape)
        names = MEMORY_CASES[:2] if args.quick else MEMORY_CASES
        rows = measure_memory(shape, args.threads, names, args.memory_repeats)
        results["memory"] = {"shape": list(shape), "rows": rows}
        if rows:
            ce = next(r["peak_mib"] for r in rows if r["case"] == "cross_entropy")
            size = rows[0]["input_mib"]
            print(f"\nPeak memory of forward + backward, input {shape} float32 ({size:.1f} MiB);")
            print(f"method: {rows[0]['method']}, fresh process each, median of repeats.\n")
            print("| loss | peak added, MiB | minus CE, in input sizes | spread, MiB |")
            print("|---|---|---|---|")
            for r in rows:
                extra = (r["peak_mib"] - ce) / size
                print(
                    f"| {r['case']} | {r['peak_mib']:.1f} | {extra:+.2f} | {r['spread_mib']:.1f} |"
                )
    if torch.cuda.is_available():
        cuda_section(args)
    else:
        print("\n(no CUDA device: CUDA section skipped)")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(results, fh, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
