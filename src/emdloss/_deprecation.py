"""Old import paths of public names, kept for one release with a ``DeprecationWarning``.

A public module whose name moved away since the last release (:data:`SINCE`) keeps a table of
the moved names and a module-level ``__getattr__`` (PEP 562) that calls :func:`moved_attribute`:
accessing an old path warns once per call site, names the new path and the release that removes
the old one (:data:`REMOVED_IN`), and returns the object from its new home. Nothing else is
re-exported; a name that was never public is not kept.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Any

#: The release whose public paths are kept, and the one that removes them.
SINCE = "0.1.0"
REMOVED_IN = "0.3.0"


def moved_attribute(module: str, name: str, moved: Mapping[str, str]) -> Any:
    """The value of ``module.name`` from its new home ``moved[name]``, with a warning.

    A new home with an underscore component is internal: the warning says there is no public
    replacement. A home ``"module:NEW_NAME"`` holds the value under another name. A name not in
    ``moved`` raises :class:`AttributeError` as usual.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     value = moved_attribute("old.place", "SINCE", {"SINCE": "emdloss._deprecation"})
    >>> value == SINCE, str(caught[0].message)
    (True, 'old.place.SINCE is deprecated and will be removed in emdloss 0.3.0; it is internal, with no public replacement')
    """
    home = moved.get(name)
    if home is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new, _, renamed = home.partition(":")
    if any(part.startswith("_") for part in new.split(".")):
        where = "it is internal, with no public replacement"
    else:
        where = f"import it from {new}" + (f" as {renamed}" if renamed else "")
    warnings.warn(
        f"{module}.{name} is deprecated and will be removed in emdloss {REMOVED_IN}; {where}",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(new), renamed or name)
