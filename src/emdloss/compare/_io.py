"""Atomic writes for the files of a comparison (results.csv, summary.md, plots, compare.json)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "write_bytes", "write_json", "write_text"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it over ``path`` when the block succeeds.

    For writers that want a file name rather than a handle (``matplotlib.savefig``). On error the
    temporary file is removed and the previous ``path`` is left untouched.

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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write bytes atomically.

    Parameters
    ----------
    path : path-like
        Target file.
    data : bytes
        Content.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> write_bytes(pathlib.Path(tempfile.mkdtemp()) / "b.bin", b"x").read_bytes()
    b'x'
    """
    return _write(path, lambda handle: handle.write(data))


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

    Examples
    --------
    >>> import tempfile, pathlib
    >>> write_text(pathlib.Path(tempfile.mkdtemp()) / "c.txt", "y").read_text()
    'y'
    """
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write indented JSON atomically.

    Parameters
    ----------
    path : path-like
        Target file.
    obj : Any
        JSON-serialisable object.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> write_json(pathlib.Path(tempfile.mkdtemp()) / "d.json", {"a": 1}).read_text()
    '{\\n  "a": 1\\n}\\n'
    """
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
