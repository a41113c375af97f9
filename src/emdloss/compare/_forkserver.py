"""What the fork server of compare's ``--jobs`` workers imports before it forks any of them.

The trainer (torch, Lightning) is imported once here, so that every worker forked from this
process starts with it loaded. The fork server then ends without the interpreter's teardown:
its exit would otherwise collect the ~0.5 M objects of those imports again (seconds of CPU,
while the command that started it has already answered). It holds no file of a run.

Imported only by the fork server (:data:`emdloss.compare._runner.WORKER_PRELOAD`): the
``atexit`` handler below ends the process that imports this module.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys

from emdloss.training import train

#: The trainer, imported once here (``train`` is looked up through the package's face).
TRAINER = train

__all__: list[str] = []


def _end_quickly() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


atexit.register(_end_quickly)
gc.freeze()  # the forked workers share these pages; a collection would copy them
