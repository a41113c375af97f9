"""A small trained run shared by the tests of run directories (trained once per session by the
fixtures ``shared_run`` and ``run`` of tests/conftest.py, copied per test so that each test may
tamper with its own copy)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from emdloss.cli import main

QUICK = ["--accelerator", "cpu", "--no-progress"]


def write_grades(path: Path, n: int, seed: int, with_target: bool = True) -> None:
    """A CSV of two numeric features and an ordered target low < mid < high."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x1", "x2", *(["grade"] if with_target else [])])
        for _ in range(n):
            x1, x2 = rng.normal(size=2)
            score = x1 + 0.5 * x2 + rng.normal(0, 0.3)
            grade = "low" if score < -0.5 else ("mid" if score < 0.6 else "high")
            writer.writerow([f"{x1:.4f}", f"{x2:.4f}", *([grade] if with_target else [])])


def train_args(data: Path, output: Path, *extra: str) -> list[str]:
    """``emdloss train`` arguments of a one-epoch run on ``data``."""
    args = ["train", "--dataset", f"csv:{data}", "--target", "grade"]
    args += ["--classes", "low,mid,high", "--loss", "emd2", "--epochs", "1", "--seed", "0"]
    return [*args, "--output", str(output), *QUICK, *extra]


def trained_run(root: Path) -> Path:
    """Train (once per ``root``) and return the run directory."""
    run = root / "run"
    if not (run / "metrics.json").is_file():
        data = root / "grades.csv"
        write_grades(data, 240, seed=0)
        assert main(train_args(data, run)) == 0
    return run


def copy_run(run: Path, target: Path) -> Path:
    """A private copy of ``run``."""
    shutil.copytree(run, target)
    return target
