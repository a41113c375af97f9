"""scripts/distribution_dev_search.py: variants scored on dev rows carved from the training
rows, beside the fitted baselines; the test rows are never part of what is scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("scipy")


def _toy(tmp_path: Path) -> str:
    import scipy.io

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    scipy.io.savemat(
        tmp_path / "toy.mat", {"features": x, "labels": rng.dirichlet(np.ones(4), size=120)}
    )
    return f"ldl:{tmp_path / 'toy.mat'}"


def test_dev_rows_are_a_fifth_of_the_training_rows(tmp_path: Path, load_script: Any) -> None:
    from emdloss.data import load_dataset

    script = load_script("scripts/distribution_dev_search.py")
    dataset = _toy(tmp_path)
    (x_fit, _), (x_val, _), (x_dev, _) = script._splits(dataset, 1, {})
    ds = load_dataset(dataset, fold=1, num_folds=10)
    train = ds.train.inputs.double().numpy()
    assert len(x_dev) == len(train) // 5 and len(x_fit) + len(x_dev) == len(train)
    rows = {tuple(r) for r in np.round(train, 6)}
    assert {tuple(r) for r in np.round(np.vstack([x_fit, x_dev]), 6)} == rows
    test_rows = {tuple(r) for r in np.round(ds.test.inputs.double().numpy(), 6)}
    assert not test_rows & {tuple(r) for r in np.round(x_dev, 6)}
    assert np.allclose(x_val, ds.val.inputs.double().numpy())


def test_prints_a_line_per_model_with_every_measure(
    tmp_path: Path, load_script: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script("scripts/distribution_dev_search.py")
    argv = ["--dataset", _toy(tmp_path), "--splits", "0", "--variant", "hidden=8,epochs=2"]
    argv += ["--variant", "hidden=8,epochs=2,loss=emd2,ensemble=2,dropout=0.5"]
    assert script.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-5:]
    assert lines[0].split(" | ")[1:] == list(script.MEASURES)
    assert [line.split(" | ")[0] for line in lines[1:]] == [
        "linear_kl",
        "aa_knn",
        "hidden=8,epochs=2",
        "hidden=8,epochs=2,loss=emd2,ensemble=2,dropout=0.5",
    ]
    for line in lines[1:]:
        values = [float(v) for v in line.split(" | ")[1:]]
        assert all(np.isfinite(values))


def test_the_limit_option_cuts_the_splits(tmp_path: Path, load_script: Any) -> None:
    # Found by the docs audit: a split cut by limit= has no whole tensors, and the script failed.
    script = load_script("scripts/distribution_dev_search.py")
    (x_fit, t_fit), (x_val, _), (x_dev, _) = script._splits(_toy(tmp_path), 0, {"limit": "40"})
    assert len(x_fit) + len(x_dev) == 40 and len(x_val) <= 40
    assert x_fit.shape[1] == 4 and np.allclose(t_fit.sum(1), 1.0)
