"""Smoke test: benchmarks/loss_speed.py runs end to end on a tiny size, so that it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "loss_speed.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("loss_speed", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["loss_speed"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_loss_speed_quick_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load()
    out = tmp_path / "results.json"
    argv = ["--quick", "--batch", "16", "--classes", "8", "--rounds", "2", "--sample-ms", "0.5"]
    argv += ["--pot-batch", "2", "--sinkhorn-batch", "4", "--no-memory", "--json", str(out)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    for row in ("cross_entropy", "squared_emd", "ground_emd[exact]", "ground_emd[sinkhorn]"):
        assert f"| 8 | {row}" in printed
    results = json.loads(out.read_text())
    rows = {r["case"]: r for r in results["timing"]["8"]}
    assert rows["cross_entropy"]["ratio"] == 1.0  # every round divides CE by itself
    assert all(r["ms"] > 0 for r in rows.values())


def test_peak_memory_in_a_fresh_process() -> None:
    # One subprocess (importing torch is the slow part), as the full run does per measurement.
    bench = _load()
    (row,) = bench.measure_memory((2, 8, 16, 16), 1, ("squared_emd",), 1)
    assert row["case"] == "squared_emd" and row["input_mib"] == 2 * 8 * 16 * 16 * 4 / 2**20
    assert row["peak_mib"] >= 0 and row["spread_mib"] == 0
    # In-process, a large input must register: the gradient alone is one input-sized buffer.
    big = bench.memory_child("cross_entropy", (2, 16, 64, 64), 1)
    assert big["peak_mib"] >= 0.9 * big["input_mib"]
