"""compare.json: the protocol a rerun into the same directory must match (compare._protocol)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emdloss.compare._protocol import PROTOCOL_FILE, check_protocol
from emdloss.errors import UserError


def _store(out: Path, options: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / PROTOCOL_FILE).write_text(json.dumps({"datasets": {"images:x.csv": options}}))


def test_an_unset_model_stored_by_an_older_compare_is_the_data_s_default(tmp_path: Path) -> None:
    # compare now names the data's default network (cnn for small images); a comparison stored
    # before recorded model None for the same runs, and a rerun into it must not be refused.
    _store(tmp_path, {"model": None, "lr": 0.001})
    merged = check_protocol(
        tmp_path,
        {"images:x.csv": {"model": "cnn", "lr": 0.001}},
        {"images:x.csv": {"model": "cnn"}},
    )
    assert merged["images:x.csv"]["model"] == "cnn"


def test_another_model_than_the_stored_default_is_still_refused(tmp_path: Path) -> None:
    _store(tmp_path, {"model": None, "lr": 0.001})
    with pytest.raises(UserError, match=r"model: 'cnn' -> 'resnet18'"):
        check_protocol(
            tmp_path,
            {"images:x.csv": {"model": "resnet18", "lr": 0.001}},
            {"images:x.csv": {"model": "cnn"}},
        )
    with pytest.raises(UserError, match=r"lr: 0\.001 -> 0\.01"):
        check_protocol(
            tmp_path,
            {"images:x.csv": {"model": "cnn", "lr": 0.01}},
            {"images:x.csv": {"model": "cnn"}},
        )
