"""Image folders, image CSVs (labels, binned scores, soft targets) and the Adience format.

Named for emdloss.data.images; also covers emdloss.data.adience.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("PIL")  # the train extra reads images with Pillow
pytest.importorskip("scipy")  # oracle

from PIL import Image
from scipy.stats import norm

from emdloss.data import load_dataset
from emdloss.data.adience import CLASS_NAMES, POSITIONS, age_group


def _image(path: Path, value: int, size: tuple[int, int] = (6, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "grades"
    for k, name in enumerate(["none", "mild", "severe"]):
        for i in range(6):
            _image(root / name / f"{i}.png", 40 * k + i)
    return root


def test_folder_with_explicit_order(folder: Path) -> None:
    ds = load_dataset(f"folder:{folder}", classes="none,mild,severe", image_size=8, seed=0)
    assert ds.class_names == ["none", "mild", "severe"] and ds.input_shape == (3, 8, 8)
    totals = np.sum([ds.class_counts(s) for s in ("train", "val", "test")], axis=0)
    assert totals.tolist() == [6, 6, 6]
    x, y = ds.test[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    # The pixel value identifies the file: grey level 40 * class + index, scaled to [0, 1].
    k_file = ["none", "mild", "severe"].index(ds.test.ids[0].split("/")[0])
    index = int(Path(ds.test.ids[0]).stem)
    assert y == k_file and torch.allclose(x, torch.full_like(x, (40 * k_file + index) / 255))


def test_folder_order_needs_integers_or_classes(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"give the class order with classes=.*\['mild', 'none', 'severe'\]"
    ):
        load_dataset(f"folder:{folder}")
    with pytest.raises(ValueError, match=r"sub-folder\(s\) \['severe'\] are not in classes"):
        load_dataset(f"folder:{folder}", classes="none,mild")
    with pytest.raises(ValueError, match=r"no sub-folder for class\(es\) \['moderate'\]"):
        load_dataset(f"folder:{folder}", classes="none,mild,moderate,severe")
    numeric = tmp_path / "numeric"
    for name in ("10", "2", "1"):
        for i in range(3):
            _image(numeric / name / f"{i}.png", i)
    ds = load_dataset(f"folder:{numeric}", image_size=4, test_fraction=0.34)
    assert ds.class_names == ["1", "2", "10"] and ds.positions == [1.0, 2.0, 10.0]
    (numeric / "3").mkdir()
    with pytest.raises(ValueError, match="class '3' is empty"):
        load_dataset(f"folder:{numeric}")


def test_corrupt_image_is_named(folder: Path) -> None:
    broken = folder / "mild" / "3.png"
    broken.write_bytes(broken.read_bytes()[:30])  # truncated
    with pytest.raises(
        ValueError, match=r"1 of \d+ images are unreadable:\n  cannot read image .*mild/3.png"
    ):
        load_dataset(f"folder:{folder}", classes="none,mild,severe", verify=True)
    ds = load_dataset(f"folder:{folder}", classes="none,mild,severe")
    for split in ("train", "val", "test"):
        part = ds.split(split)
        if "mild/3.png" in part.ids:
            with pytest.raises(ValueError, match=r"cannot read image .*mild/3.png"):
                part[part.ids.index("mild/3.png")]
            with pytest.raises(ValueError, match=r"mild/3\.png"):
                part.verify()


def _scores_csv(tmp_path: Path, scores: list[float], extra: str = "") -> Path:
    lines = ["path,score" + extra]
    for i, s in enumerate(scores):
        _image(tmp_path / "img" / f"{i}.jpg", i)
        lines.append(f"img/{i}.jpg,{s}")
    path = tmp_path / "scores.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_image_csv_scores_binned_with_gaussian_soft_targets(tmp_path: Path) -> None:
    scores = [float(s) for s in np.linspace(1.0, 9.0, 24)]
    path = _scores_csv(tmp_path, scores)
    ds = load_dataset(f"images:{path}", bins=4, soft=True, image_size=5)
    assert ds.soft and ds.num_classes == 4
    grid = np.asarray(ds.positions)
    sigma = grid[1] - grid[0]  # default: one bin width
    for split in ("train", "val", "test"):
        part = ds.split(split)
        for k in range(len(part)):
            _x, y, dist = part[k]
            score = scores[int(Path(part.ids[k]).stem)]
            oracle = norm.pdf(grid, loc=score, scale=sigma)
            assert torch.allclose(
                dist, torch.tensor(oracle / oracle.sum(), dtype=torch.float32), atol=1e-6
            )
            assert abs(float(dist.sum()) - 1.0) < 1e-6
            assert y == min(int((score - 1.0) / 2.0), 3)  # uniform bins of width 2 on [1, 9]
    hard = load_dataset(f"images:{path}", bins=4, image_size=5)
    assert not hard.soft and len(hard.train[0]) == 2


def test_image_csv_rating_counts_give_histograms(tmp_path: Path) -> None:
    lines = ["path,c1,c2,c3"]
    counts = [(5, 1, 0), (0, 2, 2), (1, 1, 8), (3, 3, 0), (0, 0, 1), (2, 5, 1)] * 2
    for i, c in enumerate(counts):
        _image(tmp_path / f"{i}.png", i)
        lines.append(f"{i}.png,{c[0]},{c[1]},{c[2]}")
    path = tmp_path / "votes.csv"
    path.write_text("\n".join(lines) + "\n")
    ds = load_dataset(
        f"images:{path}",
        count_columns="c1,c2,c3",
        classes="bad,ok,good",
        image_size=4,
        test_fraction=0.25,
    )
    assert ds.class_names == ["bad", "ok", "good"] and ds.soft
    for split in ("train", "val", "test"):
        part = ds.split(split)
        for k in range(len(part)):
            c = np.asarray(counts[int(Path(part.ids[k]).stem)], dtype=float)
            _, y, dist = part[k]
            assert np.allclose(dist.numpy(), c / c.sum())
            assert y == int(np.searchsorted(np.cumsum(c / c.sum()), 0.5))  # median class


def test_image_csv_labels_and_bad_input(tmp_path: Path) -> None:
    lines = ["path,label"]
    for i in range(9):
        _image(tmp_path / f"{i}.png", i)
        lines.append(f"{i}.png,{['a', 'b', 'c'][i % 3]}")
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    ds = load_dataset(f"images:{path}", classes="c,b,a", image_size=4, test_fraction=0.34)
    assert ds.class_names == ["c", "b", "a"]
    assert all(
        ds.class_names[y] == "abc"[int(Path(i).stem) % 3]
        for i, y in zip(ds.test.ids, ds.test.targets, strict=True)
    )
    with pytest.raises(
        ValueError, match=r"labels.csv, line 3: label 'b' in column 'label' is not one of"
    ):
        load_dataset(f"images:{path}", classes="a,c")
    path.write_text("\n".join([*lines, "missing.png,a"]) + "\n")
    with pytest.raises(FileNotFoundError, match=r"line 11: image file .*missing.png not found"):
        load_dataset(f"images:{path}", classes="a,b,c")


def _vote_csv(tmp_path: Path, header_path: str = "image") -> Path:
    """MEBeauty's layout: an ``image`` column, the official ``split`` (one row outside it) and
    ``votes_1`` .. ``votes_10`` (ordered by number, not as text)."""
    lines = [f"{header_path},split,n_ratings," + ",".join(f"votes_{k}" for k in range(1, 11))]
    parts = ["train"] * 6 + ["val"] * 2 + ["test"] * 2 + [""]
    for i, part in enumerate(parts):
        _image(tmp_path / "faces" / f"{i}.jpg", 20 * i, size=(12, 12))
        votes = [0] * 10
        votes[i % 10], votes[(i + 3) % 10] = 2, 1
        lines.append(f"faces/{i}.jpg,{part},3," + ",".join(map(str, votes)))
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_image_csv_finds_an_image_column_and_the_official_split(tmp_path: Path) -> None:
    path = _vote_csv(tmp_path)
    with pytest.warns(UserWarning, match="1 row\\(s\\) have no value in the official split"):
        ds = load_dataset(f"images:{path}", count_columns="votes_", image_size=8)
    assert ds.class_names == [str(k) for k in range(1, 11)]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 2, 2)
    assert ds.test.ids == ["faces/8.jpg", "faces/9.jpg"] and "official" in ds.protocol
    x, _, dist = ds.train[1]
    assert tuple(x.shape) == (3, 8, 8) and ds.input_shape == (3, 8, 8)
    assert dist[1] == pytest.approx(2 / 3) and dist[4] == pytest.approx(1 / 3)
    assert ds.train.votes is not None and ds.train.votes.tolist() == [3.0] * 6
    # path= still wins when both exist; neither is one line that says how to name it.
    path.write_text(path.read_text().replace("image,split", "other,split", 1))
    with pytest.raises(ValueError, match="no image path column 'path' or 'image'; name it with"):
        load_dataset(f"images:{path}", count_columns="votes_", split_column="none")
    with pytest.warns(UserWarning, match="official split"):
        ds = load_dataset(f"images:{path}", count_columns="votes_", path_column="other")
    assert len(ds.test) == 2


@pytest.mark.filterwarnings("ignore:.*official split")
def test_image_cache_gives_the_same_pixels_and_reads_each_file_once(tmp_path: Path) -> None:
    from emdloss.data._dataset import ImageFileSplit

    paths = [_image(tmp_path / f"{i}.png", 30 * i, size=(9, 7)) for i in range(3)]
    Image.fromarray(np.arange(63 * 3, dtype=np.uint8).reshape(7, 9, 3)).save(paths[2])
    plain = ImageFileSplit(paths, [0, 1, 1], image_size=5)
    cached = ImageFileSplit(paths, [0, 1, 1], image_size=5, cache=True)
    first = [cached.input(i) for i in range(3)]
    for path in paths:
        path.unlink()  # from memory now
    for i in range(3):
        assert torch.equal(cached.input(i), first[i])
        assert cached.input(i).dtype == torch.float32
    with pytest.raises(Exception, match=r"0\.png"):
        plain.input(0)
    paths = [_image(tmp_path / f"{i}.png", 30 * i, size=(9, 7)) for i in range(3)]
    Image.fromarray(np.arange(63 * 3, dtype=np.uint8).reshape(7, 9, 3)).save(paths[2])
    for i in range(3):  # bit for bit what an uncached read gives
        assert torch.equal(plain.input(i), first[i])
    # The loaders cache a small data set, not one over the budget.
    ds = load_dataset(f"images:{_vote_csv(tmp_path)}", count_columns="votes_", image_size=8)
    assert isinstance(ds.train, ImageFileSplit) and ds.train.cache


def test_image_csv_scores_need_bins(tmp_path: Path) -> None:
    path = _scores_csv(tmp_path, [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="bins=K or bin_edges"):
        load_dataset(f"images:{path}")


# --- Adience ---------------------------------------------------------------------------------

HEADER = "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\tfiducial_score"
AGES = ["(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)"]


@pytest.fixture
def adience(tmp_path: Path) -> Path:
    """Five fold files in the official format, two users per fold, tiny JPEG faces."""
    root = tmp_path / "adience"
    face = 0
    for k in range(5):
        rows = [HEADER]
        for u in range(2):
            user = f"{k}{u}@N0{k}"
            for _j in range(4):
                face += 1
                age = AGES[(face + k) % 8]
                if face == 7:
                    age = "None"
                elif face == 11:
                    age = "35"
                elif face == 13:
                    age = "(38, 48)"
                image = f"{1000 + face}_abc_o.jpg"
                rows.append(f"{user}\t{image}\t{face}\t{age}\tf\t0\t0\t10\t10\t0\t0\t50")
                _image(
                    root / "faces" / user / f"coarse_tilt_aligned_face.{face}.{image}",
                    face,
                    (12, 12),
                )
        (root / f"fold_{k}_data.txt").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        ("(0, 2)", (0, False)),
        ("(8, 12)", (2, False)),
        ("(8, 13)", (2, False)),
        ("(60, 100)", (7, False)),
        ("(38, 48)", (5, True)),  # midpoint 43
        ("(8, 23)", (3, True)),  # midpoint 15.5
        ("3", (0, True)),  # 1 year after 0-2, 1 year before 4-6: tie -> younger
        ("35", (4, True)),  # tie between 25-32 and 38-43 -> younger
        ("36", (5, True)),
        ("57", (7, True)),  # 3 years below 60+, 4 above 48-53
        ("None", None),
    ],
)
def test_age_group_mapping(age: str, expected: tuple[int, bool] | None) -> None:
    assert age_group(age) == expected


def test_adience_official_folds(adience: Path) -> None:
    ds = load_dataset("adience", root=str(adience), fold=2, image_size=6, val_fraction=0.25)
    assert ds.class_names == CLASS_NAMES and ds.positions == POSITIONS
    assert ds.input_shape == (3, 6, 6) and ds.kind == "image"
    assert ds.info["dropped_none"] == 1 and ds.info["mapped_nonstandard"] == 2
    assert "1 rows without an age dropped" in ds.protocol and "test fold 2" in ds.protocol
    assert all(i.split("/")[1].startswith("2") for i in ds.test.ids)  # users of fold 2
    assert len(ds.test) == 8
    users = {s: {i.split("/")[1] for i in ds.split(s).ids} for s in ("train", "val", "test")}
    assert (
        users["val"]
        and not users["train"] & users["val"]
        and not users["test"] & (users["train"] | users["val"])
    )
    assert len(ds.train) + len(ds.val) == 40 - 8 - 1  # folds 0, 1, 3, 4 minus the "None" row
    x, _y = ds.test[0]
    assert x.shape == (3, 6, 6)
    assert "coarse_tilt_aligned_face." in ds.test.ids[0]
    with pytest.raises(ValueError, match="5-fold"):
        load_dataset("adience", root=str(adience), fold=0, num_folds=4)
    dropped = load_dataset("adience", root=str(adience), nonstandard="drop")
    assert dropped.info["dropped_nonstandard"] == 2


def test_adience_missing_image_and_data_dir(adience: Path, tmp_path: Path) -> None:
    # Default test fold 0 holds the row whose age is "None".
    assert len(load_dataset("adience", data_dir=adience.parent).test) == 7
    (adience / "faces" / "00@N00" / "coarse_tilt_aligned_face.1.1001_abc_o.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 Adience image.*face\.1\.1001_abc_o\.jpg"):
        load_dataset("adience", root=str(adience))
    with pytest.raises(FileNotFoundError, match=r"fold_0_data\.txt not found"):
        load_dataset("adience", data_dir=tmp_path / "elsewhere")
