"""The distributed timeout: how long a DDP process waits for the others before giving up.

Every collective of a DDP run (the gradient all-reduce of each step, the metric and ground-matrix
reductions, the start-up rendezvous) waits for every process. torch's default wait is 30
minutes, so one stopped or hung process (``SIGSTOP``, a stuck file system, a debugger) froze its
partners for half an hour; issue 8 measured more than 3 minutes of silence. ``dist_timeout``
(seconds, default :data:`DEFAULT_DIST_TIMEOUT`) bounds that wait; the waiting processes then
fail with a message that names the option, and the run can be resumed.

Why 300 s: in a healthy run the processes move in lock-step (each trains and validates its own
shard), so no collective waits more than a step's time, well under a second here. The longest
legitimate wait is the start-up rendezvous, where the first process waits while the others
import Lightning and load the data (about 20 s measured for two CPU processes on a loaded
machine; a 6 s timeout was too short there). 300 s is over ten times that and six times shorter
than torch's default. A step that truly takes longer (huge models on slow interconnects) can
raise it with ``--dist-timeout``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from emdloss.errors import UserError

__all__ = ["DEFAULT_DIST_TIMEOUT", "apply_timeout", "explain_timeouts", "strategy_with_timeout"]

#: Seconds a DDP process waits for the others in any collective (see the module docstring).
DEFAULT_DIST_TIMEOUT = 300.0


def strategy_with_timeout(strategy: str, seconds: float) -> Any:
    """The Lightning strategy named ``strategy``, built with a collective timeout, if it is DDP.

    Names of the DDP family (``ddp``, ``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``,
    ``ddp_find_unused_parameters_true``, ...) become a ``DDPStrategy`` instance with their
    registered settings and ``timeout``; any other name (``auto``, ``fsdp``, ...) is returned
    unchanged for Lightning to resolve (see :func:`apply_timeout` for ``auto``).

    Parameters
    ----------
    strategy : str
        The ``--strategy`` value.
    seconds : float
        The timeout.

    Returns
    -------
    str or lightning.pytorch.strategies.Strategy

    Examples
    --------
    >>> strategy_with_timeout("ddp_fork", 60)._timeout
    datetime.timedelta(seconds=60)
    >>> strategy_with_timeout("auto", 60)
    'auto'
    """
    from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

    if strategy not in StrategyRegistry:
        return strategy
    entry = StrategyRegistry[strategy]
    cls = entry["strategy"]
    if not (isinstance(cls, type) and issubclass(cls, DDPStrategy)):
        return strategy
    params = dict(entry["init_params"])
    params["timeout"] = timedelta(seconds=seconds)
    return cls(**params)


def apply_timeout(trainer: Any, seconds: float) -> None:
    """Give a DDP strategy that Lightning chose itself (``strategy="auto"``) the timeout.

    The strategy is built inside :class:`lightning.pytorch.Trainer` and connects only when
    fitting starts, so setting its timeout between the two takes effect. A no-op for a single
    process and for strategies built by :func:`strategy_with_timeout`.
    """
    from lightning.pytorch.strategies import DDPStrategy

    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy):
        # Lightning keeps the constructor's timeout here and passes it to
        # torch.distributed.init_process_group when fitting starts; tested, so that a rename
        # in Lightning cannot silently bring back the 30-minute default.
        strategy._timeout = timedelta(seconds=seconds)


def _is_timeout(error: BaseException) -> bool:
    # A collective's timeout, not any "timed out" (a DataLoader's own timeout is not one).
    # gloo words it in several ways: "Timed out waiting 30000ms for recv operation" in a
    # backward hook, "Application timeout caused pair closure" in DDP's buffer broadcast.
    import torch.distributed as dist

    text = str(error).lower()
    if ("timed out" not in text and "timeout" not in text) or "dataloader" in text:
        return False
    if dist.is_available() and (isinstance(error, dist.DistError) or dist.is_initialized()):
        return True
    return any(word in text for word in ("gloo", "nccl", "store", "collective", "pair closure"))


@contextlib.contextmanager
def explain_timeouts(seconds: float) -> Iterator[None]:
    """Turn a collective that timed out into one line that names ``dist_timeout``.

    Examples
    --------
    >>> with explain_timeouts(5):
    ...     raise RuntimeError("[gloo] Timed out waiting 5000ms for recv operation to complete")
    Traceback (most recent call last):
    ...
    emdloss.errors.UserError: another DDP process did not answer within dist_timeout=5 s ...
    """
    try:
        yield
    except RuntimeError as error:  # torch.distributed.DistError subclasses RuntimeError
        if not _is_timeout(error):
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"another DDP process did not answer within dist_timeout={seconds:g} s ({first}); "
            "if one was stopped or hung, restart the run with --resume; if a step legitimately "
            "takes longer, raise --dist-timeout"
        ) from error
