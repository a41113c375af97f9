"""One ``compare`` per output directory: a lock file that names its holder.

Two comparisons writing into one directory would both train every unfinished run and overwrite
each other's files. The lock is an advisory :func:`fcntl.flock` on ``<output>/.compare.lock``,
which holds the holder's PID and host for the message a second comparison prints. The holder
removes the file when it finishes; a process killed with the lock leaves the file, but the kernel
drops the lock with the process, so the next comparison takes over the stale file (a dead PID)
without asking anyone to delete it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from emdloss.errors import UserError

__all__ = ["LOCK_FILE", "output_lock"]

LOCK_FILE = ".compare.lock"


def _holder(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        lines = []
    pid = lines[0] if lines else "unknown"
    host = f" on {lines[1]}" if len(lines) > 1 else ""
    return f"PID {pid}{host}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _busy(directory: Path, path: Path) -> UserError:
    return UserError(
        f"{directory} is in use by another emdloss compare ({_holder(path)}, lock file {path}); "
        "wait for it to finish, or give another --output"
    )


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the lock of a comparison directory for the duration of the block.

    Parameters
    ----------
    directory : path-like
        The comparison's output directory (created when missing).

    Yields
    ------
    pathlib.Path
        The lock file.

    Raises
    ------
    UserError
        When another live process holds the lock; the message names the directory and its PID.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with output_lock(d):
    ...     with output_lock(d):
    ...         pass
    Traceback (most recent call last):
    ...
    emdloss.errors.UserError: ... is in use by another emdloss compare (PID ...
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield from _pid_file_lock(directory, path)
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(directory, path) from None
        # The holder we waited on may have removed the file between our open and our lock:
        # then this lock is on a deleted file, and the one to take is the new file's.
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = -1
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield path
    finally:
        # Remove the file while still holding the lock, then release it.
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _pid_file_lock(directory: Path, path: Path) -> Iterator[Path]:  # pragma: no cover
    # Without flock: an exclusive create, taken over when the PID in it is dead.
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            words = path.read_text(encoding="utf-8").split() if path.exists() else []
            if words and words[0].isdigit() and _pid_alive(int(words[0])):
                raise _busy(directory, path) from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)
        return
    raise _busy(directory, path)
