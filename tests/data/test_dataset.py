"""load_dataset dispatch, option checking, limits, and the split datasets under a DataLoader.

Named for emdloss.data._dataset (OrdinalDataset, TensorSplit); also covers load_dataset's dispatch
in emdloss.data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from emdloss.data import DATASET_NAMES, OrdinalDataset, TensorSplit, load_dataset


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    message = str(info.value)
    assert "'imagenet'" in message
    assert all(name in message for name in DATASET_NAMES)
    assert "csv:PATH" in message and "folder:PATH" in message and "images:PATH" in message
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("csv:")  # a prefix without a path


def test_unknown_option_lists_valid_options(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"\['colour'\] for dataset 'csv:.*valid options: .*target"
    ):
        load_dataset(f"csv:{tmp_path / 'x.csv'}", target="y", colour="red")


def test_limit_keeps_a_stratified_deterministic_subset() -> None:
    pytest.importorskip("skordinal")  # the train extra ships these tables
    full = load_dataset("lev", seed=3)
    small = load_dataset("lev", seed=3, limit=60)
    again = load_dataset("lev", seed=3, limit="60")
    assert [len(small.split(s)) for s in ("train", "val", "test")] == [60, 60, 60]
    assert small.train.ids == again.train.ids
    assert set(small.train.ids) <= set(full.train.ids)
    share = np.bincount(full.train.targets, minlength=5) / len(full.train)
    assert np.all(np.abs(np.asarray(small.class_counts("train")) - 60 * share) < 1.0 + 1e-9)
    x, y = small.train[0]
    position = full.train.ids.index(small.train.ids[0])
    assert torch.equal(x, full.train[position][0]) and y == full.train[position][1]


def test_items_collate_into_batches() -> None:
    pytest.importorskip("skordinal")  # the train extra ships these tables
    ds = load_dataset("swd", limit=20)
    x, y = next(iter(DataLoader(ds.train, batch_size=8)))
    assert x.shape == (8, 10) and x.dtype == torch.float32 and y.dtype == torch.int64
    soft = TensorSplit(torch.zeros(4, 2), [0, 1, 2, 1], list("abcd"), np.full((4, 3), 1 / 3))
    _xb, _yb, db = next(iter(DataLoader(soft, batch_size=4)))
    assert db.shape == (4, 3) and db.dtype == torch.float32
    with pytest.raises(IndexError):
        soft[4]


def test_dataset_record_checks_and_helpers() -> None:
    pytest.importorskip("skordinal")  # the train extra ships these tables
    ds = load_dataset("esl", limit=30)
    assert ds.num_classes == 9 and not ds.soft
    assert ds.ids("test") == ds.test.ids and ds.ids("test")[0].startswith("row ")
    assert "esl: tabular" in ds.summary() and "split:" in ds.summary()
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        ds.class_counts("dev")
    split = TensorSplit(torch.zeros(2, 1), [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="2 positions for 3 classes"):
        OrdinalDataset("x", ["a", "b", "c"], "tabular", (1,), split, split, split, positions=[0, 1])
    with pytest.raises(ValueError, match="kind must be"):
        OrdinalDataset("x", ["a", "b"], "audio", (1,), split, split, split)  # type: ignore[arg-type]
