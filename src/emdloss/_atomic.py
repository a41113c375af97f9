"""Atomic file writes, shared by every layer that writes files (runs, comparisons, plots).

A file is written to a temporary file in the same directory, flushed to disk and moved over the
target with :func:`os.replace`, so a process killed mid-write leaves either the previous file or
the new one, never a truncated mix.

The temporary file is named ``.NAME.PID.XXXXXXXX.SUFFIX`` (PID of the writing process, random
``X``). A write killed before the rename (``kill -9``, power loss) leaves it behind; the next
write to ``NAME`` removes the leftovers of processes that no longer run, and
:func:`remove_stale_temporaries` sweeps a whole directory (a resumed run does).

The target must be a regular file or absent: a device, a FIFO, a socket or a directory at the
target is refused (``os.replace`` would swap ``/dev/null`` for a regular file), and, for the
outputs a user names, an existing file is replaced only when asked (``overwrite=True``, the
``--overwrite`` flag). A write that fails for want of space or permission (ENOSPC, EDQUOT, EROFS,
EACCES, EPERM) is one :class:`~emdloss.errors.UserError` naming the path; the previous file is
left as it was.

The file gets the mode a plain :func:`open` would give it (``0o666 & ~umask``). The umask is read
from ``/proc/self/status`` and never changed: ``os.umask`` is process-wide, so setting it even
for a moment lets files that other threads create meanwhile come out with the wrong mode.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from emdloss.errors import UserError

__all__ = [
    "OUTPUT_ERRNOS",
    "atomic_path",
    "atomic_write",
    "check_target",
    "file_mode",
    "remove_stale_temporaries",
    "write_bytes",
    "write_json",
    "write_text",
]

_PROC_STATUS = Path("/proc/self/status")
# Temporaries this process is writing right now (absolute paths), never swept.
_IN_FLIGHT: set[str] = set()
_IN_FLIGHT_LOCK = threading.Lock()
# mkstemp's random part: 8 characters of this alphabet.
_RANDOM = re.compile(r"(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}")
#: Errors of a write that the user fixes (space, quota, a read-only or foreign file system).
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _proc_umask() -> int | None:
    # Linux >= 4.7 reports the umask without changing it; None where it does not.
    try:
        with open(_PROC_STATUS, encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _probe_umask() -> int:
    # The only portable way to read the umask is to set it. Done once, at import, with the
    # restrictive 0o077 meanwhile, so a file another thread creates in that instant is private
    # rather than world-writable.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


_FIRST_READ = _proc_umask()
_HAS_PROC_UMASK = _FIRST_READ is not None
_IMPORT_UMASK: int = _FIRST_READ if _FIRST_READ is not None else _probe_umask()


def file_mode() -> int:
    """The mode a file created now with :func:`open` gets: ``0o666 & ~umask``.

    Reads the current umask from ``/proc/self/status`` where the kernel reports it, else uses the
    umask read once when this module was imported. Never calls :func:`os.umask`.

    Examples
    --------
    >>> import os
    >>> file_mode() & 0o111  # never executable
    0
    """
    mask = _proc_umask() if _HAS_PROC_UMASK else None
    return 0o666 & ~(_IMPORT_UMASK if mask is None else mask)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, it belongs to someone else
        return True
    return True


def _temporary_of(name: str) -> tuple[str, int | None] | None:
    """``(target name, writer PID or None)`` when ``name`` is a temporary of :func:`atomic_path`.

    ``None`` PIDs are temporaries of older emdloss versions (``.NAME.XXXXXXXX.SUFFIX``).
    """
    if not name.startswith(".") or len(name) < 12:
        return None
    body = name[1:]
    for index, char in enumerate(body):
        if char != "." or index == 0:
            continue
        target, rest = body[:index], body[index + 1 :]
        suffix = Path(target).suffix
        if suffix and not rest.endswith(suffix):
            continue
        core = rest[: len(rest) - len(suffix)] if suffix else rest
        match = _RANDOM.fullmatch(core)
        if match:
            pid = match.group("pid")
            return target, None if pid is None else int(pid)
    return None


def _is_stale(path: Path, target: str, pid: int | None, sweep: bool) -> bool:
    if pid is None:
        # An older version's leftover (no PID in the name): no writer of this version uses it.
        # A directory sweep takes it only beside its target, so that a user's own dot-file
        # that happens to look like one is left alone.
        return not sweep or path.with_name(target).exists()
    if pid == os.getpid():
        with _IN_FLIGHT_LOCK:
            return str(path.absolute()) not in _IN_FLIGHT
    return not _pid_alive(pid)


def _remove_stale(directory: Path, target: str | None) -> list[Path]:
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        parsed = _temporary_of(entry.name)
        if parsed is None or (target is not None and parsed[0] != target):
            continue
        path = Path(entry.path)
        try:
            if entry.is_file(follow_symlinks=False) and _is_stale(
                path, parsed[0], parsed[1], target is None
            ):
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # gone meanwhile, or not ours to remove: leave it
    return removed


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that interrupted atomic writes left in ``directory`` and below.

    A temporary is removed when the process that wrote it no longer runs (or it is this
    process's and no write is using it). Other files are never touched.

    Parameters
    ----------
    directory : path-like
        Directory to sweep recursively (a run directory on resume).

    Returns
    -------
    list of pathlib.Path
        The files removed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "last.ckpt").write_bytes(b"whole")
    >>> _ = (d / ".last.ckpt.k2j4l5m6.ckpt").write_bytes(b"half")  # killed mid-write
    >>> [p.name for p in remove_stale_temporaries(d)]
    ['.last.ckpt.k2j4l5m6.ckpt']
    """
    root = Path(directory)
    removed = _remove_stale(root, None)
    if root.is_dir():
        for sub in sorted(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()):
            removed += _remove_stale(sub, None)
    return removed


def check_target(path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Refuse a write target that is not a regular file (or absent), or that exists when
    ``overwrite`` is false.

    Parameters
    ----------
    path : path-like
        The file about to be written.
    overwrite : bool
        Whether an existing regular file may be replaced.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    UserError
        Naming the path and what it is.

    Examples
    --------
    >>> check_target("/dev/null")
    Traceback (most recent call last):
    ...
    emdloss.errors.UserError: refusing to write /dev/null: it is a character device, not a regular file
    """
    target = Path(path)
    try:
        mode = os.stat(target).st_mode  # follows a symbolic link to what it names
    except FileNotFoundError:
        return target
    except OSError as error:
        raise UserError(f"cannot write {target}: {error.strerror or error}") from None
    for test, kind in _KINDS:
        if test(mode):
            raise UserError(f"refusing to write {target}: it is {kind}, not a regular file")
    if not overwrite:
        raise UserError(f"{target} exists; give --overwrite to replace it, or another path")
    return target


def _output_error(target: Path, error: OSError) -> UserError:
    code = error.errno or 0
    reason = error.strerror or os.strerror(code)
    return UserError(f"cannot write {target}: {reason} ({errno.errorcode.get(code, code)})")


def _move_new(tmp: Path, target: Path) -> None:
    # A hard link fails (EEXIST) where a file appeared meanwhile, rather than replacing it.
    try:
        os.link(tmp, target)
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        os.replace(tmp, target)  # a file system without hard links: checked just before


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it over ``path`` when the block succeeds.

    For writers that want a file name rather than a handle. On error the temporary file is
    removed and the previous ``path`` is left untouched.

    Parameters
    ----------
    path : path-like
        Final file name; its directory is created when missing. It must be a regular file or
        absent (:func:`check_target`).
    overwrite : bool
        Whether an existing file may be replaced (checked again just before the move).

    Raises
    ------
    UserError
        For a target that is not a regular file, an existing one when ``overwrite`` is false,
        and a write that fails with one of :data:`OUTPUT_ERRNOS` (a full disk, say).

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
    target = check_target(path, overwrite=overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(target.parent, target.name)  # leftovers of earlier, killed writes
        fd, name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=target.suffix
        )
    except OSError as error:
        if error.errno in OUTPUT_ERRNOS:
            raise _output_error(target, error) from error
        raise
    tmp = Path(name)
    key = str(tmp.absolute())
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.add(key)
    try:
        try:
            # mkstemp creates the file private (0600); give it the mode open() would.
            os.fchmod(fd, file_mode())
        finally:
            os.close(fd)
        try:
            yield tmp
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            # Checked again: a device or a file may have appeared while the block wrote.
            check_target(target, overwrite=overwrite)
            if overwrite:
                os.replace(tmp, target)
            else:
                _move_new(tmp, target)
        except OSError as error:
            if error.errno == errno.EEXIST and not overwrite:
                raise UserError(
                    f"{target} exists; give --overwrite to replace it, or another path"
                ) from None
            if error.errno in OUTPUT_ERRNOS:
                raise _output_error(target, error) from error
            raise
    finally:
        try:
            tmp.unlink(missing_ok=True)
        finally:
            with _IN_FLIGHT_LOCK:
                _IN_FLIGHT.discard(key)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[IO[bytes]], object],
    *,
    overwrite: bool = True,
) -> Path:
    """Write a file atomically through a callback that receives a binary file object.

    Parameters
    ----------
    path : path-like
        Target file; its directory is created when missing.
    write : callable
        Called once with an open binary file (a temporary file next to ``path``).
    overwrite : bool
        Whether an existing file may be replaced (see :func:`atomic_path`).

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
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True) -> Path:
    """Write bytes atomically (``overwrite``: see :func:`atomic_path`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> write_bytes(pathlib.Path(tempfile.mkdtemp()) / "b.bin", b"x").read_bytes()
    b'x'
    """
    return atomic_write(path, lambda handle: handle.write(data), overwrite=overwrite)


def write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> Path:
    """Write UTF-8 text atomically (``overwrite``: see :func:`atomic_path`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> write_text(pathlib.Path(tempfile.mkdtemp()) / "c.txt", "y").read_text()
    'y'
    """
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def _nan_to_none(obj: Any) -> Any:
    # JSON has no NaN: a metric that is undefined is written as null.
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {key: _nan_to_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(value) for value in obj]
    return obj


def write_json(path: str | os.PathLike[str], obj: Any, *, overwrite: bool = True) -> Path:
    """Write an object as indented JSON atomically (NaN is written as ``null``; ``overwrite``:
    see :func:`atomic_path`).

    Examples
    --------
    >>> import tempfile, pathlib, json
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> json.loads(write_json(target, {"a": float("nan")}).read_text())
    {'a': None}
    """
    return write_text(path, json.dumps(_nan_to_none(obj), indent=2) + "\n", overwrite=overwrite)
