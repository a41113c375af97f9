"""Conformal sets for trained runs (issue 13): `calibrate_run` / `emdloss calibrate`, the
calibrator's round trip through the run directory, evaluate and predict using it.

Named for emdloss.training._calibrate; also covers evaluate and predict with a calibrator.
"""

from __future__ import annotations

import csv
import itertools
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

# the train extra: these tests train runs.
pytest.importorskip("yaml")
pytest.importorskip("lightning")

from emdloss.cli import main
from emdloss.conformal import Calibrator, calibrate, format_set, mean_set_size, set_coverage
from emdloss.errors import UserError
from emdloss.training import TrainConfig, calibrate_run, evaluate, predict, train
from emdloss.training._build import load_data
from emdloss.training._evaluate import load_task

FAST = {
    "accelerator": "cpu",
    "progress": False,
    "model_options": {"hidden_sizes": [32], "dropout": 0.2},
    "batch_size": 64,
}


pytestmark = pytest.mark.slow  # trains small runs


@pytest.fixture(scope="module")
def lev_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("lev_conformal") / "run"
    return train(TrainConfig(dataset="lev", loss="emd2", epochs=3, seed=5, output=str(out), **FAST))


def _probs(task: Any, split: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities straight from the model on a split's tensors (not through Lightning)."""
    xs = torch.stack([split[i][0] for i in range(len(split))])
    ys = torch.tensor([int(split[i][1]) for i in range(len(split))])
    with torch.no_grad():
        p = task.predict_proba(xs).double()
    return p / p.sum(dim=1, keepdim=True), ys


def test_calibrate_run_stores_the_calibrator_of_the_validation_probabilities(lev_run: Any) -> None:
    run_dir = lev_run.run_dir
    record = calibrate_run(run_dir, alpha=0.2, method="cdf")
    stored = json.loads((run_dir / "calibrator.json").read_text())
    assert stored == json.loads(json.dumps(record))
    cal = Calibrator.from_dict(stored["calibrator"])
    # an independent pass: the model on the split tensors, calibrated by the library
    task, _ = load_task(run_dir)
    dataset = load_data(lev_run.config)
    p_val, y_val = _probs(task, dataset.val)
    p_test, y_test = _probs(task, dataset.test)
    expected = calibrate(p_val, y_val, 0.2, method="cdf")
    assert cal.n == expected.n == len(dataset.val)
    assert cal.qhat == pytest.approx(expected.qhat, abs=1e-5)
    lower, upper = expected.predict_sets(p_test)
    assert stored["evaluation"]["split"] == "test"
    assert stored["evaluation"]["coverage"] == pytest.approx(
        set_coverage(lower, upper, y_test), abs=2 / len(y_test)
    )
    assert stored["evaluation"]["mean_set_size"] == pytest.approx(
        mean_set_size(lower, upper), abs=0.02
    )
    assert stored["checkpoint"]["epoch"] == lev_run.best_epoch
    curve = stored["curve"]
    assert curve["alphas"] == sorted(curve["alphas"])
    sizes = curve["mean_set_size"]
    assert all(a >= b for a, b in itertools.pairwise(sizes))  # nested in alpha
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["conformal"]["coverage"] == stored["evaluation"]["coverage"]
    assert metrics["conformal"]["alpha"] == 0.2 and metrics["test"] == lev_run.metrics["test"]


def test_evaluate_and_predict_use_the_stored_calibrator(lev_run: Any, tmp_path: Path) -> None:
    import skordinal.datasets as skd

    run_dir = lev_run.run_dir
    record = calibrate_run(run_dir, alpha=0.1, method="ordinal_aps")
    result = evaluate(run_dir, progress=False)
    conformal = result["conformal"]
    assert conformal["method"] == "ordinal_aps" and conformal["split"] == "test"
    assert conformal["coverage"] == pytest.approx(record["evaluation"]["coverage"], abs=1e-12)
    assert conformal["mean_set_size"] == pytest.approx(record["evaluation"]["mean_set_size"])
    # predict: the set beside the point prediction, as class names
    bunch = skd.load_lev()
    raw = tmp_path / "rows.csv"
    with raw.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(bunch.feature_names)
        for row in bunch.data[:30]:
            writer.writerow([repr(float(v)) for v in row])
    rows = predict(run_dir, [raw])
    names = json.loads((run_dir / "data.json").read_text())["class_names"]
    probs = np.array([[r[f"prob_{n}"] for n in names] for r in rows])
    cal = Calibrator.from_dict(record["calibrator"])
    lower, upper = cal.predict_sets(probs / probs.sum(axis=1, keepdims=True))
    for r, lo, hi in zip(rows, lower, upper, strict=True):
        assert r["conformal_set"] == format_set(lo, hi, names)
        assert list(r)[-1] == "conformal_set"


def test_a_calibrator_of_another_checkpoint_is_refused(lev_run: Any, tmp_path: Path) -> None:
    run_dir = lev_run.run_dir
    calibrate_run(run_dir, alpha=0.1)
    path = run_dir / "calibrator.json"
    good = path.read_text()
    try:
        record = json.loads(good)
        record["checkpoint"]["sha256"] = "0" * 64
        path.write_text(json.dumps(record))
        with pytest.raises(UserError, match="made for another checkpoint"):
            evaluate(run_dir, progress=False)
        record["calibrator"]["alpha"] = 2.0
        path.write_text(json.dumps(record))
        with pytest.raises(UserError, match="not a valid calibration record: alpha must be"):
            predict(run_dir, [tmp_path / "unused.csv"])
        path.write_text("[1, 2")
        with pytest.raises(UserError, match=r"calibrator\.json is not valid JSON"):
            evaluate(run_dir, progress=False)
    finally:
        path.write_text(good)


def test_calibrate_command(lev_run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = str(lev_run.run_dir)
    assert main(["calibrate", run_dir, "--alpha", "0.25", "--method", "cdf", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibrator"]["alpha"] == 0.25 and out["split"] == "val"
    assert main(["calibrate", run_dir, "--alpha", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "conformal sets (cdf, alpha 0.1, calibrated on val" in text
    assert "calibrator.json" in text
    assert main(["evaluate", run_dir, "--no-progress"]) == 0
    assert "conformal sets (cdf, alpha 0.1" in capsys.readouterr().out
    assert main(["calibrate", run_dir, "--alpha", "1.5"]) == 2
    assert "alpha must be strictly between 0 and 1, got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", run_dir, "--split", "train"])


def test_two_concurrent_calibrations_leave_one_whole_calibrator(lev_run: Any) -> None:
    """Issue 21's concurrent-calibrate probe: two ``calibrate_run`` at once on one run leave a
    ``calibrator.json`` that is one of the two records, whole (atomic writes), and usable."""
    run_dir = lev_run.run_dir
    start = threading.Barrier(2)
    records: dict[float, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def calibrate_at(alpha: float) -> None:
        try:
            start.wait(30)
            records[alpha] = calibrate_run(run_dir, alpha=alpha, method="cdf")
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=calibrate_at, args=(a,)) for a in (0.1, 0.3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and sorted(records) == [0.1, 0.3]
    stored = json.loads((run_dir / "calibrator.json").read_text())
    assert stored in [json.loads(json.dumps(r)) for r in records.values()]
    assert Calibrator.from_dict(stored["calibrator"]).alpha in (0.1, 0.3)
    json.loads((run_dir / "metrics.json").read_text())  # whole JSON too
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporaries


def test_overwrite_removes_the_calibrator(lev_run: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = TrainConfig(dataset="lev", loss="ce", epochs=1, seed=0, output=str(out), **FAST)
    train(config)
    calibrate_run(out, alpha=0.2)
    assert (out / "calibrator.json").is_file()
    train(TrainConfig.from_dict({"overwrite": True}, base=config))
    assert not (out / "calibrator.json").exists()
    assert "conformal" not in json.loads((out / "metrics.json").read_text())


def test_compare_conformal_reports_coverage_and_set_size_per_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from emdloss.compare import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--dataset", "lev", "--losses", "ce,emd2", "--seeds", "2", "--output", str(tmp_path)]
    argv += ["--epochs", "1", "--batch-size", "128", "--no-progress", "--conformal", "0.2"]
    assert run(parser.parse_args(argv)) == 0
    capsys.readouterr()
    with (tmp_path / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {"coverage", "mean_set_size"} <= set(rows[0])
    for row in rows:
        if row["loss"].startswith("baseline:"):  # compare's baseline rows: no conformal sets
            assert row["coverage"] in ("", "nan")
            continue
        run_dir = tmp_path / "runs" / "lev" / row["loss"] / f"seed{row['seed']}"
        stored = json.loads((run_dir / "calibrator.json").read_text())
        assert stored["calibrator"]["alpha"] == 0.2 and stored["split"] == "val"
        assert float(row["coverage"]) == stored["evaluation"]["coverage"]
        assert float(row["mean_set_size"]) == stored["evaluation"]["mean_set_size"]
    summary = (tmp_path / "summary.md").read_text()
    assert "## Conformal prediction sets (alpha = 0.2, score `cdf`)" in summary
    assert "| ce |" in summary and "| emd2 |" in summary
    assert "**Set size against cross-entropy (lev):** paired by seed" in summary
    png = tmp_path / "plots" / "lev" / "set_size.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a rerun reuses the stored calibrations
    stamps = [p.stat().st_mtime_ns for p in sorted(tmp_path.rglob("calibrator.json"))]
    assert run(parser.parse_args(argv)) == 0
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.rglob("calibrator.json"))] == stamps
    with pytest.raises(ValueError, match=r"alpha must be strictly between 0 and 1, got 0\.0"):
        run(parser.parse_args([*argv[:-1], "0"]))
