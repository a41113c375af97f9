"""emdloss: exact squared Earth Mover's Distance losses for ordered classes.

The package root needs only torch and numpy: the functional losses, their ``nn.Module``
wrappers, ground distances (fixed and learned), the paper's training recipe and the decoding
rules. The toolkit (``emdloss.data``, ``emdloss.models``, ``emdloss.metrics``,
``emdloss.training``, ``emdloss.compare``, ``emdloss.plots``) needs the ``train`` extra.
"""

from emdloss import functional
from emdloss._cpu_kernel import build as build_cpu_kernel
from emdloss._validation import is_validation_enabled, set_validation, validation
from emdloss.decoding import RULES, decode
from emdloss.ground import (
    LearnedGroundDistance,
    centroid_ground_distance,
    ordinal_ground_distance,
    row_percentile_ranks,
)
from emdloss.losses import CostMatrixEMDLoss, EMDLoss, GroundEMDLoss, SquaredEMDLoss
from emdloss.recipe import CombinedLoss, EMDRecipeLoss

__version__ = "0.1.0"

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
    "decode",
    "functional",
    "is_validation_enabled",
    "ordinal_ground_distance",
    "row_percentile_ranks",
    "set_validation",
    "validation",
]
