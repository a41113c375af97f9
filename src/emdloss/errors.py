"""Error classes shared by every layer.

:class:`UserError` marks a problem the user can fix (a bad option, a malformed or unsafe file, a
data set that does not fit the request). The ``emdloss`` command reports it as one line and exit
code 2; any other exception is a bug in emdloss and keeps its traceback. It subclasses
:class:`ValueError` so that library callers who catch ``ValueError`` keep working.

Examples
--------
>>> try:
...     raise UserError("--epochs must be a positive integer, got 0")
... except ValueError as error:
...     print(error)
--epochs must be a positive integer, got 0
"""

from __future__ import annotations

__all__ = ["InputWarning", "RunInterrupted", "UserError"]


class UserError(ValueError):
    """A problem the user can fix; the message names the offending value and what was expected."""


class InputWarning(UserWarning):
    """Data that works but may mislead: a suspicious column, a tiny validation split, an input
    converted to what the model was trained on. The ``emdloss`` command prints each as one line
    (``emdloss train: warning: ...``); library callers can filter them with :mod:`warnings`."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run: the message names the run and how to continue it. The
    ``emdloss`` command prints it as one line and exits with 130, like any
    :class:`KeyboardInterrupt`."""
