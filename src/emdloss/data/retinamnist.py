"""RetinaMNIST (MedMNIST v2): fundus images graded 0-4 for diabetic retinopathy, official split."""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from emdloss.errors import UserError

from ._dataset import OrdinalDataset, UInt8ImageSplit
from ._download import DownloadError, check_md5, download_file, resolve_data_dir
from ._options import as_bool, as_int

ENV_URL = "EMDLOSS_RETINAMNIST_URL"

#: Published files: size -> (file name, MD5). The 28/64/128 digests are those of the shared data
#: README; the 224 digest is MedMNIST's own (``medmnist/info.py``, Zenodo record 10519652) and
#: could not be checked here against the file.
FILES: dict[int, tuple[str, str]] = {
    28: ("retinamnist.npz", "bd4c0672f1bba3e3a89f0e4e876791e4"),
    64: ("retinamnist_64.npz", "afda852cc34dcda56f86ad2b2457dbcc"),
    128: ("retinamnist_128.npz", "e48e916a24454daf90583d4e6efb1a18"),
    224: ("retinamnist_224.npz", "eae7e3b6f3fcbda4ae613ebdcbe35348"),
}
URL_TEMPLATE = "https://zenodo.org/records/10519652/files/{filename}?download=1"
CLASS_NAMES = ["0", "1", "2", "3", "4"]  # 0 = no DR ... 4 = proliferative DR
_SPLIT_SIZES = {"train": 1080, "val": 120, "test": 400}


def retinamnist_url(size: int = 28) -> str:
    """Download URL of the RetinaMNIST file of ``size``: ``$EMDLOSS_RETINAMNIST_URL`` or Zenodo.

    The environment variable may contain ``{filename}``, replaced by the file name, so one
    mirror serves every size.

    Examples
    --------
    >>> retinamnist_url(64).split("/")[-1]
    'retinamnist_64.npz?download=1'
    """
    filename = FILES[size][0]
    template = os.environ.get(ENV_URL) or URL_TEMPLATE
    return template.replace("{filename}", filename)


def retinamnist_path(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    size: int = 28,
    download: bool = True,
    url: str | None = None,
    verify: bool = True,
    md5: str | None = None,
    progress: bool = True,
) -> Path:
    """Path of the verified RetinaMNIST ``.npz`` of ``size``, downloading it when absent.

    Parameters
    ----------
    data_dir : str or PathLike, optional
        Data directory (default: ``$EMDLOSS_DATA``, else the per-user cache directory).
    size : {28, 64, 128, 224}
        Image side of the published file.
    download : bool, optional
        Download the file when it is absent.
    url : str, optional
        Source URL (default :func:`retinamnist_url`); ``file://`` works too.
    verify : bool, optional
        Check the MD5 of an existing file (hashed once per process).
    md5 : str, optional
        Expected MD5 instead of the published one.
    progress : bool, optional
        Progress bar while downloading.

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        If the file is absent and cannot be downloaded; says where to put it.
    ValueError
        On a checksum mismatch (names the file and both digests) or an unknown size.

    Examples
    --------
    >>> retinamnist_path("/nowhere", download=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: RetinaMNIST file retinamnist.npz not found in /nowhere...
    """
    if size not in FILES:
        raise ValueError(f"RetinaMNIST size {size!r} not published; valid sizes: {sorted(FILES)}")
    filename, published = FILES[size]
    expected = (md5 or published).lower()
    directory = resolve_data_dir(data_dir)
    path = directory / filename
    if path.is_file():
        if verify:
            check_md5(path, expected)
        return path
    source = url or retinamnist_url(size)
    where = (
        f"put {filename} (MD5 {expected}, from {source}) into {directory}, or point --data-dir "
        f"or the EMDLOSS_DATA environment variable at a directory that holds it"
    )
    if not download:
        raise FileNotFoundError(f"RetinaMNIST file {filename} not found in {directory}; {where}")
    try:
        download_file(source, path, md5=expected, progress=progress)
    except DownloadError as exc:
        raise FileNotFoundError(
            f"RetinaMNIST file {filename} not found in {directory} and the download failed "
            f"({exc}); without internet, {where}"
        ) from exc
    return path


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    # allow_pickle stays False: an object array in the file is refused, never unpickled.
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise UserError(
            f"cannot read {path} as a MedMNIST .npz file ({type(exc).__name__}: {exc}); it is "
            "damaged or incomplete: delete it and run again to download it afresh"
        ) from exc
    needed = [f"{s}_{kind}" for s in _SPLIT_SIZES for kind in ("images", "labels")]
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise UserError(f"{path} lacks the arrays {missing}; it has {sorted(arrays)}")
    return arrays


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Chunked exact sums of x and x^2 (uint8 values), so 224 px images need no float copy.
    pixels = images.reshape(images.shape[0], -1, 1 if images.ndim == 3 else images.shape[-1])
    total = np.zeros(pixels.shape[-1])
    squares = np.zeros(pixels.shape[-1])
    for start in range(0, pixels.shape[0], 64):
        chunk = pixels[start : start + 64].astype(np.float64)
        total += chunk.sum(axis=(0, 1))
        squares += np.square(chunk).sum(axis=(0, 1))
    count = pixels.shape[0] * pixels.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return tuple(float(v) for v in mean / 255.0), tuple(float(v) for v in std / 255.0)


def load_retinamnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int | None = None,
    size: Any = 28,
    download: Any = True,
    url: str | None = None,
    verify: Any = True,
    md5: str | None = None,
    progress: Any = True,
) -> OrdinalDataset:
    """Load RetinaMNIST with its official train/val/test split (1080/120/400 images).

    Images are float32 (3, size, size) in [0, 1]; ``mean`` and ``std`` hold the per-channel
    statistics of the training images for the model's normalisation. Labels are the grades 0-4.

    Parameters
    ----------
    data_dir : str or PathLike, optional
        See :func:`retinamnist_path`.
    seed : int, optional
        Unused (the split is official); accepted for a uniform interface.
    fold, num_folds : None
        Must be None: RetinaMNIST has an official split.
    size, download, url, verify, md5, progress
        See :func:`retinamnist_path`.

    Returns
    -------
    OrdinalDataset

    Examples
    --------
    >>> ds = load_retinamnist()  # doctest: +SKIP
    >>> ds.class_counts("train")  # doctest: +SKIP
    [486, 128, 206, 194, 66]
    """
    del seed  # the official split does not depend on it
    if fold is not None or num_folds is not None:
        raise ValueError(
            "retinamnist has an official train/val/test split; fold and num_folds do not apply"
        )
    side = as_int("size", size)
    path = retinamnist_path(
        data_dir,
        size=side,
        download=as_bool("download", download),
        url=url,
        verify=as_bool("verify", verify),
        md5=md5,
        progress=as_bool("progress", progress),
    )
    if not as_bool("verify", verify):
        warnings.warn(f"MD5 of {path} not verified (verify=False)", stacklevel=2)
    arrays = _read_npz(path)
    splits = {}
    for split in _SPLIT_SIZES:
        images = arrays[f"{split}_images"]
        labels = arrays[f"{split}_labels"].reshape(-1).astype(np.int64)
        if images.dtype != np.uint8 or images.shape[1:3] != (side, side):
            raise UserError(
                f"{path}: {split}_images has dtype {images.dtype} and shape {images.shape}, "
                f"expected uint8 (N, {side}, {side}, 3)"
            )
        if labels.size != images.shape[0] or labels.min() < 0 or labels.max() > 4:
            raise UserError(f"{path}: {split}_labels must hold one grade in 0..4 per image")
        ids = [f"{split}/{i}" for i in range(labels.size)]
        splits[split] = UInt8ImageSplit(images, labels, ids)
    mean, std = _channel_stats(arrays["train_images"])
    channels = 1 if arrays["train_images"].ndim == 3 else arrays["train_images"].shape[-1]
    sizes = "/".join(str(len(splits[s])) for s in _SPLIT_SIZES)
    return OrdinalDataset(
        name="retinamnist",
        class_names=list(CLASS_NAMES),
        kind="image",
        input_shape=(int(channels), side, side),
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        positions=None,
        protocol=f"official MedMNIST v2 split (train/val/test {sizes})",
        mean=mean,
        std=std,
        info={"file": str(path), "md5_verified": as_bool("verify", verify), "size": side},
    )
