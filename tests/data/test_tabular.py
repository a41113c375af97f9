"""The skordinal benchmarks: shapes, zero-based labels, stratification, train-only scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("skordinal")  # the train extra's tabular data sets
pytest.importorskip("sklearn")  # oracle

import skordinal.datasets as skd
from sklearn.preprocessing import StandardScaler

from emdloss.data import load_dataset

SHAPES = {"era": (1000, 4, 9), "esl": (488, 4, 9), "lev": (1000, 4, 5), "swd": (1000, 10, 4)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shapes_labels_and_default_holdout(name: str) -> None:
    rows, features, classes = SHAPES[name]
    ds = load_dataset(name, seed=0)
    _x_raw, y_raw = getattr(skd, f"load_{name}")(return_X_y=True)
    assert ds.kind == "tabular" and ds.input_shape == (features,)
    assert ds.class_names == [str(k) for k in range(1, classes + 1)]
    assert len(ds.train) + len(ds.val) + len(ds.test) == rows
    assert len(ds.test) == round(0.3 * rows)  # TOC-UCO 70/30 hold-out
    x, y = ds.train[0]
    assert x.dtype == torch.float32 and x.shape == (features,) and isinstance(y, int)
    all_labels = np.concatenate([ds.split(s).targets for s in ("train", "val", "test")])
    assert all_labels.min() == 0 and all_labels.max() == classes - 1
    # Labels are the source's zero-based labels, row for row.
    idx = ds.info["split_indices"]["test"]
    assert np.array_equal(ds.test.targets, np.asarray(y_raw)[idx])
    # Stratified: each class's test share within one sample of 30 %.
    total = np.bincount(np.asarray(y_raw), minlength=classes)
    assert np.all(np.abs(np.asarray(ds.class_counts("test")) - 0.3 * total) < 1.0 + 1e-9)


def test_standardisation_uses_training_rows_only() -> None:
    ds = load_dataset("swd", seed=4)
    x_raw, _ = skd.load_swd(return_X_y=True)
    idx = ds.info["split_indices"]
    scaler = StandardScaler().fit(x_raw[idx["train"]])
    for split in ("train", "val", "test"):
        expected = scaler.transform(x_raw[idx[split]])
        assert np.allclose(ds.split(split).inputs.numpy(), expected, atol=1e-5)
    # A scaler fitted on all rows (test included) gives different test inputs.
    leaky = StandardScaler().fit(x_raw).transform(x_raw[idx["test"]])
    assert not np.allclose(ds.test.inputs.numpy(), leaky, atol=1e-5)
    assert np.allclose(ds.train.inputs.numpy().mean(axis=0), 0.0, atol=1e-5)


def test_esl6_regrouping_counts() -> None:
    _, y = skd.load_esl(return_X_y=True)
    raw = np.bincount(y, minlength=9)
    ds = load_dataset("esl6", seed=0)
    counts = np.sum([ds.class_counts(s) for s in ("train", "val", "test")], axis=0)
    expected = [raw[0:3].sum(), raw[3], raw[4], raw[5], raw[6], raw[7:9].sum()]
    assert counts.tolist() == expected == [52, 100, 116, 135, 62, 23]
    assert ds.class_names == ["1-3", "4", "5", "6", "7", "8-9"]


def test_kfold_test_folds_partition_the_rows() -> None:
    tested = []
    for fold in range(4):
        ds = load_dataset("lev", seed=2, fold=fold, num_folds=4)
        idx = ds.info["split_indices"]
        parts = [set(idx[s]) for s in ("train", "val", "test")]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert len(parts[0] | parts[1] | parts[2]) == 1000
        tested.extend(idx["test"])
    assert sorted(tested) == list(range(1000))


def test_splits_deterministic_per_seed() -> None:
    a = load_dataset("era", seed=5)
    b = load_dataset("era", seed=5)
    c = load_dataset("era", seed=6)
    assert a.info["split_indices"] == b.info["split_indices"]
    assert torch.equal(a.test.inputs, b.test.inputs)
    assert a.info["split_indices"]["test"] != c.info["split_indices"]["test"]


def test_string_options_and_unknown_option() -> None:
    ds = load_dataset("lev", val_fraction="0.2", test_fraction="0.5")
    assert len(ds.test) == 500 and len(ds.val) == 100
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bins'\].*valid options: .*limit"):
        load_dataset("lev", bins=3)
    with pytest.raises(ValueError, match="val_fraction='x'"):
        load_dataset("lev", val_fraction="x")


def test_digits_is_the_orderless_control_set() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", seed=0)
    raw = load_digits()
    assert ds.class_names == [str(k) for k in range(10)] and ds.input_shape == (64,)
    assert len(ds.train) + len(ds.val) + len(ds.test) == raw.target.size
    idx = ds.info["split_indices"]["test"]
    assert np.array_equal(ds.test.targets, raw.target[idx])
