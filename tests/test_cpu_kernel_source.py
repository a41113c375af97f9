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
import sysconfig
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


@pytest.mark.slow
def test_compiles_without_warnings(tmp_path: Path) -> None:
    compiler = _tool("c++", "g++", "clang++")
    from torch.utils import cpp_extension

    includes = [f"-isystem{path}" for path in cpp_extension.include_paths()]
    python_include = sysconfig.get_paths()["include"]
    cmd = [
        compiler,
        "-std=c++20",  # what torch.utils.cpp_extension passes (ATen needs it since 2.10)
        "-fPIC",
        *_cpu_kernel._FLAGS,
        "-Wall",
        "-Wextra",
        "-Werror",
        *includes,
        f"-isystem{python_include}",
        "-c",
        str(SOURCE),
        "-o",
        str(tmp_path / "squared_emd.o"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-4000:]


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
