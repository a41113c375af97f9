"""The C++ source of the CPU kernel: shipped as package data, warning-free, clang-formatted.

The compile check runs the compiler once on the source with ``-Wall -Wextra -Werror`` (torch's
own headers included with ``-isystem``, so only our code is judged) and the flags of the real
build; it is skipped where no C++ compiler exists, except on CI. The format check is skipped
where ``clang-format`` is not installed (``apt-get install clang-format``), except on CI.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emdloss import _cpu_kernel

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "emdloss" / _cpu_kernel._SOURCE_FILE


def _tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail(f"none of {names} found on CI")
    pytest.skip(f"none of {names} installed")


def test_source_is_the_file_that_ships() -> None:
    assert _cpu_kernel._source() == SOURCE.read_text(encoding="utf-8")
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with (ROOT / "pyproject.toml").open("rb") as fh:
        patterns = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["emdloss"]
    assert any(fnmatch.fnmatch(_cpu_kernel._SOURCE_FILE, pat) for pat in patterns), patterns


def test_the_build_name_hashes_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _cpu_kernel._name()
    monkeypatch.setattr(_cpu_kernel, "_source", lambda: "// another kernel\n")
    assert _cpu_kernel._name() != before


# The tail code has three variants: AVX-512 masks, AVX2 maskload/maskstore, a lane loop.
ARCHES = {"native": "-march=native", "avx2": "-march=haswell", "generic": "-march=x86-64"}


def _compile_command(compiler: str, arch: str, out_dir: Path) -> list[str]:
    from torch.utils import cpp_extension

    includes = [f"-isystem{path}" for path in cpp_extension.include_paths()]
    python_include = sysconfig.get_paths()["include"]
    return [
        compiler,
        "-std=c++20",  # what torch.utils.cpp_extension passes (ATen needs it since 2.10)
        "-fPIC",
        *[ARCHES[arch] if f == "-march=native" else f for f in _cpu_kernel._FLAGS],
        "-Wall",
        "-Wextra",
        "-Werror",
        *includes,
        f"-isystem{python_include}",
        "-c",
        str(SOURCE),
        "-o",
        str(out_dir / f"squared_emd_{arch}.o"),
    ]


@dataclass
class _Job:
    """A command running in the background, its output going to two files."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def wait(self) -> tuple[int, str, str]:
        code = self.process.wait()
        return (
            code,
            self.stdout.read_text(errors="replace"),
            self.stderr.read_text(errors="replace"),
        )


def _start(command: list[str], logs: Path, env: dict[str, str] | None = None) -> _Job:
    stdout, stderr = logs.with_suffix(".out"), logs.with_suffix(".err")
    with stdout.open("wb") as out, stderr.open("wb") as err:
        return _Job(subprocess.Popen(command, stdout=out, stderr=err, env=env), stdout, stderr)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, _Job]]:
    """The slow builds of this module, started together: each arch's full ``-O3`` compile and
    the AVX2 extension build (~15 s each, one core apiece); the tests only wait, so running them
    side by side uses the machine's other core(s). Each test then judges its own build."""
    compiler = _tool("c++", "g++", "clang++")
    root = tmp_path_factory.mktemp("kernel_builds")
    jobs = {arch: _start(_compile_command(compiler, arch, root), root / arch) for arch in ARCHES}
    if "avx2" in Path("/proc/cpuinfo").read_text():
        extensions = root / "extensions"
        env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions), "EMDLOSS_CPU_KERNEL": "1"}
        jobs["avx2_check"] = _start([sys.executable, "-c", _AVX2_CHECK], root / "check", env)
    try:
        yield jobs
    finally:
        for job in jobs.values():
            if job.process.poll() is None:  # no test waited for it (deselected, interrupted)
                job.process.kill()
            job.process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHES))
def test_compiles_without_warnings(builds: dict[str, _Job], arch: str) -> None:
    code, _, stderr = builds[arch].wait()
    assert code == 0, stderr[-4000:]


def test_clang_formatted() -> None:
    clang_format = _tool("clang-format")
    result = subprocess.run(
        [clang_format, "--dry-run", "--Werror", str(SOURCE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=SOURCE.parent,  # picks up csrc/.clang-format
    )
    assert result.returncode == 0, result.stderr[-4000:]


_AVX2_CHECK = """
import torch
from emdloss import _cpu_kernel, _ordinal
from emdloss.functional import squared_emd
_cpu_kernel._FLAGS = tuple("-march=haswell" if f == "-march=native" else f for f in _cpu_kernel._FLAGS)
assert _cpu_kernel.build()
g = torch.Generator().manual_seed(0)
for c in (3, 8, 13, 100):
    for dtype in (torch.float32, torch.float64):
        x = (torch.randn(37, c, generator=g, dtype=torch.float64) * 3).to(dtype)
        y = torch.randint(0, c, (37,), generator=g)
        pos = torch.cumsum(torch.rand(c, generator=g, dtype=torch.float64) + 0.1, 0)
        for kw in ({}, {"positions": pos}):
            a = x.detach().clone().requires_grad_()
            b = x.detach().double().clone().requires_grad_()
            with _ordinal.implementation("cpp"):
                out = squared_emd(a, y, reduction="none", **kw)
            assert "SquaredEmd" in out.grad_fn.name() or any(
                n is not None and "SquaredEmd" in n.name() for n, _ in out.grad_fn.next_functions
            )
            with _ordinal.implementation("reference"):
                ref = squared_emd(b, y, reduction="none", **kw)
            w = torch.randn(37, dtype=torch.float64)
            out.backward(w.to(dtype)); ref.backward(w)
            tol = 1e-5 if dtype == torch.float32 else 1e-12
            torch.testing.assert_close(out.double(), ref.detach(), rtol=tol, atol=tol)
            torch.testing.assert_close(a.grad.double(), b.grad, rtol=tol, atol=tol)
print("ok")
"""


@pytest.mark.slow
def test_avx2_build_matches_reference(builds: dict[str, _Job]) -> None:
    # This machine's build uses the AVX-512 tails; an AVX2 build (-march=haswell, run here
    # because AVX-512 CPUs run AVX2 code) checks the maskload/maskstore variant numerically.
    if "avx2_check" not in builds:
        pytest.skip("this CPU cannot run AVX2 code")
    code, stdout, stderr = builds["avx2_check"].wait()
    assert code == 0 and "ok" in stdout, stderr[-4000:]
