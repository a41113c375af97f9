"""Shared test set-up: real data from ../shared/data, quiet and reproducible torch, the core set.

The core test modules (``CORE_TEST_FILES``, paths relative to ``tests/``) test the package root,
which needs only torch and numpy. They must run on such a minimal install (CI's minimal and minimum-versions jobs): each
oracle (SciPy, POT, dlordinal, ...) is imported with ``pytest.importorskip`` inside the test that
uses it, so a core module that skips as a whole is an error here. Their tests get the ``core``
marker (``pytest -m core``). Other modules skip as a whole when an extra they need is missing.

``EMDLOSS_REQUIRE_EXTRAS=1`` (set by ``make test``, whose venv has every extra) turns a skip for
a module that could not be imported into a failure, so the full run never hides a missing oracle.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests._runs import copy_run, trained_run

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "EMDLOSS_DATA" not in os.environ and _SHARED.is_dir():
    os.environ["EMDLOSS_DATA"] = str(_SHARED)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def data_dir() -> Path:
    """The directory holding the real data sets (retinamnist.npz, ...)."""
    path = Path(os.environ.get("EMDLOSS_DATA", _SHARED))
    if not (path / "retinamnist.npz").is_file():
        message = f"real data not found under {path} (set EMDLOSS_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has ../shared/data: a skip there would hide a gap
        pytest.skip(message)
    return path


# Test modules of the torch + numpy core, by path relative to tests/ (a test's path mirrors the
# package it tests, so a basename such as test_functional.py is not unique): kept runnable with
# no extra installed.
CORE_TEST_FILES = frozenset(
    {
        "test_cpu_kernel.py",
        "test_decoding.py",
        "test_functional.py",
        "test_functional_second_order.py",
        "test_ground.py",
        "test_ground_ddp.py",
        "test_losses.py",
        "test_ordinal_settings.py",
        "test_recipe.py",
        "test_sinkhorn.py",
        "test_validation.py",
    }
)
_IMPORT_SKIP = "could not import"  # how pytest.importorskip words its skip
_TESTS = Path(__file__).resolve().parent


def _is_core(path: Path) -> bool:
    """Whether the test module at ``path`` is one of ``CORE_TEST_FILES``."""
    resolved = path.resolve()
    return resolved.is_relative_to(_TESTS) and (
        resolved.relative_to(_TESTS).as_posix() in CORE_TEST_FILES
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_core(item.path):
            item.add_marker(pytest.mark.core)


def _skip_message(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)


def _fail(report: pytest.CollectReport | pytest.TestReport, why: str) -> None:
    report.outcome = "failed"
    report.longrepr = f"{why}: {_skip_message(report)}"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    report: pytest.CollectReport = yield
    if report.skipped and isinstance(collector, pytest.Module):
        if _is_core(collector.path):
            _fail(
                report,
                "a core test module must run with only torch and numpy installed "
                "(use pytest.importorskip inside the tests that need an oracle)",
            )
        elif os.environ.get("EMDLOSS_REQUIRE_EXTRAS") and _IMPORT_SKIP in _skip_message(report):
            _fail(report, "EMDLOSS_REQUIRE_EXTRAS is set but a module is missing")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report: pytest.TestReport = yield
    if (
        report.skipped
        and os.environ.get("EMDLOSS_REQUIRE_EXTRAS")
        and _IMPORT_SKIP in _skip_message(report)
    ):
        _fail(report, "EMDLOSS_REQUIRE_EXTRAS is set but a module is missing")
    return report


@pytest.fixture
def load_script() -> Callable[[str], ModuleType]:
    """Import a repository script (``scripts/...``, ``benchmarks/...``) as a module, by its path
    relative to the repository (registered in ``sys.modules``, where dataclasses look it up)."""

    def load(relative: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module

    return load


# The runner of two_gloo_ranks: each rank joins the group, calls the test's work(rank, data) and
# saves what it returns.
_GLOO_RUNNER = textwrap.dedent(
    """
    import datetime

    import torch
    import torch.distributed as dist


    def run(index, first_rank, world, init, data_file, out_dir):
        rank = first_rank + index
        torch.set_num_threads(1)
        timeout = datetime.timedelta(seconds=120)
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world, timeout=timeout)
        try:
            out = work(rank, torch.load(data_file, weights_only=False))
            torch.save(out, f"{out_dir}/out{rank}.pt")
            dist.barrier()
        finally:
            dist.destroy_process_group()
    """
)


@pytest.fixture
def two_gloo_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str, object], list[Mapping[str, torch.Tensor]]]:
    """Run ``work(rank, data) -> dict of tensors``, defined by the source text ``source``, on
    two spawned gloo processes and return each rank's dict. ``data`` reaches both through
    ``torch.save``.

    Both ranks are children, not the test process: with torch 2.5 (the minimum-versions CI
    job) ``destroy_process_group`` can deadlock (the gloo process group's destructor joins a
    thread that waits for the GIL the destructor holds). A rank stuck there after both results
    are written is killed; the results are whole by then (each rank writes before the barrier).
    """
    import torch.multiprocessing as mp

    def run(source: str, data: object) -> list[Mapping[str, torch.Tensor]]:
        name = f"emdloss_gloo_worker_{tmp_path.name}"
        (tmp_path / f"{name}.py").write_text(_GLOO_RUNNER + textwrap.dedent(source))
        torch.save(data, tmp_path / "data.pt")
        monkeypatch.syspath_prepend(str(tmp_path))  # spawned children get the parent's sys.path
        worker = importlib.import_module(name)
        init = f"file://{tmp_path / 'rendezvous'}"
        files = (str(tmp_path / "data.pt"), str(tmp_path))
        outs = [tmp_path / f"out{rank}.pt" for rank in (0, 1)]
        ctx = mp.start_processes(
            worker.run, args=(0, 2, init, *files), nprocs=2, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + 180
        written = None  # when both results were on disk
        try:
            while not ctx.join(timeout=1):
                now = time.monotonic()
                if written is None and all(out.exists() for out in outs):
                    written = now
                if written is not None and now - written > 30:
                    break  # stuck in destroy_process_group with its results written
                assert now < deadline, "the gloo ranks did not finish in 180 s"
        finally:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
        return [torch.load(out) for out in outs]

    return run


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run (``tests._runs``; do not modify: use ``run``)."""
    return trained_run(tmp_path_factory.mktemp("shared"))


@pytest.fixture
def run(shared_run: Path, tmp_path: Path) -> Path:
    """A private copy of the shared run."""
    return copy_run(shared_run, tmp_path / "run")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray cluster for every Ray test: starting one costs several seconds, and
    ``compare(executor="ray")`` joins a running session instead of starting its own."""
    ray = pytest.importorskip("ray")
    # Ray's workers unpickle test functions by their dotted names (``tests.compare...``): the
    # directory those names hang from goes on the workers' path before the cluster starts.
    root = str(Path(__file__).resolve().parents[1])
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = root + os.pathsep + os.pathsep.join(sys.path)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
