"""Smoke test: benchmarks/train_overhead.py (issue 20) runs its plain loop and times a process,
so that it cannot rot."""

from __future__ import annotations

import sys
from typing import Any

import pytest

pytest.importorskip("skordinal")


def test_the_plain_loop_trains_and_a_process_is_timed(load_script: Any) -> None:
    bench = load_script("benchmarks/train_overhead.py")
    mae = bench.plain_loop("lev", epochs=2, batch_size=64, seed=0)
    # LEV's 5 classes: better than always predicting the most common class (MAE 0.72).
    assert 0.0 <= mae < 0.72
    wall, cpu = bench._timed([sys.executable, "-c", "sum(range(10**6))"])
    assert wall > 0 and cpu > 0
