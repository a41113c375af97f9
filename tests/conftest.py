"""Shared test set-up: real data from ../shared/data, quiet and reproducible torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
