"""One image reader for training and predict: the pixel limit before decoding, 16-bit images
scaled to 8 bits rather than clipped to white.

Issue 21, items 4 and 5: ``convert("RGB")`` clipped 16-bit PNGs to white in training and in
predict; predict's own image conversion skipped the loader's pixel-limit check, so a 157-byte
PNG claiming 400 M pixels gave a DecompressionBombError traceback and a 100 M-pixel PNG was
decoded (2 GB resident) although the docs promise refusal above 89 M pixels.

Named for emdloss.data._dataset (load_image, read_rgb); also covers emdloss.data.conform.
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

from emdloss.data._dataset import load_image, read_rgb
from emdloss.data.conform import conform_images
from emdloss.errors import UserError


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _grey_png(path: Path, width: int, height: int, depth: int, rows: bytes | None) -> Path:
    """A grey PNG of ``depth`` bits; ``rows`` the raw scanlines (None: a header that claims the
    size over a few bytes of data, the shape of a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else b"\x00" * 16, 9)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data)
    path.write_bytes(png + _chunk(b"IEND", b""))
    return path


def test_a_16_bit_grey_png_keeps_its_grey_levels(tmp_path: Path) -> None:
    levels = np.array([[0, 16384, 32896, 65535]], dtype=np.uint16)  # 0, 1/4, 1/2, 1
    path = tmp_path / "g16.png"
    Image.fromarray(np.repeat(levels, 4, axis=0)).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # Pillow reads it as 16-bit grey
    expected = np.rint(levels[0] / 257.0)  # [0, 64, 128, 255]
    assert read_rgb(path)[0, :, 0].tolist() == expected.tolist()
    # Training (load_image) and predict (conform_images) see the same values, not white.
    train = load_image(path, 4)[0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted, _ = conform_images([path], (3, 4, 4))
    assert torch_list(train) == torch_list(predicted[0, 0, 0]) == (expected / 255).round(4).tolist()


def torch_list(row: object) -> list[float]:
    return [round(float(v), 4) for v in row]  # type: ignore[attr-defined]


def test_a_16_bit_grey_png_written_by_hand_is_read_exactly(tmp_path: Path) -> None:
    # Built from bytes: 2 x 1 pixels, big-endian 16-bit samples 0x8080 and 0x4000.
    path = _grey_png(tmp_path / "h.png", 2, 1, 16, b"\x00\x80\x80\x40\x00")
    assert read_rgb(path)[0, :, 1].tolist() == [128, 64]


def test_predict_refuses_a_157_byte_png_claiming_400m_pixels(tmp_path: Path) -> None:
    bomb = _grey_png(tmp_path / "bomb.png", 20_000, 20_000, 8, None)
    assert bomb.stat().st_size < 200
    with pytest.raises(UserError, match=f"refusing image {bomb}: a possible decompression bomb"):
        conform_images([bomb], (3, 28, 28))


def test_predict_refuses_an_image_over_the_pixel_limit_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 pixels: over, under twice
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(UserError, match=r"40 x 30 pixels exceed the limit of 1000"):
            conform_images([path], (3, 8, 8))


def test_a_100m_pixel_png_of_a_few_kilobytes_is_refused_at_the_default_limit(
    tmp_path: Path,
) -> None:
    # 10,000 x 10,000 one-bit pixels: about 12 KB of PNG, 100 M pixels (> 89 M, < 2 x 89 M: the
    # range where Pillow only warns and decodes 300 MB of RGB).
    side = 10_000
    rows = (b"\x00" + b"\x00" * (side // 8)) * side
    path = _grey_png(tmp_path / "wide.png", side, side, 1, rows)
    assert path.stat().st_size < 100_000
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < side * side
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for read in (lambda: conform_images([path], (3, 8, 8)), lambda: load_image(path, 8)):
            with pytest.raises(UserError, match="10000 x 10000 pixels exceed the limit"):
                read()
