"""scripts/paired_runs.py pairs two compare outputs by seed, with compare's paired-t verdict."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("scipy")

FIELDS = ["dataset", "loss", "setting", "seed", "fold", "rule", "accuracy", "mae", "qwk", "rps"]


def _output(root: Path, name: str, loss: str, maes: list[float]) -> Path:
    out = root / name
    out.mkdir()
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        for seed, mae in enumerate(maes):
            row = {"dataset": "lev", "loss": loss, "setting": "", "seed": seed, "fold": ""}
            writer.writerow(row | {"rule": "argmax", "accuracy": 0.5, "mae": mae, "qwk": 0.5})
        # another loss in the same file must not be read
        writer.writerow({"dataset": "lev", "loss": "ce", "seed": 0, "rule": "argmax", "mae": 9})
    return out


def test_pairs_by_seed_and_words_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], load_script: Any
) -> None:
    import numpy as np
    from scipy import stats

    base = [0.40, 0.45, 0.43, 0.50, 0.41, 0.47]
    better = [v - 0.03 + 0.002 * (-1) ** i for i, v in enumerate(base)]
    a = _output(tmp_path, "a", "xemd1", better)
    b = _output(tmp_path, "b", "xemd1", base)
    same = _output(tmp_path, "c", "xemd1", [v + 0.01 * (-1) ** i for i, v in enumerate(base)])
    module = load_script("scripts/paired_runs.py")
    assert module.main([f"{a}:xemd1", f"{b}:xemd1", "--label-a", "learned"]) == 0
    out = capsys.readouterr().out
    d = np.array(better) - np.array(base)
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert f"{d.mean():+.3f} [{low:+.3f}, {high:+.3f}]*" in out
    assert "| lev | argmax | mae |" in out and "learned beats xemd1" in out
    assert "learned ties with xemd1 |" in out  # accuracy: no difference
    module.main([f"{same}:xemd1", f"{b}:xemd1"])
    assert "xemd1 ties with xemd1" in capsys.readouterr().out
    # Hold-outs of the same rows per seed: the corrected resampled interval, wider by
    # sqrt(1 + n * ratio).
    assert module.main([f"{a}:xemd1", f"{b}:xemd1", "--test-train-ratio", str(3 / 7)]) == 0
    out = capsys.readouterr().out
    half = (high - low) / 2 * np.sqrt(1 + len(d) * 3 / 7)
    assert f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]" in out


def test_bad_arguments_name_what_is_wrong(tmp_path: Path, load_script: Any) -> None:
    module = load_script("scripts/paired_runs.py")
    with pytest.raises(SystemExit, match="OUTPUT_DIR:LOSS"):
        module.main(["nocolon", "x:y"])
    with pytest.raises(SystemExit, match=r"results\.csv does not exist"):
        module.main([f"{tmp_path}:xemd1", f"{tmp_path}:ce"])
