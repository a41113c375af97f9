"""Smoke test: benchmarks/loss_speed.py runs end to end on a tiny size, so that it cannot rot.

Also runs benchmarks/sinkhorn_memory.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "loss_speed.py"


def test_loss_speed_quick_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], load_script: Any
) -> None:
    pytest.importorskip("ot")  # the benchmark times POT beside our losses
    bench = load_script("benchmarks/loss_speed.py")
    out = tmp_path / "results.json"
    argv = ["--quick", "--batch", "16", "--classes", "8", "--rounds", "2", "--sample-ms", "0.5"]
    argv += ["--pot-batch", "2", "--sinkhorn-batch", "4", "--no-memory", "--json", str(out)]
    argv += ["--accuracy", "--accuracy-pairs", "2", "--accuracy-classes", "4"]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    for row in ("cross_entropy", "squared_emd", "ground_emd[exact]", "ground_emd[sinkhorn]"):
        assert f"| 8 | {row}" in printed
    results = json.loads(out.read_text())
    rows = {r["case"]: r for r in results["timing"]["8"]}
    assert rows["cross_entropy"]["ratio"] == 1.0  # every round divides CE by itself
    assert all(r["ms"] > 0 for r in rows.values())
    accuracy = results["sinkhorn_accuracy"]
    assert len(accuracy["lp"]) == 3 * 4  # cost families x epsilons
    assert all(r["max_abs"] < 0.1 for r in accuracy["lp"] if r["epsilon"] == 0.01)
    assert all(r["ours_nan"] == 0 and r["ours_bad_grad"] == 0 for r in accuracy["pot_contrast"])


def test_peak_memory_in_a_fresh_process(load_script: Any) -> None:
    # One subprocess (importing torch is the slow part), as the full run does per measurement.
    # In a fresh process the input's gradient alone is new memory: at least one input size.
    bench = load_script("benchmarks/loss_speed.py")
    (row,) = bench.measure_memory((2, 16, 64, 64), 1, ("cross_entropy",), 1)
    assert row["case"] == "cross_entropy" and row["input_mib"] == 2 * 16 * 64 * 64 * 4 / 2**20
    assert row["peak_mib"] >= 0.9 * row["input_mib"]
    assert row["spread_mib"] == 0


def test_paths_table_quick_runs(capsys: pytest.CaptureFixture[str], load_script: Any) -> None:
    # The issue-14 table: cross-entropy, the PyTorch default and (where it builds) the kernel,
    # at 1 and 2 threads; the ratio of cross-entropy to itself is 1 in every round.
    bench = load_script("benchmarks/loss_speed.py")
    argv = ["--quick", "--paths", "--classes", "8", "--rounds", "2", "--sample-ms", "0.5"]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    for threads in (1, 2):
        assert f"| {threads} | 64 | 8 | cross_entropy |" in printed
        assert f"| {threads} | 64 | 8 | default (PyTorch) |" in printed
        assert "| 1.00 [1.00, 1.00] |" in printed


def test_sinkhorn_memory_quick_runs() -> None:
    script = SCRIPT.parent / "sinkhorn_memory.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [ln for ln in done.stdout.splitlines() if ln.startswith("| 4 | 30 |")]
    peak_gb = float(row.split("|")[3])
    assert 0 <= peak_gb < 0.5
