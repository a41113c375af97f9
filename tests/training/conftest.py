"""Fixtures of the training tests: one small trained run per session (``run``, a private copy)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _runs import copy_run, trained_run


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run (do not modify: use ``run``)."""
    return trained_run(tmp_path_factory.mktemp("shared"))


@pytest.fixture
def run(shared_run: Path, tmp_path: Path) -> Path:
    """A private copy of the shared run."""
    return copy_run(shared_run, tmp_path / "run")
