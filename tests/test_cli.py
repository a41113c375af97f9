"""The ``emdloss`` command end to end on small slices: RetinaMNIST, a skordinal table and a CSV
the test writes (train, evaluate, predict, resume), config files, and clear errors."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

# The train extra: the CLI trains with Lightning and reads YAML configs.
pytest.importorskip("yaml")
pytest.importorskip("lightning")

import yaml

from emdloss.cli import main

QUICK = ["--accelerator", "cpu", "--no-progress"]


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _metrics(run: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run / "metrics.json").read_text())


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def test_entry_point_is_installed() -> None:
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("emdloss") == "emdloss.cli:main"


@pytest.mark.slow
def test_retinamnist_train_evaluate_predict_resume(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "retina"
    argv = ["train", "--dataset", "retinamnist", "--data-dir", str(data_dir), "--loss", "emd2"]
    argv += ["--model", "cnn", "--epochs", "1", "--output", str(run), "--tta"]
    argv += ["--limit-train", "150", "--limit-val", "40", "--limit-test", "30", *QUICK]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "test metrics per prediction rule" in out and "bayes" in out and "qwk" in out
    metrics = _metrics(run)
    assert metrics["epochs"] == 1 and metrics["model"] == "cnn"

    # Resume with a larger budget: continues from last.ckpt, one more epoch.
    assert main(["train", "--output", str(run), "--resume", "--epochs", "2", *QUICK]) == 0
    capsys.readouterr()
    metrics = _metrics(run)
    assert metrics["epochs"] == 2
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3 and history[2].startswith("2,")

    assert main(["evaluate", str(run), "--json", "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)
    for split in ("val", "test"):
        for rule, values in metrics[split].items():
            assert again[split][rule] == pytest.approx(values, nan_ok=True)

    # Predict from PNG files of the test images: same probabilities as the run's own test.
    from PIL import Image

    written = _rows((run / "predictions_test.csv").read_text())[:6]
    images = np.load(data_dir / "retinamnist.npz")["test_images"]
    folder = tmp_path / "images"
    folder.mkdir()
    for k, row in enumerate(written):
        index = int(row["id"].split("/")[-1])
        Image.fromarray(images[index]).save(folder / f"{k:02d}.png")
    assert main(["predict", str(run), str(folder)]) == 0
    predicted = _rows(capsys.readouterr().out)
    assert [Path(p["id"]).name for p in predicted] == [f"{k:02d}.png" for k in range(6)]
    for got, want in zip(predicted, written, strict=True):
        for c in range(5):
            assert float(got[f"prob_{c}"]) == pytest.approx(float(want[f"prob_{c}"]), abs=2e-5)
        # predict writes class names; RetinaMNIST's names are "0".."4", equal to the indices.
        assert got["pred_median"] == want["pred_median"]


def _write_grades(path: Path, n: int, seed: int, with_target: bool = True) -> None:
    rng = np.random.default_rng(seed)
    colours = ["red", "green", "blue"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x1", "x2", "colour", *(["grade"] if with_target else [])])
        for _ in range(n):
            x1, x2 = rng.normal(size=2)
            colour = colours[int(rng.integers(3))]
            score = x1 + 0.5 * x2 + (0.7 if colour == "red" else 0.0) + rng.normal(0, 0.3)
            grade = "low" if score < -0.5 else ("mid" if score < 0.6 else "high")
            writer.writerow([f"{x1:.4f}", f"{x2:.4f}", colour, *([grade] if with_target else [])])


@pytest.mark.slow
def test_csv_train_resume_equals_uninterrupted_and_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "grades.csv"
    _write_grades(data, 400, seed=0)
    common = ["train", "--dataset", f"csv:{data}", "--target", "grade"]
    common += ["--classes", "low,mid,high", "--loss", "l2", "--seed", "2", *QUICK]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main([*common, "--epochs", "3", "--output", str(whole)]) == 0
    assert main([*common, "--epochs", "1", "--output", str(cut)]) == 0
    # The exponential schedule depends on the epoch only, so 1 epoch + 2 resumed = 3 epochs.
    assert main(["train", "--output", str(cut), "--resume", "--epochs", "3", *QUICK]) == 0
    capsys.readouterr()
    a, b = _metrics(whole), _metrics(cut)
    assert a["test"] == b["test"] and a["val"] == b["val"] and a["best_epoch"] == b["best_epoch"]
    assert (whole / "predictions_test.csv").read_text() == (
        cut / "predictions_test.csv"
    ).read_text()

    new = tmp_path / "new.csv"
    _write_grades(new, 5, seed=9, with_target=False)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(whole), str(new), "--output", str(out)]) == 0
    rows = _rows(out.read_text())
    assert len(rows) == 5 and {r["pred_argmax"] for r in rows} <= {"low", "mid", "high"}
    assert [r["id"] for r in rows] == [f"line {k}" for k in range(2, 7)]
    for r in rows:
        assert sum(float(r[f"prob_{c}"]) for c in ("low", "mid", "high")) == pytest.approx(1.0)


@pytest.mark.slow
def test_skordinal_config_file_flags_override_and_evaluate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    run = tmp_path / "lev"
    config.write_text(
        f"dataset: lev\nloss: ce\nepochs: 5\nlimit-train: 200\noutput: {run}\n"
        "model_options: {hidden_sizes: [16]}\nloss-options: {}\n"
    )
    argv = ["train", "--config", str(config), "--epochs", "2", "--loss", "w1", *QUICK]
    assert main([*argv, "--model-option", "dropout=0.1"]) == 0
    capsys.readouterr()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["epochs"], saved["loss"], saved["limit_train"]) == (2, "w1", 200)
    assert saved["model_options"] == {"hidden_sizes": [16], "dropout": 0.1}
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "validation metrics per prediction rule" in out and "expected" in out
    test_mae = _metrics(run)["test"]["argmax"]["mae"]
    assert f"{test_mae:.4f}" in out


def test_errors_are_one_line_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _error(capsys, ["train", "--dataset", "mnist", *QUICK, "--output", str(tmp_path / "a")])
    assert "unknown dataset 'mnist'; valid: retinamnist, era" in err
    err = _error(capsys, ["train", "--loss", "emd3"])
    assert "unknown loss 'emd3'; valid losses: ce, emd2, w1" in err
    err = _error(capsys, ["train", "--model", "vgg99"])
    assert "unknown model 'vgg99'; valid models: mlp, cnn, resnet18" in err
    err = _error(capsys, ["train", "--epochs", "zero"])
    assert "--epochs 'zero': expected an integer" in err  # the CLI's own flag spelling
    err = _error(capsys, ["train", "--dataset", f"csv:{tmp_path / 'none.csv'}", "--target", "y"])
    assert "none.csv" in err
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n3,4\n")
    err = _error(capsys, ["train", "--dataset", f"csv:{table}", "--target", "grade", *QUICK])
    assert "target column 'grade' not found" in err and "a" in err
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("epoch: 3\n")
    err = _error(capsys, ["train", "--config", str(bad_config)])
    assert "unknown option 'epoch'; valid options: dataset" in err
    err = _error(capsys, ["train", "--config", str(tmp_path / "missing.yaml")])
    assert "config file not found" in err
    err = _error(capsys, ["evaluate", str(tmp_path)])
    assert "is not a run directory" in err
    err = _error(capsys, ["predict", str(tmp_path), "x.png"])
    assert "not a run directory" in err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        main(["train", "--data-option", "novalue"])
    assert exit_info.value.code == 2
    assert "expected KEY=VALUE, got 'novalue'" in capsys.readouterr().err


def test_missing_peer_package_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    real = importlib.import_module

    def no_peers(name: str, package: str | None = None) -> object:
        if name.startswith("coral_pytorch"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_peers)
    argv = ["train", "--dataset", "lev", "--loss", "coral", "--output", str(tmp_path / "r")]
    err = _error(capsys, [*argv, *QUICK])
    assert "pip install 'emdloss[peers]'" in err


def test_python_dash_m_runs_the_cli() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "emdloss", "train", "--loss", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown loss 'nope'" in done.stderr and "Traceback" not in done.stderr


def test_the_program_ends_once_its_output_is_complete(tmp_path: Path) -> None:
    # Issue 20: the program skips the interpreter's teardown (os._exit), but only after the
    # atexit handlers ran, other threads finished and both streams were flushed.
    script = (
        "import atexit, sys, threading, time\n"
        "from emdloss import cli\n"
        "atexit.register(lambda: print('atexit ran', flush=False))\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()\n"
        "sys.stdout.write('unflushed ')\n"
        "cli._end_process(3)\n"
        "print('never')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 3
    assert done.stdout == "unflushed thread done\natexit ran\n"


@pytest.mark.slow
def test_a_train_process_writes_every_file_before_it_ends(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = ["train", "--dataset", "lev", "--epochs", "2", "--output", str(run), *QUICK]
    done = subprocess.run(
        [sys.executable, "-m", "emdloss", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    metrics = _metrics(run)
    # The table printed last is complete, with the run's own numbers.
    assert f"{metrics['test']['argmax']['mae']:.4f}" in done.stdout.splitlines()[-6]
    assert done.stdout.rstrip().splitlines()[-1].startswith("always")
    for name in ("config.yaml", "data.json", "history.csv", "predictions_test.csv"):
        assert (run / name).stat().st_size > 0, name
    for name in ("learning_curves.png", "confusion_matrix.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert len((run / "history.csv").read_text().splitlines()) == 3
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_each_input_warning_text_is_printed_once_per_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The runs of a comparison load the same data again and again, each under filters of its
    # own (which clear Python's once-per-location memory): one line per text, not per run.
    import warnings

    from emdloss.cli import _one_line_warnings
    from emdloss.errors import InputWarning

    with _one_line_warnings("emdloss compare"):
        for _ in range(3):
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.warn("the same text", InputWarning, stacklevel=1)
        warnings.warn("another text", InputWarning, stacklevel=1)
    assert capsys.readouterr().err.splitlines() == [
        "emdloss compare: warning: the same text",
        "emdloss compare: warning: another text",
    ]
