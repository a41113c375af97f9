"""Inputs for predict checked against the training inputs (emdloss.data.conform, issue 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# the train extra reads images with Pillow.
pytest.importorskip("PIL")

from PIL import Image

from emdloss.data import load_csv, load_image
from emdloss.data.conform import conform_images, conform_table


def _image(path: Path, mode: str, size: tuple[int, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


def test_grey_image_for_a_colour_model_is_converted_with_a_note(tmp_path: Path) -> None:
    grey = _image(tmp_path / "grey.png", "L", (28, 28))
    rgb = _image(tmp_path / "rgb.png", "RGB", (28, 28))
    x, notes = conform_images([grey, rgb], (3, 28, 28))
    assert x.shape == (2, 3, 28, 28)
    assert len(notes) == 1 and "1 of 2 images are grayscale" in notes[0]
    assert str(grey) in notes[0] and str(rgb) not in notes[0]
    # The channel is repeated: three equal planes.
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 1], x[0, 2])


def test_colour_image_for_a_grey_model_is_averaged_with_a_note(tmp_path: Path) -> None:
    rgb = _image(tmp_path / "rgb.png", "RGB", (28, 28))
    x, notes = conform_images([rgb], (1, 28, 28))
    assert x.shape == (1, 1, 28, 28)
    torch.testing.assert_close(x[0, 0], load_image(rgb, 28).mean(dim=0))
    assert "in colour but the model was trained on grayscale" in notes[0]


def test_resized_images_are_named_and_pixels_match_load_image(tmp_path: Path) -> None:
    paths = [_image(tmp_path / f"{i}.png", "RGB", (40 + i, 30), seed=i) for i in range(5)]
    x, notes = conform_images(paths, (3, 28, 28))
    assert notes == [
        "5 of 5 images are not 28x28, the model's input size, and were resized to it (aspect "
        f"ratio not kept): {paths[0]} (40x30), {paths[1]} (41x30), {paths[2]} (42x30) and 2 more"
    ]
    for i, path in enumerate(paths):  # the same pixels as the training loader's
        torch.testing.assert_close(x[i], load_image(path, 28), rtol=0, atol=0)


def test_matching_images_give_no_note(tmp_path: Path) -> None:
    _, notes = conform_images([_image(tmp_path / "a.png", "RGB", (28, 28))], (3, 28, 28))
    assert notes == []


def _table(tmp_path: Path) -> tuple[Path, dict[str, object], object]:
    rng = np.random.default_rng(0)
    lines = ["x,colour,y"] + [
        f"{rng.normal():.3f},{rng.choice(['red', 'blue'])},{i % 3}" for i in range(60)
    ]
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    ds = load_csv(path, target="y")
    info = ds.info
    table = {
        "numeric_columns": info["numeric_columns"],
        "categorical_columns": info["categorical_columns"],
        "feature_mean": info["feature_mean"],
        "feature_scale": info["feature_scale"],
        "categories": info["categories"],
    }
    return path, table, ds


def test_table_rows_encode_as_in_training(tmp_path: Path) -> None:
    path, table, ds = _table(tmp_path)
    ids, x, notes = conform_table(path, table)
    assert notes == []
    lookup = dict(zip(ids, x, strict=True))
    for row_id, expected in zip(ds.train.ids, ds.train.inputs, strict=True):
        torch.testing.assert_close(lookup[row_id], expected)


def test_unseen_category_is_named_and_missing_column_refused(tmp_path: Path) -> None:
    _, table, _ = _table(tmp_path)
    new = tmp_path / "new.csv"
    new.write_text("colour,x\nred,0.1\ngreen,0.2\npurple,0\ngreen,1\n")
    _, x, notes = conform_table(new, table)
    assert x.shape == (4, 3) and x[1, 1:].abs().sum() == 0  # unseen: all-zero code
    assert notes == [
        f"{new}: column 'colour' has value(s) ['green', 'purple'] not seen in training "
        "(encoded as all zeros; known: ['blue', 'red'])"
    ]
    (tmp_path / "bad.csv").write_text("colour\nred\n")
    with pytest.raises(ValueError, match="lacks the column"):
        conform_table(tmp_path / "bad.csv", table)
    (tmp_path / "nan.csv").write_text("colour,x\nred,abc\n")
    with pytest.raises(ValueError, match="line 2: column 'x' holds 'abc'"):
        conform_table(tmp_path / "nan.csv", table)
