"""The ``emdloss`` command: ``train``, ``evaluate``, ``calibrate``, ``predict``, ``plot`` and
``compare``.

Every option of ``emdloss train`` is a field of :class:`emdloss.training.TrainConfig`; a
``--config`` YAML file takes the same names as keys (dashes or underscores), and flags given on
the command line override the file. Bad input (:class:`emdloss.errors.UserError`, a missing
or unreadable file given by the user, a missing extra) ends the command with exit code 2 and a
one-line message, without a traceback (``--debug`` shows it); anything else is a bug in emdloss
and keeps its traceback, followed by a line asking for a report.

Starting the command is light: the parser needs neither Lightning nor PyYAML, so ``emdloss
--help`` works (and is instant) on a minimal install.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

# The parser and the commands live in two private modules (split by job).
from emdloss import _cli_parser
from emdloss._cli_commands import (
    _build_kernel,
    _calibrate,
    _compare,
    _evaluate,
    _export,
    _plot,
    _predict,
    _spell_flags,
    _train,
)
from emdloss._cli_parser import _TRAIN_EXTRA, _TRAIN_MODULES, _missing_train_modules
from emdloss._deprecation import moved_attribute
from emdloss.errors import UserError

__all__ = ["main"]

_REPORT = "https://github.com/emdloss/emdloss/issues"


def _user_error_types() -> tuple[type[BaseException], ...]:
    # FileNotFoundError & co: the paths the commands open are the user's.
    errors: list[type[BaseException]] = [
        UserError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
    ]
    if sys.modules.get("lightning") is not None:  # bad --accelerator, --devices, --precision
        try:
            from lightning.fabric.utilities.exceptions import MisconfigurationException
        except ImportError:  # pragma: no cover - a broken Lightning install
            pass
        else:
            errors.append(MisconfigurationException)
    return tuple(errors)


# torch re-raises an exception of a DataLoader worker as "Caught X in DataLoader worker process
# 0.\nOriginal Traceback (most recent call last): ...\nmodule.X: message".
_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):"


def _one_line(error: BaseException, flags: Collection[str] | None = None) -> str:
    text = str(error).strip()
    if _WORKER_TRACEBACK in text:  # a user error raised in a data-loader worker: its message only
        last = text.splitlines()[-1]
        name = f"{type(error).__module__}.{type(error).__qualname__}: "
        text = last.removeprefix(name).removeprefix(f"{type(error).__qualname__}: ")
        text += " (in a data-loader worker)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = "; ".join(lines) if lines else type(error).__name__
    if isinstance(error, OSError) and error.filename and error.strerror:
        message = f"{error.strerror}: {error.filename}"
    return _spell_flags(message, flags)


def _missing_extra(error: ModuleNotFoundError) -> bool:
    root = (error.name or "").split(".")[0]
    return root in _TRAIN_MODULES or root in ("torchvision", "matplotlib", "PIL", "tqdm")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``emdloss`` command.

    Called without ``argv`` (as the ``emdloss`` program or ``python -m emdloss``), torch and
    Lightning are imported without garbage collection and frozen out of later collections
    (:func:`_imports_outside_gc`), and a command that returns ends the process as soon as its output is complete
    (:func:`_end_process`): the interpreter's teardown would otherwise collect every object of
    torch and Lightning again, about a fifth of a short ``emdloss train``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit code: 0 on success, 2 on bad input.

    Examples
    --------
    >>> main(["train", "--loss", "nope"])
    2
    """
    code = _main(argv, program=argv is None)
    if argv is None:
        _end_process(code)
    return code


def _end_process(code: int) -> None:
    """End the process now, with ``code``, once everything it wrote is complete.

    What a normal exit does that matters is done first: non-daemon threads are joined, the
    ``atexit`` handlers run (logging's flush, multiprocessing's clean-up of children, temporary
    directories of ``weakref.finalize``) and both output streams are flushed. Every file of a
    run is already closed (written atomically by :mod:`emdloss._atomic`). What is skipped is the
    teardown of the modules and the final garbage collection over the ~0.5 M objects that torch
    and Lightning leave, which frees memory the operating system reclaims anyway.
    """
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _main(argv: Sequence[str] | None, *, program: bool = False) -> int:
    parser = _cli_parser.build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # The command's own usage (argparse would print the top-level one): exits with 2.
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 2
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "train": _train,
        "evaluate": _evaluate,
        "calibrate": _calibrate,
        "predict": _predict,
        "export": _export,
        "plot": _plot,
        "compare": _compare,
        "build-kernel": _build_kernel,
    }
    prefix = f"emdloss {args.command}"
    try:
        missing = _missing_train_modules() if args.command != "build-kernel" else []
        if missing:
            raise UserError(
                f"this command needs the train extra ({', '.join(missing)} not installed): "
                f"{_TRAIN_EXTRA}"
            )
        if args.command != "build-kernel":
            with _imports_outside_gc(program):
                from emdloss.training import quiet_lightning_logs

            quiet_lightning_logs()
        with _one_line_warnings(prefix):
            return handlers[args.command](args)
    except KeyboardInterrupt as error:
        # A RunInterrupted names the run and how to continue it.
        detail = " ".join(str(error).split())
        print(f"{prefix}: interrupted" + (f": {detail}" if detail else ""), file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:
        if not _missing_extra(error):
            _report_bug(prefix)
            raise
        if args.debug:
            traceback.print_exc()
        print(f"{prefix}: error: {error}; install the extra: {_TRAIN_EXTRA}", file=sys.stderr)
        return 2
    except _user_error_types() as error:
        if args.debug:
            traceback.print_exc()
        command = getattr(args, "_parser", parser)
        flags = {flag for action in command._actions for flag in action.option_strings}
        print(f"{prefix}: error: {_one_line(error, flags)}", file=sys.stderr)
        return 2
    except Exception:
        _report_bug(prefix)
        raise


@contextlib.contextmanager
def _imports_outside_gc(program: bool) -> Iterator[None]:
    """Import torch and Lightning without garbage collection, then freeze what they built.

    Importing them allocates ~0.5 M objects that live as long as the process; the collector
    ran 8 full collections over them while they were imported (issue 20: about a tenth of an
    ``emdloss train``), and walked them again in every later one. Only for the program
    (``program``): a caller's process keeps its collector as it was.
    """
    if not program:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@contextlib.contextmanager
def _one_line_warnings(prefix: str) -> Iterator[None]:
    """Show emdloss's InputWarnings as ``emdloss train: warning: ...``, one line each, and each
    text once: the runs of a comparison load the same data (and its warnings) many times."""
    from emdloss.errors import InputWarning

    previous = warnings.showwarning
    shown: set[str] = set()

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, InputWarning):
            if str(message) not in shown:
                shown.add(str(message))
                print(f"{prefix}: warning: {message}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _report_bug(prefix: str) -> None:
    # Printed before the traceback that Python prints for the re-raised error.
    print(
        f"{prefix}: internal error (a bug in emdloss, not in your input); please report it "
        f"with the command and the traceback below at {_REPORT}",
        file=sys.stderr,
    )


# Public names of this module in emdloss 0.1.0 that now live elsewhere: reading them here warns.
_MOVED = {
    "SUMMARY_METRICS": "emdloss.vocabulary:REPORTED_METRICS",
    "build_parser": "emdloss._cli_parser",
    "format_table": "emdloss._cli_commands",
}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
