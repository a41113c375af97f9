"""What ``compare.json`` records: the train options that define a comparison's protocol, so that a
rerun into the same directory cannot silently mix runs trained with different options."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emdloss.errors import UserError
from emdloss.training.config import NOT_PROTOCOL

__all__ = ["PROTOCOL_FILE", "check_protocol", "protocol"]

PROTOCOL_FILE = "compare.json"


def protocol(options: Mapping[str, Any], folds: int | None) -> dict[str, Any]:
    """The options that define what a data set's runs train (JSON types), with the fold count."""
    kept = {k: v for k, v in sorted(options.items()) if k not in NOT_PROTOCOL}
    kept["num_folds"] = folds
    # Through JSON so that the comparison with the stored protocol sees the same types.
    result: dict[str, Any] = json.loads(json.dumps(kept, default=str))
    return result


def check_protocol(
    output: Path,
    protocols: Mapping[str, Mapping[str, Any]],
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The stored protocols merged with ``protocols``; a data set stored with others is an error.

    ``defaults`` (per data set) are the values an option left unset (``None``) stood for: a
    comparison written before compare named the data's default network stored ``model: None``,
    which is the same protocol as that network named.
    """
    path = output / PROTOCOL_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8")).get("datasets", {})
    except (OSError, ValueError):
        stored = {}
    for spec, implied in (defaults or {}).items():
        if spec in stored:
            stored[spec] = {
                k: implied[k] if v is None and k in implied else v for k, v in stored[spec].items()
            }
    for spec, current in protocols.items():
        if spec in stored and stored[spec] != current:
            keys = sorted(set(stored[spec]) | set(current))
            diff = ", ".join(
                f"{k}: {stored[spec].get(k)!r} -> {current.get(k)!r}"
                for k in keys
                if stored[spec].get(k) != current.get(k)
            )
            raise UserError(
                f"{output} holds runs of {spec} trained with other options ({diff}); mixing them "
                "would not be a fair comparison: use another --output or the same options"
            )
    return {**stored, **protocols}
