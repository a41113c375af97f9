r"""The fused C++ CPU kernel of :func:`emdloss.functional.squared_emd`, compiled on demand.

One pass per row (rows spread over threads with ``at::parallel_for``) computes the softmax, the
CDF scan, the loss and the analytic gradient; SIMD through GCC/Clang vector extensions, with
in-register prefix sums and a polynomial ``exp`` for float32. With :math:`p` the softmax of the
logits, :math:`P = \operatorname{cumsum}(p)`, :math:`D_k = P_k - [k \ge y]`, gap weights
:math:`w` (ones by default), :math:`E = w D`, :math:`X_j = \sum_{k<j} E_k` and a row factor
:math:`c` (class weight, normalisation and the mean's denominator),

.. math::

    L = c \sum_k E_k D_k, \qquad
    \frac{\partial L}{\partial z_j} = 2 c\, p_j \Bigl(\sum_k E_k - \sum_k E_k P_k - X_j\Bigr).

The forward keeps that gradient, so the backward (registered in C++ with
``torch::autograd::Function`` behind the ``torch.library`` op ``emdloss_cpu::squared_emd``)
is one multiplication by the incoming gradient and runs no Python.

Supported case: CPU, float32/float64 input shaped (N, C, S), int64 class-index targets
(N, S), logits, optional gaps, class weights and ``ignore_index``, any reduction. Everything
else stays on the pure-PyTorch paths of :mod:`emdloss._ordinal`.

The source is ``emdloss/csrc/squared_emd.cpp`` (package data; clang-formatted and compiled with
``-Wall -Wextra -Werror`` by ``tests/test_cpu_kernel_source.py``).

Building takes 25-50 s on 2 cores (one compiler run) and needs a C++ compiler, ninja and the torch headers
(gcc/clang from the system, ninja from the ``cpu-kernel`` extra, the headers from the torch
wheel). The library goes to
``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) under a name that hashes the
source, the flags, the torch version and the CPU, so a stale or foreign build is never loaded.
It is compiled with ``-march=native`` for the machine that builds it.

When it is used: only when asked for, never merely because a build exists (results must not
depend on what the machine's cache holds; the kernel and the PyTorch path agree to rounding,
not bit for bit, see ``docs/losses.md``). Ask for it for a block with
``emdloss._ordinal.implementation("cpp")``, or for the process with the
``EMDLOSS_CPU_KERNEL`` environment variable:

``"1"``
    The default implementation is ``"cpp"``: the kernel is built on first use (once per
    machine) and used; if it cannot be built, one warning and the PyTorch kernels.
``"0"``, ``"auto"`` or unset (default)
    The default implementation is ``"fused"`` (PyTorch kernels). ``"auto"`` used to mean "the
    kernel if already built"; it is kept as a synonym of ``"0"``.

:func:`emdloss.current_implementation` tells which implementation is in effect.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
import threading
import warnings
from importlib import resources
from pathlib import Path

import torch

__all__ = ["build", "is_loaded", "mode"]

_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-Wno-ignored-attributes")


def _openmp() -> bool:
    """Whether the kernel is compiled with OpenMP: where torch itself runs on GNU OpenMP (Linux).

    ATen's ``at::parallel_for`` is a header template around ``#pragma omp parallel``: compiled
    without ``-fopenmp`` the pragma is ignored and the kernel ran on one thread whatever
    ``torch.set_num_threads`` said (measured: 567 us at B = 4096, C = 100 on one thread and on
    two). With it, the calls resolve to the libgomp that torch has already loaded (same soname),
    so the kernel shares torch's intra-op threads and their setting.
    """
    return sys.platform.startswith("linux") and torch.backends.openmp.is_available()


def _flags() -> list[str]:
    """The compiler flags: :data:`_FLAGS`, plus ``-fopenmp`` where :func:`_openmp` says so."""
    return [*_FLAGS, *(["-fopenmp"] if _openmp() else [])]


# What this process has loaded ("loaded") or failed to build ("failed"). Process state, not a
# setting: a shared library, once loaded, is loaded for every thread. Which implementation runs
# is chosen per context in emdloss._ordinal; the lock keeps two threads from building at once.
_state: dict[str, bool] = {}
_lock = threading.Lock()

# The C++ source ships as package data (csrc/squared_emd.cpp) so that compilers, linters and
# clang-format see it; read once per process.
_SOURCE_FILE = "csrc/squared_emd.cpp"


@functools.cache
def _source() -> str:
    return resources.files("emdloss").joinpath(_SOURCE_FILE).read_text(encoding="utf-8")


def _cpu_signature() -> str:
    """What the ``-march=native`` code depends on: the CPU model and its feature flags."""
    text = platform.machine() + platform.processor()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return text
    lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return text + "\n".join(sorted(set(lines)))


def _name() -> str:
    key = "\n".join([_source(), " ".join(_flags()), torch.__version__, _cpu_signature()])
    return "emdloss_cpu_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _build_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "torch_extensions"
    return base / _name()


def mode() -> str:
    """The ``EMDLOSS_CPU_KERNEL`` setting: ``"auto"`` (default; same as ``"0"``), ``"1"`` or ``"0"``.

    Examples
    --------
    >>> mode() in ("auto", "1", "0")
    True
    """
    value = os.environ.get("EMDLOSS_CPU_KERNEL", "auto").strip().lower()
    if value not in ("auto", "1", "0"):
        raise ValueError(f"EMDLOSS_CPU_KERNEL must be 'auto', '1' or '0', got {value!r}")
    return value


def is_loaded() -> bool:
    """Whether the kernel is loaded in this process (loading an existing build if there is one).

    Never compiles.

    Examples
    --------
    >>> isinstance(is_loaded(), bool)
    True
    """
    if _state.get("loaded"):
        return True
    if _state.get("failed"):
        return False
    library = _build_dir() / f"{_name()}.so"
    if not library.is_file():
        return False
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError) as err:
        _fail(err)
        return False
    _state["loaded"] = True
    return True


def build(*, verbose: bool = False) -> bool:
    """Compile (once per machine) and load the kernel; False, with one warning, if that fails.

    Parameters
    ----------
    verbose : bool
        Show the compiler's output.

    Returns
    -------
    bool
        Whether the kernel is now loaded.

    Examples
    --------
    >>> import emdloss._cpu_kernel as k
    >>> k.build() if k.is_loaded() else True  # doctest: +SKIP
    True
    """
    with _lock:
        return _build(verbose)


def _build(verbose: bool) -> bool:
    if is_loaded():
        return True
    if _state.get("failed"):
        return False
    from torch.utils.cpp_extension import load  # lazy: imports setuptools and friends

    directory = _build_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        source = directory / "squared_emd.cpp"
        if not source.is_file() or source.read_text() != _source():
            tmp = directory / f".squared_emd.cpp.{os.getpid()}"
            tmp.write_text(_source())
            os.replace(tmp, source)  # atomic: a concurrent build never reads half a file
        load(
            name=_name(),
            sources=[str(source)],
            extra_cflags=_flags(),
            extra_ldflags=["-fopenmp"] if _openmp() else [],
            build_directory=str(directory),
            is_python_module=False,
            verbose=verbose,
        )
    except Exception as err:  # any toolchain failure: fall back to the PyTorch kernels
        _fail(err)
        return False
    _state["loaded"] = True
    return True


def _fail(err: BaseException) -> None:
    _state["failed"] = True
    warnings.warn(
        f"emdloss: the C++ CPU kernel is unavailable ({type(err).__name__}: {err}); "
        "using the PyTorch kernels instead",
        RuntimeWarning,
        stacklevel=4,
    )


def ensure() -> bool:
    """Whether the process default asks for the kernel and it can be used (may build for ``"1"``)."""
    return mode() == "1" and build()
