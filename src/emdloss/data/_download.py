"""Data directory resolution, MD5 checks and atomic, checksummed downloads."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from emdloss._atomic import file_mode
from emdloss.errors import UserError

ENV_DATA_DIR = "EMDLOSS_DATA"

# (resolved path, size, mtime_ns) -> MD5, so a file is hashed once per process unless it changes.
_MD5_CACHE: dict[tuple[str, int, int], str] = {}


class DownloadError(OSError):
    """A download failed for a network or file-system reason (offline, HTTP error, ...)."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Directory holding the data files: ``data_dir``, else ``$EMDLOSS_DATA``, else a user cache.

    Parameters
    ----------
    data_dir : str or PathLike, optional
        Explicit directory (the CLI's ``--data-dir``); wins over everything else.

    Returns
    -------
    Path
        The directory (not created here; a download creates it).

    Examples
    --------
    >>> resolve_data_dir("/tmp/somewhere").as_posix()
    '/tmp/somewhere'
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("emdloss"))


def md5_file(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """MD5 hex digest of a file, remembered per process while its size and mtime stay the same.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"abc"); f.flush()
    ...     md5_file(f.name)
    '900150983cd24fb0d6963f7d28e17f72'
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    cached = _MD5_CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.md5(usedforsecurity=False)
    with open(resolved, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    result = digest.hexdigest()
    _MD5_CACHE[key] = result
    return result


def check_md5(path: str | os.PathLike[str], expected: str) -> None:
    """Raise UserError (a ValueError) naming the file and both digests unless the MD5 matches."""
    actual = md5_file(path)
    if actual != expected.lower():
        raise UserError(
            f"checksum mismatch for {path}: MD5 {actual}, expected {expected.lower()} "
            "(the file is damaged or a different version; delete it to download it again)"
        )


def download_file(
    url: str,
    destination: str | os.PathLike[str],
    *,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``destination`` atomically, verifying its MD5 when given.

    The data go to a temporary file in the destination's directory, which replaces
    ``destination`` (``os.replace``) only once complete and verified; on any failure the temporary
    file is removed, so no half-written file is ever left. Works for ``http(s)://`` and
    ``file://`` URLs.

    Parameters
    ----------
    url : str
        Source URL.
    destination : str or PathLike
        Final path; its directory is created if needed.
    md5 : str, optional
        Expected MD5 hex digest.
    progress : bool, optional
        Show a tqdm progress bar on stderr.
    timeout : float, optional
        Socket timeout in seconds.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    ValueError
        If the downloaded data do not have the expected MD5 (names URL, file and both digests).
    DownloadError
        If the URL cannot be read or the file cannot be written.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = Path(d, "src.bin").write_bytes(b"abc")
    ...     out = download_file(Path(d, "src.bin").as_uri(), Path(d, "copy.bin"),
    ...                         md5="900150983cd24fb0d6963f7d28e17f72", progress=False)
    ...     out.read_bytes()
    b'abc'
    """
    from tqdm.auto import tqdm

    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".part", delete=False
        )
    except OSError as exc:
        raise DownloadError(f"cannot write into {destination.parent}: {exc}") from exc
    temp = Path(handle.name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with handle:
            # A data file is ordinary data (0644 under umask 022), not private like a temporary.
            os.fchmod(handle.fileno(), file_mode())
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "emdloss"})
                response = urllib.request.urlopen(request, timeout=timeout)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DownloadError(f"cannot download {url}: {exc}") from exc
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=destination.name,
                    disable=not progress,
                ) as bar:
                    try:
                        while chunk := response.read(1 << 20):
                            handle.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
                    except (OSError, http.client.HTTPException) as exc:
                        raise DownloadError(f"download of {url} interrupted: {exc!r}") from exc
            if total is not None and handle.tell() != total:
                raise DownloadError(
                    f"download of {url} incomplete: {handle.tell()} of {total} bytes"
                )
            handle.flush()
            os.fsync(handle.fileno())
        actual = digest.hexdigest()
        if md5 is not None and actual != md5.lower():
            raise ValueError(
                f"checksum mismatch downloading {url} to {destination}: MD5 {actual}, "
                f"expected {md5.lower()}; nothing was written"
            )
        os.replace(temp, destination)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return destination
