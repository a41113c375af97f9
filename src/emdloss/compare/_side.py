"""A second process for the work of a comparison that does not wait for this one.

On two or more cores, ``compare`` with ``--jobs 1`` trains on one core and leaves the others
idle. The work that needs no trained run, the baselines, is fitted there while the runs train,
and when the runs are done that process draws half of the data sets' figures while this one
draws the other half (issue 20: the baselines and the figures were about a third of the default
command). The process is a fork-server worker like ``--jobs``'s
(:func:`emdloss.compare._runner._worker_context`), started once, with one torch and BLAS thread.

Its work is a view of this process's: the same functions on the same arguments, so the same
files and numbers. Whatever it cannot deliver (it died, the fork server failed, the function
raised) is done again here, where an error is raised as it would have been without it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = ["SideProcess", "side_process"]

T = TypeVar("T")


def _init_side() -> None:
    import os

    # Ctrl-C is for the comparison: this process's work is redone or dropped by it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


class SideProcess:
    """One worker process: :meth:`submit` work, :meth:`result` to collect it (or do it here)."""

    def __init__(self, context: Any) -> None:
        self._pool = ProcessPoolExecutor(1, context, _init_side)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T] | None:
        """Queue ``fn(*args)`` in the side process; ``None`` when it cannot take work."""
        try:
            return self._pool.submit(fn, *args)
        except Exception:  # a broken pool: the work is done here instead
            return None

    @staticmethod
    def result(future: Future[T] | None, fn: Callable[..., T], *args: Any) -> T:
        """The side process's ``fn(*args)``, or, if it did not deliver, ``fn(*args)`` here."""
        if future is not None:
            try:
                return future.result()
            except Exception:  # its error (or its death): done here, where errors surface
                pass
        return fn(*args)

    def close(self) -> None:
        """Stop the process; queued work is dropped, running work ends on its own."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def side_process(jobs: int, executor: str, mp_context: str | None) -> SideProcess | None:
    """The side process of a comparison, or ``None`` where it would not help: ``--jobs`` above
    1 (the workers use the cores), another executor, or a single core."""
    from emdloss.compare._runner import _worker_context, available_cores

    if jobs != 1 or executor != "local" or available_cores() < 2:
        return None
    try:
        return SideProcess(_worker_context(mp_context))
    except Exception:  # pragma: no cover - no process could be made: all work here
        return None
