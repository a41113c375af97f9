"""Through the command line: each bad input of issue 8 ends with exit code 2 and one line.

The library-level tests (data/test_csv_cells.py, data/test_dataset_damaged.py,
training/test_losses_options.py) check the messages; these check that ``emdloss train`` turns
them into one line without a traceback, before or during training.
"""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")

from PIL import Image

from emdloss.cli import main

QUICK = ["--epochs", "1", "--accelerator", "cpu", "--no-progress", "--batch-size", "8"]


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    # Warnings about the data (a tiny validation split) may come first; the error is one line.
    lines = [line for line in err.splitlines() if ": warning: " not in line]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _table(path: Path, bad: str | None = None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "z", "grade"])
        for i in range(60):
            x = bad if (bad is not None and i == 30) else f"{0.1 * i:.1f}"
            writer.writerow([x, (7 * i) % 11, i % 3])
    return path


@pytest.mark.parametrize("bad", ["x", "inf", "1e309", "\x00"])
def test_a_bad_csv_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str) -> None:
    data = _table(tmp_path / "t.csv", bad)
    argv = ["train", "--dataset", f"csv:{data}", "--target", "grade", "--loss", "emd2"]
    err = _one_line_exit_2(capsys, [*argv, "--output", str(tmp_path / "run"), *QUICK])
    assert f"line 32 (data row 31), column 'x': {bad!r}" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_wrongly_typed_loss_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _table(tmp_path / "t.csv")
    argv = ["train", "--dataset", f"csv:{data}", "--target", "grade", "--loss", "xemd1"]
    argv += ["--loss-option", "mu=banana", "--output", str(tmp_path / "run"), *QUICK]
    err = _one_line_exit_2(capsys, argv)
    assert "loss 'xemd1': loss option mu is 'banana' (str); expected a finite number" in err


def test_a_decompression_bomb_met_during_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    for grade in ("mild", "severe"):
        (images / grade).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(images / grade / f"{i}.png")

    # Every image of one class claims 100000 x 100000 pixels, so the training meets one.
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    for path in (images / "severe").iterdir():
        path.write_bytes(bomb)
    argv = ["train", "--dataset", f"folder:{images}", "--classes", "mild,severe"]
    argv += ["--loss", "emd2", "--model", "cnn", "--output", str(tmp_path / "run"), *QUICK]
    err = _one_line_exit_2(capsys, argv)
    assert "refusing image" in err and "decompression bomb" in err
    assert str(images / "severe") in err


def test_a_truncated_npz_read_without_verification(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 5).reshape(n, 1)
    path = tmp_path / "retinamnist.npz"
    np.savez_compressed(path, **arrays)
    path.write_bytes(path.read_bytes()[:5000])
    argv = ["train", "--dataset", "retinamnist", "--data-dir", str(tmp_path)]
    argv += ["--data-option", "verify=false", "--data-option", "download=false"]
    argv += ["--output", str(tmp_path / "run"), *QUICK]
    with pytest.warns(UserWarning, match="not verified"):
        err = _one_line_exit_2(capsys, argv)
    assert str(path) in err and "download it afresh" in err


def test_predict_refuses_a_value_that_would_standardise_to_inf(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "new.csv"
    rows.write_text("x1,x2\n0.5,0.1\n1e308,-0.2\n", encoding="utf-8")
    err = _one_line_exit_2(capsys, ["predict", str(run), str(rows)])
    assert f"{rows}, line 3: column 'x1' holds 1e+308" in err


def test_an_unknown_data_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It was reported as an internal error with a traceback (a TypeError of the loader)."""
    data = _table(tmp_path / "t.csv")
    argv = ["train", "--dataset", f"csv:{data}", "--target", "grade"]
    argv += ["--data-option", "votes=votes_", "--output", str(tmp_path / "run"), *QUICK]
    err = _one_line_exit_2(capsys, argv)
    assert err.startswith(
        f"emdloss train: error: unknown option(s) ['votes'] for dataset 'csv:{data}'"
    )
    assert "valid options: " in err and "count_columns" in err
    assert not (tmp_path / "run").exists()
