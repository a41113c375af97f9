"""Atomic file writes, shared by every layer that writes files (runs, comparisons, plots).

A file is written to a temporary file in the same directory, flushed to disk and moved over the
target with :func:`os.replace`, so a process killed mid-write leaves either the previous file or
the new one, never a truncated mix, and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "write_bytes", "write_json", "write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it over ``path`` when the block succeeds.

    For writers that want a file name rather than a handle. On error the temporary file is
    removed and the previous ``path`` is left untouched.

    Parameters
    ----------
    path : path-like
        Final file name; its directory is created when missing.

    Yields
    ------
    pathlib.Path
        A temporary file in the same directory, with the same suffix.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hi")
    >>> target.read_text()
    'hi'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


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
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write bytes atomically.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> write_bytes(pathlib.Path(tempfile.mkdtemp()) / "b.bin", b"x").read_bytes()
    b'x'
    """
    return atomic_write(path, lambda handle: handle.write(data))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> write_text(pathlib.Path(tempfile.mkdtemp()) / "c.txt", "y").read_text()
    'y'
    """
    return write_bytes(path, text.encode("utf-8"))


def _nan_to_none(obj: Any) -> Any:
    # JSON has no NaN: a metric that is undefined is written as null.
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {key: _nan_to_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(value) for value in obj]
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write an object as indented JSON atomically (NaN is written as ``null``).

    Examples
    --------
    >>> import tempfile, pathlib, json
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> json.loads(write_json(target, {"a": float("nan")}).read_text())
    {'a': None}
    """
    return write_text(path, json.dumps(_nan_to_none(obj), indent=2) + "\n")
