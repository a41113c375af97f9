"""Atomic file writes for run directories, and a Lightning checkpoint writer that uses them.

Every file of a run directory goes through :mod:`emdloss._atomic` (a temporary file beside the
target, flushed, then :func:`os.replace`), so a run killed mid-write leaves either the previous
file or the new one, never a truncated mix.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from emdloss._atomic import atomic_write

__all__ = ["AtomicCheckpointIO"]


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
