"""Atomic file writes for run directories, and a Lightning checkpoint writer that uses them.

Every file of a run directory is written to a temporary file in the same directory, flushed to
disk and moved over the target with :func:`os.replace`, so a run killed mid-write leaves either
the previous file or the new one, never a truncated mix.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "atomic_write", "write_json", "write_text"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Write a file atomically through a callback that receives a binary file object.

    Parameters
    ----------
    path : path-like
        Target file; its directory is created when missing.
    write : callable
        Called once with an open binary file (a temporary file next to ``path``).

    Returns
    -------
    pathlib.Path
        The written path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = atomic_write(target, lambda f: f.write(b"hi"))
    >>> target.read_bytes()
    b'hi'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp_name, target)
    except BaseException:
        # Leave the previous file untouched and no temporary file behind.
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically.

    Parameters
    ----------
    path : path-like
        Target file.
    text : str
        Content.

    Returns
    -------
    pathlib.Path
        The written path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "b.txt"
    >>> write_text(target, "x").read_text()
    'x'
    """
    data = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write an object as indented JSON atomically (NaN is written as ``null``).

    Parameters
    ----------
    path : path-like
        Target file.
    obj : Any
        A JSON-serialisable object (floats may be NaN).

    Returns
    -------
    pathlib.Path
        The written path.

    Examples
    --------
    >>> import tempfile, pathlib, json
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> json.loads(write_json(target, {"a": float("nan")}).read_text())
    {'a': None}
    """
    return write_text(path, json.dumps(_nan_to_none(obj), indent=2, sort_keys=False) + "\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {key: _nan_to_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(value) for value in obj]
    return obj


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint writer that never leaves a half-written checkpoint.

    Lightning's own writer stages the file in the system temporary directory and *moves* it,
    which is a copy (not atomic) whenever that directory is on another file system. This one
    serialises to memory, writes a temporary file beside the target and renames it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "c.ckpt"
    >>> AtomicCheckpointIO().save_checkpoint({"epoch": 3}, target)
    >>> AtomicCheckpointIO().load_checkpoint(target)["epoch"]
    3
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Serialise ``checkpoint`` with :func:`torch.save` and write it atomically to ``path``."""
        if storage_options is not None:
            raise TypeError(f"storage_options are not supported, got {storage_options!r}")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        atomic_write(path, lambda handle: handle.write(data))
