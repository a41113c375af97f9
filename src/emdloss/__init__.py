"""emdloss: exact squared Earth Mover's Distance losses for ordered classes.

The package root needs only torch and numpy: the functional losses, their ``nn.Module``
wrappers, ground distances (fixed and learned), the paper's training recipe, the decoding
rules and conformal prediction sets (``emdloss.conformal``). The toolkit (``emdloss.data``, ``emdloss.models``, ``emdloss.metrics``,
``emdloss.training``, ``emdloss.compare``, ``emdloss.plots``) needs the ``train`` extra.

The names below are imported on first use (PEP 562), so that ``import emdloss`` and the
``emdloss`` command (``--help``, ``--version``) start without importing torch.

>>> import emdloss
>>> emdloss.SquaredEMDLoss.__name__
'SquaredEMDLoss'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from emdloss._version import __version__  # imports nothing

if TYPE_CHECKING:
    from emdloss import conformal, functional
    from emdloss._cpu_kernel import build as build_cpu_kernel
    from emdloss._ordinal import current_implementation, implementation
    from emdloss._validation import is_validation_enabled, set_validation, validation
    from emdloss.decoding import decode
    from emdloss.ground import (
        LearnedGroundDistance,
        centroid_ground_distance,
        ordinal_ground_distance,
        row_percentile_ranks,
    )
    from emdloss.losses import CostMatrixEMDLoss, EMDLoss, GroundEMDLoss, SquaredEMDLoss
    from emdloss.recipe import CombinedLoss, EMDRecipeLoss
    from emdloss.vocabulary import RULES

__all__ = [
    "RULES",
    "CombinedLoss",
    "CostMatrixEMDLoss",
    "EMDLoss",
    "EMDRecipeLoss",
    "GroundEMDLoss",
    "LearnedGroundDistance",
    "SquaredEMDLoss",
    "__version__",
    "build_cpu_kernel",
    "centroid_ground_distance",
    "conformal",
    "current_implementation",
    "decode",
    "functional",
    "implementation",
    "is_validation_enabled",
    "ordinal_ground_distance",
    "row_percentile_ranks",
    "set_validation",
    "validation",
]

# Public name -> (module, attribute in it).
_LAZY: dict[str, tuple[str, str]] = {
    "functional": ("emdloss.functional", ""),
    "conformal": ("emdloss.conformal", ""),
    "build_cpu_kernel": ("emdloss._cpu_kernel", "build"),
    "current_implementation": ("emdloss._ordinal", "current_implementation"),
    "implementation": ("emdloss._ordinal", "implementation"),
    "is_validation_enabled": ("emdloss._validation", "is_validation_enabled"),
    "set_validation": ("emdloss._validation", "set_validation"),
    "validation": ("emdloss._validation", "validation"),
    "RULES": ("emdloss.vocabulary", "RULES"),
    "decode": ("emdloss.decoding", "decode"),
    "LearnedGroundDistance": ("emdloss.ground", "LearnedGroundDistance"),
    "centroid_ground_distance": ("emdloss.ground", "centroid_ground_distance"),
    "ordinal_ground_distance": ("emdloss.ground", "ordinal_ground_distance"),
    "row_percentile_ranks": ("emdloss.ground", "row_percentile_ranks"),
    "CostMatrixEMDLoss": ("emdloss.losses", "CostMatrixEMDLoss"),
    "EMDLoss": ("emdloss.losses", "EMDLoss"),
    "GroundEMDLoss": ("emdloss.losses", "GroundEMDLoss"),
    "SquaredEMDLoss": ("emdloss.losses", "SquaredEMDLoss"),
    "CombinedLoss": ("emdloss.recipe", "CombinedLoss"),
    "EMDRecipeLoss": ("emdloss.recipe", "EMDRecipeLoss"),
}


# Public submodules that the eager root used to import: ``emdloss.ground`` after ``import
# emdloss`` keeps working. (Private ones are imported by name, ``from emdloss import _ordinal``.)
_SUBMODULES = frozenset({"losses", "ground", "recipe", "decoding", "errors"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
