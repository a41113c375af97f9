"""emdloss: exact squared Earth Mover's Distance losses for ordered classes."""

from emdloss import functional
from emdloss._validation import is_validation_enabled, set_validation, validation
from emdloss.losses import CostMatrixEMDLoss, EMDLoss, GroundEMDLoss, SquaredEMDLoss

__version__ = "0.1.0"

__all__ = [
    "CostMatrixEMDLoss",
    "EMDLoss",
    "GroundEMDLoss",
    "SquaredEMDLoss",
    "__version__",
    "functional",
    "is_validation_enabled",
    "set_validation",
    "validation",
]
