r"""Input checks shared by the losses, and the switch for the costly ones.

Two kinds of check run on every call of :mod:`emdloss.functional`:

* **Shape and name checks** (always on, free). They read only shapes, dtypes and Python
  values, never tensor contents, so they cost no host synchronisation on a GPU: the input is
  a floating tensor of shape :math:`(N, C)` or :math:`(N, C, d_1, \dots)` with :math:`C \ge 2`;
  the target has the matching index shape (integer dtype) or the input's shape (floating
  dtype); ``weight`` and ``positions`` have length :math:`C`; a ground distance or cost matrix
  has shape :math:`(C, C)`; ``input_type``, ``normalization``, ``reduction`` and ``method``
  are known names; ``p`` is a finite number :math:`\ge 1`.
* **Value checks** (data-dependent). They inspect tensor contents, which on a GPU forces one
  host synchronisation each time: class indices in :math:`[0, C)` unless equal to
  ``ignore_index``; soft-target rows finite, non-negative and summing to 1; ``probs`` inputs in
  :math:`[0, 1]` with rows summing to 1 (``log_probs``: :math:`\le 0`, rows of
  :math:`e^x` summing to 1); ``positions`` finite and strictly increasing; ``weight`` finite
  and non-negative; a ground distance finite and non-negative; a cost matrix finite; one-hot
  targets where only one-hot targets make sense (``ground_emd(method="exact")``).

**Tolerance policy** (one for the whole library: losses, ``decoding``, ``metrics``). A row
that must sum to 1 is accepted when it does so within :func:`sum_tolerance` of its dtype:
1e-6 in float64 (float32 probabilities upcast to float64 still pass), 1e-4 in float32 (about
1000 ulps: a softmax over C = 1000 classes summed naively), 5e-3 in float16 and 2e-2 in
bfloat16 (a few ulps at 1). One-hot rows must have a largest entry >= 1 minus that tolerance.
Every other check is exact (finite, non-negative, strictly increasing, in range), except that
the metrics accept probabilities down to minus the same tolerance.

The value checks are on by default. Switch them off once the data pipeline is trusted,
process-wide with :func:`set_validation` or for a block (this thread / asyncio task only,
a :class:`contextvars.ContextVar`) with :func:`validation`; they are also
skipped while :func:`torch.compile` traces (they would break the graph) and inside
:func:`torch.func.vmap` (which cannot read a value). With them off, bad
values are *not* detected: out-of-range indices raise (or fault on a GPU) inside the gather
ops, and the other cases give meaningless numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

__all__ = [
    "INPUT_TYPES",
    "NORMALIZATIONS",
    "REDUCTIONS",
    "is_validation_enabled",
    "set_validation",
    "validation",
]

INPUT_TYPES = ("logits", "probs", "log_probs")
NORMALIZATIONS = ("class_mean", "sum", "rps")
# Old spellings still accepted, with a DeprecationWarning. "mean" read like the ``reduction``
# of the same call (a mean over the batch) although it is the 1/C over the classes.
NORMALIZATION_ALIASES = {"mean": "class_mean"}
REDUCTIONS = ("none", "mean", "sum")
METHODS = ("exact", "sinkhorn")

# The switch has two layers: a process-wide default (:func:`set_validation`) and a per-context
# override (:func:`validation`), held in a ContextVar so that a block in one thread or asyncio
# task never changes what another one checks.
_default_enabled = True
_override: ContextVar[bool | None] = ContextVar("emdloss_validation", default=None)


def set_validation(enabled: bool) -> None:
    """Switch the data-dependent (host-synchronising) input checks on or off, process-wide.

    Shape, dtype and option checks always run; see the module notes for the list. A
    :func:`validation` block in effect in the calling thread or task takes precedence.

    Parameters
    ----------
    enabled : bool
        ``True`` (the default state) to check values, ``False`` to skip those checks.

    Examples
    --------
    >>> import emdloss
    >>> emdloss.set_validation(False)
    >>> emdloss.is_validation_enabled()
    False
    >>> emdloss.set_validation(True)
    """
    global _default_enabled
    _default_enabled = _check_bool(enabled)


def _check_bool(enabled: object) -> bool:
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    return enabled


def is_validation_enabled() -> bool:
    """Whether the data-dependent input checks run here (see :func:`set_validation`).

    Examples
    --------
    >>> import emdloss
    >>> emdloss.is_validation_enabled()
    True
    """
    override = _override.get()
    return _default_enabled if override is None else override


@contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Context manager that switches the value checks for a block, in this thread/task only.

    The setting lives in a :class:`contextvars.ContextVar`: other threads and asyncio tasks
    keep theirs, and the previous value is restored on exit (also after an exception).

    Parameters
    ----------
    enabled : bool
        Whether the data-dependent checks run inside the block.

    Examples
    --------
    >>> import torch, emdloss
    >>> logits, target = torch.zeros(2, 3), torch.tensor([0, 2])
    >>> with emdloss.validation(False):  # e.g. in a hot loop on the GPU
    ...     loss = emdloss.functional.squared_emd(logits, target)
    >>> emdloss.is_validation_enabled()
    True
    """
    token = _override.set(_check_bool(enabled))
    try:
        yield
    finally:
        _override.reset(token)


def _vmapped() -> bool:
    """Whether a :func:`torch.func.vmap` is active here (it cannot read tensor values)."""
    if not torch._C._are_functorch_transforms_active():
        return False
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return any(i.key() == TransformType.Vmap for i in retrieve_all_functorch_interpreters())


def values_readable() -> bool:
    """Whether tensor values may be read to Python here: not while ``torch.compile`` traces
    and not inside :func:`torch.func.vmap` (both would fail, or break the graph)."""
    return not torch.compiler.is_compiling() and not _vmapped()


def values_checked() -> bool:
    """True when the data-dependent checks should run now (enabled, not traced, not vmapped)."""
    # values_readable() first: Dynamo in torch 2.5 cannot trace ContextVar.get.
    return values_readable() and is_validation_enabled()


# --------------------------------------------------------------------------- names and options


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``; else a ValueError naming both."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_power(p: object) -> float:
    """The order ``p`` of a Wasserstein distance: a finite real number >= 1."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"p must be a real number >= 1, got {type(p).__name__}")
    if not (math.isfinite(p) and p >= 1):
        raise ValueError(f"p must be a finite number >= 1, got {p!r}")
    return float(p)


def check_normalization(normalization: object, stacklevel: int = 3) -> str:
    """A ``normalization`` name, with the deprecated ``"mean"`` mapped to ``"class_mean"``."""
    if isinstance(normalization, str) and normalization in NORMALIZATION_ALIASES:
        new = NORMALIZATION_ALIASES[normalization]
        warnings.warn(
            f"normalization={normalization!r} is deprecated (it is the mean over the classes, "
            f"not over the batch as reduction='mean'): use normalization={new!r}",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        return new
    return check_choice("normalization", normalization, NORMALIZATIONS)


def normalization_scale(normalization: object, num_classes: int) -> float:
    """The constant ``c`` of ``squared_emd`` for a ``normalization`` name and ``C`` classes.

    The one table of these constants: :math:`1/C` (``"class_mean"``, the authors'), 1
    (``"sum"``) and :math:`1/(C-1)` (``"rps"``).
    """
    name = check_normalization(normalization, stacklevel=4)
    return {"class_mean": 1.0 / num_classes, "sum": 1.0, "rps": 1.0 / (num_classes - 1)}[name]


def check_num_classes(num_classes: object, minimum: int = 2) -> int:
    """A class count: an int (not a bool) >= ``minimum``; TypeError / ValueError naming it."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(
            f"num_classes must be an integer >= {minimum}, got {type(num_classes).__name__} "
            f"{num_classes!r}"
        )
    if num_classes < minimum:
        raise ValueError(f"num_classes must be an integer >= {minimum}, got {num_classes}")
    return num_classes


def check_ignore_index(ignore_index: object) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    return ignore_index


# --------------------------------------------------------------------------- input and target


def sum_tolerance(dtype: torch.dtype) -> float:
    """How far a row of probabilities in ``dtype`` may sum away from 1 and still be accepted."""
    if dtype == torch.float64:
        return 1e-6
    if dtype == torch.float16:
        return 5e-3
    if dtype == torch.bfloat16:
        return 2e-2
    return 1e-4


def check_input(input: Tensor) -> int:
    """Input of shape (N, C) or (N, C, d1, ...), floating, C >= 2. Returns C (shape-only)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got dtype {input.dtype}")
    if input.dim() < 2:
        raise ValueError(
            f"input must have shape (N, C) or (N, C, d1, ...), got shape {tuple(input.shape)}"
        )
    num_classes = input.shape[1]
    if num_classes < 2:
        raise ValueError(
            f"input must have at least 2 classes along dim 1, got C={num_classes} "
            f"(shape {tuple(input.shape)})"
        )
    return int(num_classes)


def target_is_index(input: Tensor, target: Tensor) -> bool:
    """Classify ``target`` as class indices (True) or class distributions (False); shape-only."""
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.device != input.device:
        raise ValueError(
            f"target is on {target.device} but input is on {input.device}; expected one device"
        )
    index_shape = (input.shape[0], *input.shape[2:])
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(
            f"target must hold class indices (integer dtype) or class distributions "
            f"(floating dtype), got dtype {target.dtype}"
        )
    if not target.is_floating_point():
        if tuple(target.shape) != index_shape:
            raise ValueError(
                f"class-index target must have shape {index_shape} for input of shape "
                f"{tuple(input.shape)}, got {tuple(target.shape)}"
            )
        return True
    if target.shape != input.shape:
        raise ValueError(
            f"class-distribution target must have the input's shape {tuple(input.shape)}, got "
            f"{tuple(target.shape)} (class indices need an integer dtype, got {target.dtype})"
        )
    return False


def _first_true(mask: Tensor) -> tuple[int, ...]:
    """Index of the first True entry of ``mask`` (called only on the error path)."""
    return tuple(int(i) for i in mask.nonzero()[0].tolist())


def check_index_values(target: Tensor, num_classes: int, ignore_index: int) -> bool | None:
    """Class indices in [0, C) or equal to ``ignore_index`` (one host sync).

    Returns whether any entry equals ``ignore_index`` when that is known for free from the
    check (True/False), or None when not checked (validation off) or not cheaply known.
    """
    if not values_checked():
        return None
    if target.numel() == 0:
        return False
    lo, hi = (int(v) for v in torch.aminmax(target))
    ignore_in_range = 0 <= ignore_index < num_classes
    if lo >= 0 and hi < num_classes:
        return None if ignore_in_range else False
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(bad.any()):
        where = _first_true(bad)
        raise ValueError(
            f"target holds class index {int(target[where])} at position {where}, expected an "
            f"index in [0, {num_classes}) or ignore_index={ignore_index}"
        )
    return True


def _check_rows_sum_to_one(rows: Tensor, name: str, what: str, dtype: torch.dtype) -> None:
    """``rows`` is (N, C, ...) float; each slice along dim 1 must sum to 1 (within tolerance)."""
    if rows.numel() == 0:
        return
    sums = rows.sum(dim=1, dtype=torch.float64 if rows.dtype == torch.float64 else torch.float32)
    tol = sum_tolerance(dtype)
    off = ~((sums - 1).abs() <= tol)
    if bool(off.any()):
        where = _first_true(off)
        raise ValueError(
            f"{name} rows must be {what} summing to 1 along dim 1 (tolerance {tol:g}); the row "
            f"at {where} sums to {float(sums[where]):.6g}"
        )


def check_distribution_values(target: Tensor, name: str = "target") -> None:
    """Soft-target rows: finite, non-negative, summing to 1 along dim 1 (one host sync)."""
    if not values_checked() or target.numel() == 0:
        return
    bad = ~(target >= 0) | ~torch.isfinite(target)  # NaN fails ``>= 0``
    if bool(bad.any()):
        where = _first_true(bad)
        raise ValueError(
            f"{name} holds {float(target[where]):g} at {where}; class distributions must be "
            f"finite and non-negative"
        )
    _check_rows_sum_to_one(target, name, "class distributions", target.dtype)


def check_one_hot_values(target: Tensor, hint: str) -> None:
    """Distribution targets that must be one-hot (each row has a single 1); one host sync."""
    if not values_checked() or target.numel() == 0:
        return
    check_distribution_values(target)
    tol = sum_tolerance(target.dtype)
    largest = target.amax(dim=1)
    soft = ~(largest >= 1 - tol)
    if bool(soft.any()):
        where = _first_true(soft)
        raise ValueError(
            f"target row at {where} is a soft distribution (largest entry "
            f"{float(largest[where]):.6g}), expected class indices or one-hot rows; {hint}"
        )


def check_input_values(input: Tensor, input_type: str) -> None:
    """``probs`` in [0, 1] summing to 1; ``log_probs`` <= 0 with exp summing to 1 (one sync)."""
    if input_type == "logits" or not values_checked() or input.numel() == 0:
        return
    if input_type == "probs":
        bad = ~((input >= 0) & (input <= 1))  # also catches NaN
        if bool(bad.any()):
            where = _first_true(bad)
            raise ValueError(
                f"input holds {float(input[where]):g} at {where}, but input_type='probs' expects "
                f"probabilities in [0, 1] (pass input_type='logits' for raw scores)"
            )
        _check_rows_sum_to_one(input, "input", "probabilities", input.dtype)
    else:
        bad = ~(input <= 0)  # log-probabilities are <= 0; NaN fails too
        if bool(bad.any()):
            where = _first_true(bad)
            raise ValueError(
                f"input holds {float(input[where]):g} at {where}, but input_type='log_probs' "
                f"expects log-probabilities <= 0 (pass input_type='logits' for raw scores)"
            )
        _check_rows_sum_to_one(input.exp(), "input", "log-probabilities whose exp", input.dtype)


# --------------------------------------------------------------------------- class parameters


def as_class_vector(
    value: Tensor | Sequence[float], name: str, num_classes: int, like: Tensor
) -> Tensor:
    """A length-C vector (``weight``, ``positions``) as a tensor of ``like``'s dtype and device."""
    if isinstance(value, Tensor):
        if not (value.is_floating_point() or value.dtype in _INT_DTYPES):
            raise TypeError(f"{name} must be a real-valued tensor, got dtype {value.dtype}")
        vec = value
    else:
        try:
            vec = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a tensor or a sequence of numbers: {err}") from None
    if vec.dim() != 1 or vec.shape[0] != num_classes:
        raise ValueError(
            f"{name} must be a 1-D sequence of length C={num_classes}, got shape {tuple(vec.shape)}"
        )
    return vec.to(device=like.device, dtype=like.dtype)


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_weight_values(weight: Tensor) -> None:
    """Class weights finite and non-negative (one host sync)."""
    if not values_checked():
        return
    bad = ~(weight >= 0) | ~torch.isfinite(weight)
    if bool(bad.any()):
        k = _first_true(bad)[0]
        raise ValueError(
            f"weight[{k}] = {float(weight[k]):g}; class weights must be finite and non-negative"
        )


def check_positions_values(positions: Tensor) -> None:
    """Class positions finite and strictly increasing (one host sync)."""
    if not values_checked():
        return
    if not bool(torch.isfinite(positions).all()):
        k = _first_true(~torch.isfinite(positions))[0]
        raise ValueError(f"positions[{k}] = {float(positions[k])}; positions must be finite")
    steps = positions[1:] - positions[:-1]
    if bool((steps <= 0).any()):
        k = _first_true(steps <= 0)[0]
        raise ValueError(
            f"positions must be strictly increasing, but positions[{k}] = "
            f"{float(positions[k]):g} >= positions[{k + 1}] = {float(positions[k + 1]):g}"
        )


def check_square_matrix(matrix: Tensor, name: str, num_classes: int | None) -> None:
    """A real (C, C) tensor, any C >= 2 when ``num_classes`` is None (shape-only)."""
    if not isinstance(matrix, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(matrix).__name__}")
    if not (matrix.is_floating_point() or matrix.dtype in _INT_DTYPES):
        raise TypeError(f"{name} must be a real-valued tensor, got dtype {matrix.dtype}")
    if num_classes is None:
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
            raise ValueError(
                f"{name} must be a square (C, C) matrix with C >= 2, got shape "
                f"{tuple(matrix.shape)}"
            )
        return
    if tuple(matrix.shape) != (num_classes, num_classes):
        raise ValueError(
            f"{name} must have shape ({num_classes}, {num_classes}) for C={num_classes} "
            f"classes, got {tuple(matrix.shape)}"
        )


def check_matrix_values(matrix: Tensor, name: str, *, allow_negative: bool) -> None:
    """Entries finite (and non-negative unless ``allow_negative``); one host sync."""
    if not values_checked():
        return
    bad = ~torch.isfinite(matrix)
    if not allow_negative:
        bad = bad | ~(matrix >= 0)
    if bool(bad.any()):
        i, j = _first_true(bad)
        need = "finite" if allow_negative else "finite and non-negative"
        raise ValueError(f"{name}[{i}, {j}] = {float(matrix[i, j]):g}; entries must be {need}")
