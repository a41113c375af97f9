"""The dataset record returned by ``load_dataset`` and the split datasets it holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor
from torch.utils.data import Dataset

from emdloss.errors import UserError

SPLITS = ("train", "val", "test")

Item = tuple[Tensor, int] | tuple[Tensor, int, Tensor]


class OrdinalSplit(Dataset[Item]):
    """Base of the split datasets: labels, identifiers and optional soft targets, without inputs.

    Subclasses implement :meth:`input`. ``targets`` lets callers count classes or stratify without
    touching the inputs (which may be images loaded lazily from disk).

    Parameters
    ----------
    targets : array_like of int, shape (n,)
        Class index of every sample.
    ids : sequence of str, length n
        A human-readable identifier of every sample (file path, CSV line, row number).
    dists : array_like of float, shape (n, C), optional
        Soft target distribution of every sample; when given, items are ``(x, y, dist)``.
    """

    def __init__(
        self, targets: ArrayLike, ids: Sequence[str], dists: ArrayLike | None = None
    ) -> None:
        self.targets: NDArray[np.int64] = np.asarray(targets, dtype=np.int64).reshape(-1)
        self.ids: list[str] = [str(i) for i in ids]
        if len(self.ids) != self.targets.size:
            raise ValueError(f"{len(self.ids)} ids for {self.targets.size} targets")
        self.dists: Tensor | None = None
        if dists is not None:
            d = torch.as_tensor(np.asarray(dists, dtype=np.float32))
            if d.ndim != 2 or d.shape[0] != self.targets.size:
                raise ValueError(f"dists must have shape (n, C), got {tuple(d.shape)}")
            self.dists = d
        #: Votes behind each distribution target (N,), when the data gave vote counts.
        self.votes: Tensor | None = None

    def __len__(self) -> int:
        return int(self.targets.size)

    def input(self, index: int) -> Tensor:
        """Return the float32 input of sample ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Item:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a split of {len(self)} samples")
        index = int(index) % len(self)
        x = self.input(index)
        y = int(self.targets[index])
        if self.dists is None:
            return x, y
        return x, y, self.dists[index]


class TensorSplit(OrdinalSplit):
    """A split held in memory as one float32 tensor of inputs (tables, small images).

    Examples
    --------
    >>> split = TensorSplit(torch.zeros(3, 2), [0, 1, 1], ["a", "b", "c"])
    >>> x, y = split[1]
    >>> tuple(x.shape), y
    ((2,), 1)
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: ArrayLike,
        ids: Sequence[str],
        dists: ArrayLike | None = None,
    ) -> None:
        super().__init__(targets, ids, dists)
        if inputs.shape[0] != len(self):
            raise ValueError(f"{inputs.shape[0]} inputs for {len(self)} targets")
        self.inputs = inputs.to(torch.float32)

    def input(self, index: int) -> Tensor:
        """Return row ``index`` of the input tensor."""
        return self.inputs[index]


class UInt8ImageSplit(OrdinalSplit):
    """Images kept as uint8 (N, H, W[, C]) and scaled to float32 (C, H, W) in [0, 1] on access.

    Keeping uint8 costs a quarter of the memory of float32, which matters at 224 px.

    Examples
    --------
    >>> split = UInt8ImageSplit(np.full((2, 4, 4, 3), 255, np.uint8), [0, 1], ["0", "1"])
    >>> x, y = split[0]
    >>> tuple(x.shape), float(x.max()), y
    ((3, 4, 4), 1.0, 0)
    """

    def __init__(
        self,
        images: NDArray[np.uint8],
        targets: ArrayLike,
        ids: Sequence[str],
        dists: ArrayLike | None = None,
    ) -> None:
        super().__init__(targets, ids, dists)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[0] != len(self):
            raise ValueError(f"images must have shape (N, H, W[, C]), got {images.shape}")
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))

    def input(self, index: int) -> Tensor:
        """Return image ``index`` as float32 (C, H, W) in [0, 1]."""
        return self.images[index].permute(2, 0, 1).to(torch.float32).div_(255.0)


#: Pillow modes of 16-bit (and 32-bit integer) grey images: scaled to 8 bits, never clipped.
_WIDE_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_rgb(path: str | Path) -> NDArray[np.uint8]:
    """Read an image file as 8-bit RGB ``(H, W, 3)``: the one image reader of training and predict.

    Refuses an image with more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (89 M by default)
    before a byte of it is decoded, where Pillow itself only warns up to twice that. 16-bit
    grey images (16-bit PNG, TIFF) are scaled to 8 bits (``round(v / 257)``), not clipped to
    white as ``convert("RGB")`` does; float images (mode ``F``) in [0, 1] are scaled by 255.

    Parameters
    ----------
    path : str or Path
        Image file (any format Pillow reads).

    Returns
    -------
    numpy.ndarray
        uint8, shape ``(H, W, 3)``.

    Raises
    ------
    UserError
        Naming the file: unreadable, truncated, not an image, or over the pixel limit.

    Examples
    --------
    >>> import tempfile, numpy as np, PIL.Image
    >>> with tempfile.TemporaryDirectory() as d:
    ...     PIL.Image.fromarray(np.full((2, 2), 32896, np.uint16)).save(d + "/g16.png")
    ...     read_rgb(d + "/g16.png")[0, 0].tolist()  # mid-grey, not white
    [128, 128, 128]
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and image.size[0] * image.size[1] > limit:
                raise Image.DecompressionBombError(
                    f"{image.size[0]} x {image.size[1]} pixels exceed the limit of {limit}"
                )
            # Decoding the whole file here: truncated data fails here, not later.
            if image.mode in _WIDE_INT_MODES:
                wide = np.asarray(image).astype(np.float64)
                grey = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if image.mode == "F":
                values = np.asarray(image, dtype=np.float64)
                if np.isfinite(values).all() and values.size and values.max() <= 1.0:
                    values = values * 255.0
                grey = np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise UserError(
            f"refusing image {path}: a possible decompression bomb ({exc}); resize the image, "
            "or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from exc


def resize_rgb(rgb: NDArray[np.uint8], size: int) -> Tensor:
    """An 8-bit RGB array resized (bilinear, aspect ratio not kept) to float32 ``(3, S, S)`` in
    [0, 1].

    Examples
    --------
    >>> tuple(resize_rgb(np.zeros((5, 3, 3), np.uint8), 4).shape)
    (3, 4, 4)
    """
    return _to_unit(_resize_uint8(rgb, size))


def _resize_uint8(rgb: NDArray[np.uint8], size: int) -> Tensor:
    """``rgb`` resized (bilinear) to uint8 ``(3, S, S)``: what the image cache keeps."""
    from PIL import Image

    out = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(out, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def _to_unit(image: Tensor) -> Tensor:
    """uint8 ``(3, S, S)`` as float32 in [0, 1]."""
    return image.to(torch.float32).div_(255.0)


def load_image(path: str | Path, image_size: int) -> Tensor:
    """Read an image file as float32 RGB (3, S, S) in [0, 1], resized (bilinear) to ``S = image_size``.

    Parameters
    ----------
    path : str or Path
        Image file (any format Pillow reads; read by ``read_rgb``).
    image_size : int
        Side of the square output; the aspect ratio is not kept.

    Returns
    -------
    Tensor
        Shape (3, image_size, image_size).

    Raises
    ------
    UserError
        If the file cannot be read or decoded (missing, truncated, not an image, or a possible
        decompression bomb over ``PIL.Image.MAX_IMAGE_PIXELS``); the message names the file.

    Examples
    --------
    >>> import tempfile, PIL.Image
    >>> with tempfile.TemporaryDirectory() as d:
    ...     PIL.Image.new("RGB", (5, 3), (255, 0, 0)).save(d + "/a.png")
    ...     tuple(load_image(d + "/a.png", 4).shape)
    (3, 4, 4)
    """
    return resize_rgb(read_rgb(path), image_size)


#: Image splits whose resized images take at most this many bytes (8-bit RGB) in all keep them
#: in memory once decoded (``ImageFileSplit(cache=True)``): MEBeauty's 2,385 faces at 64 x 64
#: take 29 MB, and decoding a 224 x 224 JPEG costs more than a small CNN's step on it.
IMAGE_CACHE_BYTES = 512 * 2**20


class ImageFileSplit(OrdinalSplit):
    """Images read lazily from files with Pillow, resized to a square ``image_size``.

    A file that cannot be decoded raises a ValueError naming it when its item is read;
    :meth:`verify` scans every file up front. With ``cache=True`` each image is decoded once
    per process and kept, resized, as 8 bits (the same tensor as without the cache, bit for
    bit); the loaders turn it on when the whole data set fits ``IMAGE_CACHE_BYTES``.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        targets: ArrayLike,
        *,
        image_size: int,
        ids: Sequence[str] | None = None,
        dists: ArrayLike | None = None,
        cache: bool = False,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        super().__init__(targets, [str(p) for p in self.paths] if ids is None else ids, dists)
        if len(self.paths) != len(self):
            raise ValueError(f"{len(self.paths)} paths for {len(self)} targets")
        self.image_size = int(image_size)
        self.cache = bool(cache)
        self._cached: dict[int, Tensor] = {}

    def input(self, index: int) -> Tensor:
        """Load and resize image ``index`` (from memory after the first time, with ``cache``)."""
        if not self.cache:
            return load_image(self.paths[index], self.image_size)
        image = self._cached.get(index)
        if image is None:
            image = _resize_uint8(read_rgb(self.paths[index]), self.image_size)
            self._cached[index] = image
        return _to_unit(image)

    def verify(self) -> None:
        """Decode every image; raise one ValueError naming all unreadable files.

        Raises
        ------
        ValueError
            Listing every file that cannot be read.
        """
        bad = []
        for path in self.paths:
            try:
                load_image(path, 1)
            except ValueError as exc:
                bad.append(str(exc))
        if bad:
            listing = "\n  ".join(bad)
            raise UserError(f"{len(bad)} of {len(self.paths)} images are unreadable:\n  {listing}")


class SubsetSplit(OrdinalSplit):
    """A subset of another split that keeps its targets, ids and soft targets."""

    def __init__(self, base: OrdinalSplit, indices: ArrayLike) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        dists = None if base.dists is None else base.dists[torch.from_numpy(idx)].numpy()
        super().__init__(base.targets[idx], [base.ids[i] for i in idx], dists)
        if base.votes is not None:
            self.votes = base.votes[torch.from_numpy(idx)]
        self.base = base
        self.indices = idx

    def input(self, index: int) -> Tensor:
        """Return the input of the underlying sample."""
        return self.base.input(int(self.indices[index]))

    def verify(self) -> None:
        """Decode every image of the subset (for image-file splits)."""
        if isinstance(self.base, ImageFileSplit):
            ImageFileSplit(
                [self.base.paths[i] for i in self.indices], self.targets, image_size=1
            ).verify()


@dataclass
class OrdinalDataset:
    """A dataset with ordered classes and its train/validation/test splits.

    Attributes
    ----------
    name : str
        Name of the source (``"retinamnist"``, ``"esl"``, ``"csv:data.csv"`` ...).
    class_names : list of str
        Class names in their order (class index ``k`` is ``class_names[k]``).
    kind : {"image", "tabular"}
        Input modality.
    input_shape : tuple of int
        Shape of one input: ``(C, H, W)`` for images, ``(num_features,)`` for tables.
    train, val, test : OrdinalSplit
        Split datasets; items are ``(x float32, y int)`` or ``(x, y, dist float32 (C,))``.
    positions : list of float or None
        Position of every class on the real line (e.g. age-group midpoints), if meaningful.
    protocol : str
        How the splits were made (official split, hold-out, fold ...).
    mean, std : tuple of float or None
        Per-channel statistics of the training images (in [0, 1] units), for normalisation.
    feature_names : list of str or None
        Names of the input features of a table (after one-hot encoding).
    info : dict
        Source-specific facts (file used, MD5, rows dropped and why, ...).
    target_kind : {"label", "distribution"}
        ``"distribution"`` when the target of every item is a distribution over the levels
        (vote histograms, LDL): the splits' ``dists`` hold it (rows sum to 1), their
        ``votes`` the number of votes behind it when known, and ``targets`` its median level.
    resampled : bool
        Whether the test split is drawn from the seed (a hold-out, a fold, a seeded subset), so
        that runs of other seeds test on other rows (see ``Split.resampled``).
    """

    name: str
    class_names: list[str]
    kind: Literal["image", "tabular"]
    input_shape: tuple[int, ...]
    train: OrdinalSplit
    val: OrdinalSplit
    test: OrdinalSplit
    positions: list[float] | None = None
    protocol: str = ""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    feature_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    target_kind: Literal["label", "distribution"] = "label"
    resampled: bool = False

    def __post_init__(self) -> None:
        if self.target_kind not in ("label", "distribution"):
            raise ValueError(
                f"target_kind must be 'label' or 'distribution', got {self.target_kind!r}"
            )
        if self.kind not in ("image", "tabular"):
            raise ValueError(f"kind must be 'image' or 'tabular', got {self.kind!r}")
        if len(self.class_names) < 2:
            raise ValueError(f"an ordinal dataset needs at least 2 classes, got {self.class_names}")
        if self.positions is not None and len(self.positions) != len(self.class_names):
            raise ValueError(f"{len(self.positions)} positions for {len(self.class_names)} classes")

    @property
    def num_classes(self) -> int:
        """Number of ordered classes."""
        return len(self.class_names)

    @property
    def soft(self) -> bool:
        """Whether items carry a soft target distribution ``(x, y, dist)``."""
        return self.train.dists is not None

    @property
    def distribution_targets(self) -> bool:
        """Whether the items' targets are distributions (and still carried by the splits)."""
        return self.target_kind == "distribution" and self.train.dists is not None

    def split(self, name: str) -> OrdinalSplit:
        """Return the split called ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid splits: {', '.join(SPLITS)}")
        split: OrdinalSplit = getattr(self, name)
        return split

    def class_counts(self, split: str) -> list[int]:
        """Number of samples of every class in ``split``."""
        targets = self.split(split).targets
        return [int(v) for v in np.bincount(targets, minlength=self.num_classes)]

    def ids(self, split: str) -> list[str]:
        """Identifiers (file, line or row) of the samples of ``split``, in item order."""
        return list(self.split(split).ids)

    def summary(self) -> str:
        """A few lines describing classes, sizes and the split protocol."""
        lines = [
            f"{self.name}: {self.kind}, input {tuple(self.input_shape)}, "
            f"{self.num_classes} classes {self.class_names}",
        ]
        for s in SPLITS:
            counts = self.class_counts(s)
            lines.append(f"  {s:5s} {sum(counts):6d}  per class {counts}")
        if self.protocol:
            lines.append(f"  split: {self.protocol}")
        return "\n".join(lines)
