"""scripts/distribution_evidence.py: a grid on distribution targets, grown seed by seed, reports
every chosen run of every seed and fold with the baselines fitted on the same splits."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("lightning")
pytest.importorskip("scipy")


@pytest.mark.slow
def test_grid_over_folds_reports_every_chosen_run_and_its_baselines(
    tmp_path: Path, load_script: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import scipy.io

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4))
    scipy.io.savemat(
        tmp_path / "toy.mat", {"features": x, "labels": rng.dirichlet(np.ones(4), size=80)}
    )
    out = tmp_path / "ev"
    argv = [
        "--dataset", f"ldl:{tmp_path / 'toy.mat'}", "--losses", "ce,emd2", "--seeds", "2",
        "--folds", "3", "--epochs", "2", "--output", str(out),
        "--grid", "weight_decay=0.01,0.3", "--set", "model_options={hidden_sizes: [8]}",
    ]  # fmt: skip
    assert load_script("scripts/distribution_evidence.py").main(argv) == 0
    rows = list(csv.DictReader((out / "distribution_results.csv").open(encoding="utf-8")))
    pairs = {(s, f) for s in ("0", "1") for f in ("0", "1", "2")}
    for model in ("ce", "emd2", "baseline:mean", "baseline:aa_knn", "baseline:linear_kl"):
        # Every (seed, fold) once: the runs of the first seed, tested when they were chosen,
        # are read again from their directories.
        assert sorted((r["seed"], r["fold"]) for r in rows if r["loss"] == model) == sorted(pairs)
    summary = (out / "distribution_summary.md").read_text(encoding="utf-8")
    assert "grid, ce, validation kl: weight_decay=0.01:" in summary and "*chosen*" in summary
    assert "**Against the LDL baselines (" in summary
    # Three folds of the same rows: the verdicts use the corrected resampled interval, and the
    # section rendered again from the CSV alone is the same.
    assert "corrected resampled t-test (Nadeau & Bengio; test/train rows 0.5" in summary
    again = load_script("scripts/distribution_resummarize.py")
    capsys.readouterr()
    assert again.main([str(out)]) == 0
    section = capsys.readouterr().out.strip()
    assert section and section in summary


@pytest.mark.slow
def test_first_seed_draws_fresh_fold_partitions(tmp_path: Path, load_script: Any) -> None:
    import scipy.io

    from emdloss.data import load_dataset

    rng = np.random.default_rng(1)
    path = tmp_path / "toy.mat"
    scipy.io.savemat(
        path, {"features": rng.normal(size=(60, 3)), "labels": rng.dirichlet(np.ones(3), size=60)}
    )
    out = tmp_path / "ev"
    argv = [
        "--dataset", f"ldl:{path}", "--losses", "ce", "--seeds", "1", "--first-seed", "7",
        "--folds", "3", "--epochs", "1", "--output", str(out),
        "--set", "model_options={hidden_sizes: [4]}",
    ]  # fmt: skip
    assert load_script("scripts/distribution_evidence.py").main(argv) == 0
    rows = list(csv.DictReader((out / "distribution_results.csv").open(encoding="utf-8")))
    assert {(r["loss"], r["seed"]) for r in rows} == {
        (m, "7") for m in ("ce", "baseline:mean", "baseline:aa_knn", "baseline:linear_kl")
    }
    # The runs read seed 7's partition, not seed 0's: the fold-0 run's test rows say so.
    run = out.joinpath("runs").glob("*/ce/seed7_fold0")
    with next(run).joinpath("predictions_test.csv").open(encoding="utf-8") as handle:
        ids = [row["id"] for row in csv.DictReader(handle)]
    assert ids == load_dataset(f"ldl:{path}", seed=7, fold=0, num_folds=3).test.ids
    assert ids != load_dataset(f"ldl:{path}", seed=0, fold=0, num_folds=3).test.ids
