"""Coercion of loader options, which may arrive as strings from the CLI or a YAML config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def as_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int, accepting integral strings; ValueError names the option."""
    if isinstance(value, bool):
        raise TypeError(f"option {name}={value!r}: expected an integer, got a bool")
    try:
        if isinstance(value, str):
            result = int(value.strip())
        elif isinstance(value, int) or (hasattr(value, "__index__")):
            result = int(value)
        elif isinstance(value, float) and value.is_integer():
            result = int(value)
        else:
            raise ValueError
    except (ValueError, TypeError):
        raise ValueError(f"option {name}={value!r}: expected an integer") from None
    if minimum is not None and result < minimum:
        raise ValueError(f"option {name}={result}: expected an integer >= {minimum}")
    return result


def as_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite float inside the given bounds; ValueError names the option."""
    if isinstance(value, bool):
        raise TypeError(f"option {name}={value!r}: expected a number, got a bool")
    try:
        result = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, TypeError):
        raise ValueError(f"option {name}={value!r}: expected a number") from None
    bad = result != result or result in (float("inf"), float("-inf"))
    if low is not None:
        bad = bad or (result < low if low_inclusive else result <= low)
    if high is not None:
        bad = bad or (result > high if high_inclusive else result >= high)
    if bad:
        lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        raise ValueError(f"option {name}={value!r}: expected a number in {lo}, {hi}")
    return result


def as_bool(name: str, value: Any) -> bool:
    """Return ``value`` as a bool, accepting true/false, yes/no, on/off and 1/0 strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ValueError(f"option {name}={value!r}: expected true or false")


def as_str_list(name: str, value: Any) -> list[str]:
    """Return a list of non-empty strings from ``"a,b,c"`` or a sequence; ValueError if empty."""
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
    elif isinstance(value, Sequence):
        items = [str(item).strip() for item in value]
    else:
        raise TypeError(f"option {name}={value!r}: expected a comma-separated string or a list")
    if not items or any(item == "" for item in items):
        raise ValueError(f"option {name}={value!r}: expected non-empty comma-separated names")
    return items


def as_float_list(name: str, value: Any) -> list[float]:
    """Return a list of finite floats from ``"0.5,1.5"`` or a sequence of numbers."""
    if isinstance(value, str | Sequence):
        raw = as_str_list(name, value) if isinstance(value, str) else list(value)
    else:
        raw = [value]
    return [as_float(name, item) for item in raw]
