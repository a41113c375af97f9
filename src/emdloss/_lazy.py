"""Lazy package faces (PEP 562): a public name is imported from its home on first use.

A package whose ``__init__`` would otherwise import heavy modules (Lightning, the trainer) keeps
a table ``name -> home module`` and takes its module-level ``__getattr__`` and ``__dir__`` from
:func:`lazy_attributes`, so ``import emdloss.compare`` stays light and every name keeps one home.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_attributes(
    package: str, homes: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, resolving ``homes[name]`` on first use.

    The value is cached in the package's namespace, so the import runs once per name.

    Examples
    --------
    >>> getattr_, dir_ = lazy_attributes("emdloss", {"PurePath": "pathlib"}, ["PurePath"])
    >>> getattr_("PurePath").__name__, "PurePath" in dir_()
    ('PurePath', True)
    >>> del sys.modules["emdloss"].PurePath  # the doctest's own cache entry
    """
    names = frozenset(public)

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | names)

    return __getattr__, __dir__
