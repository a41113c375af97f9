"""Decompression bombs and truncated data files end in one UserError naming the file.

Issue 8, finding 5: a decompression-bomb image gave a ``PIL.Image.DecompressionBombError``
traceback, and a truncated RetinaMNIST npz read with ``verify=false`` a ``BadZipFile`` one.

Named for emdloss.data._dataset (load_image); also covers the npz checks of
emdloss.data.retinamnist.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")

from PIL import Image

from emdloss.data import load_dataset
from emdloss.data._dataset import load_image
from emdloss.data.retinamnist import load_retinamnist
from emdloss.errors import UserError


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    data = zlib.compress(b"\x00" * 64)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
    path.write_bytes(png + chunk(b"IEND", b""))
    return path


def test_a_header_claiming_ten_billion_pixels_is_refused_by_name(tmp_path: Path) -> None:
    bomb = _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(UserError) as caught:
        load_image(bomb, 8)
    message = str(caught.value)
    assert str(bomb) in message and "decompression bomb" in message and "\n" not in message


def test_an_image_over_the_pixel_limit_is_refused_not_just_warned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)
    # 1200 pixels: over a limit of 1000 (Pillow itself only warns below twice the limit).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(UserError, match=f"refusing image {path}.*40 x 30 pixels"):
            load_image(path, 8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    assert tuple(load_image(path, 8).shape) == (3, 8, 8)


def test_a_bomb_in_an_image_folder_is_named_by_verify(tmp_path: Path) -> None:
    for grade in ("mild", "severe"):
        (tmp_path / grade).mkdir()
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / grade / f"{i}.png")
    bomb = _png_claiming(tmp_path / "severe" / "6.png", 100_000, 100_000)
    with pytest.raises(UserError, match=r"1 of \d+ images are unreadable") as caught:
        load_dataset(f"folder:{tmp_path}", classes="mild,severe", verify=True)
    assert f"refusing image {bomb}: a possible decompression bomb" in str(caught.value)


def _medmnist(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 5).reshape(n, 1)
    np.savez_compressed(path, **arrays)
    return path


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9, 0.999])
def test_a_truncated_npz_is_named_with_the_fix(tmp_path: Path, keep: float) -> None:
    path = _medmnist(tmp_path / "retinamnist.npz")
    with pytest.warns(UserWarning, match="not verified"):
        assert load_retinamnist(tmp_path, verify=False, download=False).class_counts("train")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.warns(UserWarning, match="not verified"), pytest.raises(UserError) as caught:
        load_retinamnist(tmp_path, verify=False, download=False)
    message = str(caught.value)
    assert str(path) in message and "download it afresh" in message and "\n" not in message


def test_a_verified_truncated_npz_fails_its_checksum_by_name(tmp_path: Path) -> None:
    path = _medmnist(tmp_path / "retinamnist.npz")
    with pytest.raises(UserError, match=f"checksum mismatch for {path}.*delete it"):
        load_retinamnist(tmp_path, download=False)


def test_an_npz_holding_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "retinamnist.npz"
    np.savez(path, train_images=np.array([object()], dtype=object))
    with pytest.warns(UserWarning), pytest.raises(UserError, match="allow_pickle"):
        load_retinamnist(tmp_path, verify=False, download=False)
