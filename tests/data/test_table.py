"""Encoding a table's columns with training statistics (emdloss.data._table)."""

from __future__ import annotations

import numpy as np
import pytest

from emdloss.data._table import encode_table
from emdloss.data.splits import make_split
from emdloss.errors import UserError


def test_medians_are_each_columns_median_of_its_present_training_values() -> None:
    # The oracle: np.median column by column over the non-missing training cells (the loop
    # the vectorised nanmedian replaced), with and without missing cells.
    rng = np.random.default_rng(0)
    values = rng.normal(size=(200, 7))
    values[rng.random(values.shape) < 0.2] = np.nan
    split = make_split(np.arange(200) % 3, seed=0)
    for table in (values, np.nan_to_num(values)):
        encoded = encode_table(table, [f"c{j}" for j in range(7)], [], [], split)
        train = table[split.train]
        expected = [np.median(train[~np.isnan(train[:, j]), j]) for j in range(7)]
        assert encoded.medians.tolist() == expected
        filled = np.where(np.isnan(table), expected, table)
        mean, scale = filled[split.train].mean(0), filled[split.train].std(0)
        np.testing.assert_allclose(
            encoded.inputs["test"].numpy(), (filled[split.test] - mean) / scale, rtol=1e-6
        )


def test_a_column_without_training_values_is_named() -> None:
    values = np.ones((30, 2))
    values[:, 1] = np.nan
    split = make_split(np.arange(30) % 3, seed=0)
    with pytest.raises(UserError, match="column 'b' has no value in the training rows"):
        encode_table(values, ["a", "b"], [], [], split)


def test_standardize_false_keeps_the_values_and_records_the_identity() -> None:
    rng = np.random.default_rng(1)
    values = (rng.random((120, 4)) < 0.05).astype(float)  # sparse 0/1 indicators
    values[:, 3] = rng.normal(size=120)
    values[5, 3] = np.nan
    split = make_split(np.arange(120) % 3, seed=0)
    kept = encode_table(values, list("abcd"), [], [], split, standardize=False)
    filled = values.copy()
    filled[5, 3] = np.median(values[split.train, 3][~np.isnan(values[split.train, 3])])
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(
            kept.inputs[part].numpy(), filled[getattr(split, part)].astype(np.float32)
        )
    assert kept.mean.tolist() == [0.0] * 4 and kept.scale.tolist() == [1.0] * 4
    # The default standardises: a rare 1 becomes large, which is why the option exists.
    scaled = encode_table(values, list("abcd"), [], [], split)
    assert float(scaled.inputs["train"][:, :3].max()) > 3.0


def test_standardize_false_refuses_a_value_beyond_float32_by_name() -> None:
    values = np.ones((30, 2))
    values[4, 1] = 1e39
    split = make_split(np.arange(30) % 3, seed=0)
    with pytest.raises(UserError, match=r"row 4, column 'b': value 1e\+39 does not fit in float32"):
        encode_table(values, ["a", "b"], [], [], split, standardize=False)


def test_a_table_of_rare_indicators_gets_one_hint_towards_standardize_false() -> None:
    import warnings

    from emdloss.errors import InputWarning

    rng = np.random.default_rng(2)
    rows = 600
    values = np.zeros((rows, 4))
    values[rng.choice(rows, 2, replace=False), 0] = 1.0  # two 1s in 600 rows: about 17
    values[:, 1] = rng.random(rows) < 0.5  # a balanced indicator stays within +-1
    values[:, 2] = rng.random(rows) < 0.3
    values[:, 3] = rng.normal(size=rows)
    split = make_split(np.arange(rows) % 3, seed=0)
    with pytest.warns(InputWarning) as caught:
        encoded = encode_table(values, list("abcd"), [], [], split)
    assert float(encoded.inputs["train"][:, 0].max()) > 10
    assert [str(w.message) for w in caught] == [
        "3 of 4 numeric columns hold only 0 and 1, and standardising turns a 1 that is rare in "
        "the training rows into an input above 10; --data-option standardize=false keeps them "
        "as they are"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_table(values, list("abcd"), [], [], split, standardize=False)  # asked for
        values[rng.choice(rows, 200, replace=False), 0] = 1.0
        encode_table(values, list("abcd"), [], [], split)  # no rare 1: within 10
        values[:, 0] = values[:, 1] = rng.normal(size=rows)
        values[:2, 2] = 1.0
        encode_table(values, list("abcd"), [], [], split)  # one indicator of four: no table of them
