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
