"""scripts/select_on_validation.py chooses on validation data and reports test data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def _run(root: Path, name: str, val_mae: float, test_mae: float) -> Path:
    out = root / name
    for seed in range(2):
        metrics = dict.fromkeys(
            ("accuracy", "one_off_accuracy", "mae", "rmse", "qwk", "rps", "amae"), 0.5
        )
        run = out / "runs" / "lev" / "emd2" / f"seed{seed}"
        run.mkdir(parents=True)
        content = {
            "dataset": "lev",
            "loss": "emd2",
            "val": {"argmax": dict(metrics, mae=val_mae + seed * 0.01)},
            "test": {"argmax": dict(metrics, mae=test_mae + seed * 0.02)},
        }
        (run / "metrics.json").write_text(json.dumps(content), encoding="utf-8")
    return out


def test_choice_follows_validation_not_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], load_script: Any
) -> None:
    # "a" is better on validation, "b" would be better on test: "a" must be chosen.
    a = _run(tmp_path, "a", val_mae=0.3, test_mae=0.9)
    b = _run(tmp_path, "b", val_mae=0.6, test_mae=0.1)
    assert (
        load_script("scripts/select_on_validation.py").main([str(b), str(a), "--metric", "mae"])
        == 0
    )
    row = next(line for line in capsys.readouterr().out.splitlines() if "| lev |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "`a`" and cells[3] == "2"
    assert cells[4] == "0.305 ± 0.007"  # validation MAE of "a"
    assert cells[7] == "0.910 ± 0.014"  # its test MAE, not b's 0.110
