"""The command as a newcomer meets it (issue 10): what the data became and warnings before training,
trivial-predictor scores beside the model's, --help with defaults, no abbreviations, the
command's own usage on its errors, predict inputs checked against the training inputs.

Named for emdloss.cli (the command end to end); what it checks lives in _cli_parser,
data.inspection, data.conform and training.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# the train extra: these tests train runs on images and tables.
pytest.importorskip("PIL")
pytest.importorskip("yaml")
pytest.importorskip("lightning")

from PIL import Image

from emdloss.cli import main
from emdloss.metrics import trivial_baselines

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_wine_like import wine_like

QUICK = ["--accelerator", "cpu", "--no-progress"]


def _help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_shows_defaults_and_the_csv_options(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_help(capsys, ["train", "--help"]).split())  # unwrap argparse's lines
    for expected in (
        "training epochs (default: 30)",
        "(default: emd2)",
        "(default: retinamnist)",
        "learning rate (default: 0.001)",
        "progress bars (default: on)",
        "--threads THREADS intra-op torch threads (default 1 for mlp and cnn",
        "ignore=A,B",
        "features=A,B",
        "categorical=A,B",
        "missing=error|drop|impute",
    ):
        assert expected in text, expected
    evaluate = " ".join(_help(capsys, ["evaluate", "--help"]).split())
    assert "progress bars (default: True)" in evaluate
    # No noise: no default where there is none, none twice where the help already says it.
    for command in ("train", "evaluate", "predict", "compare"):
        text = " ".join(_help(capsys, [command, "--help"]).split())
        assert "(default: None)" not in text, command
        assert not re.search(r"\(default:[^)]*\) \(default:", text), command


@pytest.mark.parametrize(
    ("argv", "bad"),
    [
        (["train", "--epoch", "3"], "--epoch 3"),  # no silent abbreviation of --epochs
        (["train", "--epochz", "3"], "--epochz 3"),
        (["evaluate", "run", "--jso"], "--jso"),
    ],
)
def test_unknown_options_get_the_command_usage(
    capsys: pytest.CaptureFixture[str], argv: list[str], bad: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: emdloss {argv[0]} ")
    assert f"emdloss {argv[0]}: error: unrecognized arguments: {bad}" in err


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, str]:
    root = tmp_path_factory.mktemp("wine")
    data = root / "wine.csv"
    data.write_text("\n".join(wine_like(0)) + "\n")
    run = root / "run"
    argv = ["train", "--dataset", f"csv:{data}", "--target", "rating", "--epochs", "2"]
    argv += ["--output", str(run), "--accelerator", "cpu"]  # progress on: the description
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 0
    return data, run, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_train_warns_about_each_column_and_the_split(wine_run: tuple[Path, Path, str, str]) -> None:
    _, run, _, err = wine_run
    warnings = [line for line in err.splitlines() if line.startswith("emdloss train: warning:")]
    named = {
        "'rownames' has a different value in every training row": "id",
        "'response' determines the target by itself": "leak",
        "'judge' holds 9 distinct integers": "codes",
        "'bottle' holds 8 distinct integers": "codes",
        "'batch' is constant": "constant",
        "the validation split has 5 rows (under 30)": "small validation",
    }
    for text in named:
        assert sum(text in line for line in warnings) == 1, (text, warnings)
    # The description comes first (progress bars on): columns, classes, split sizes.
    assert "classes in order: 1 < 2 < 3 < 4 < 5" in err
    assert "numeric columns: rownames, response, bottle, judge (every value is a number)" in err
    assert "total     45    5    22" in err
    record = json.loads((run / "data.json").read_text())["description"]
    assert {w["column"] for w in record["warnings"] if w["column"]} == {
        "rownames",
        "response",
        "judge",
        "bottle",
        "batch",
    }
    assert record["split_counts"]["val"] == {"1": 0, "2": 1, "3": 2, "4": 1, "5": 1}


@pytest.mark.slow
def test_metrics_carry_the_trivial_predictors_on_the_same_splits(
    wine_run: tuple[Path, Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, run, out, _ = wine_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["threads"] == 1  # the mlp: one thread by default
    data = json.loads((run / "data.json").read_text())
    names = data["class_names"]
    counts = data["description"]["split_counts"]
    train = np.repeat(np.arange(len(names)), [counts["train"][n] for n in names])
    test = np.repeat(np.arange(len(names)), [counts["test"][n] for n in names])
    expected = trivial_baselines(torch.from_numpy(train), test, num_classes=len(names))
    for name in ("most_common", "median"):
        for key, value in expected[name].items():
            assert metrics["baselines"]["test"][name][key] == pytest.approx(value)
    assert "always 3 (most common)" in out and "always 3 (median class)" in out

    assert main(["evaluate", str(run), "--no-progress"]) == 0
    shown = capsys.readouterr().out
    assert shown.count("always 3 (most common)") == 2  # validation and test tables
    assert main(["evaluate", str(run), "--json", "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)
    for split, scores in metrics["baselines"].items():
        for name, values in scores.items():
            assert again["baselines"][split][name] == pytest.approx(values)


@pytest.mark.slow
def test_predict_names_unseen_categories(
    wine_run: tuple[Path, Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, run, _, _ = wine_run
    lines = data.read_text().splitlines()[:4]
    lines[1] = lines[1].replace(",cold,", ",tepid,")
    new = tmp_path / "new.csv"
    new.write_text("\n".join(lines) + "\n")
    assert main(["predict", str(run), str(new)]) == 0
    err = capsys.readouterr().err
    assert "emdloss predict: warning:" in err and "'temp' has value(s) ['tepid']" in err


@pytest.mark.slow
def test_grey_image_to_a_colour_model_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    for k, name in enumerate(("low", "mid", "high")):
        folder = tmp_path / "grades" / name
        folder.mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            pixels[..., k] = 255  # a colour per class
            Image.fromarray(pixels).save(folder / f"{i}.png")
    run = tmp_path / "run"
    argv = ["train", "--dataset", f"folder:{tmp_path / 'grades'}", "--classes", "low,mid,high"]
    argv += ["--data-option", "image_size=16", "--epochs", "1", "--output", str(run), *QUICK]
    assert main(argv) == 0
    capsys.readouterr()
    grey = tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(grey)
    assert main(["predict", str(run), str(grey)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 2
    assert "1 of 1 images are grayscale but the model was trained on colour (RGB)" in warnings[0]
    assert "not 16x16" in warnings[1] and "(20x20)" in warnings[1]
    assert captured.out.startswith("id,")  # the prediction is still made


@pytest.mark.slow
def test_threads_default_to_one_for_small_models_and_are_restored(tmp_path: Path) -> None:
    from emdloss.training import TrainConfig, train

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        common = {"dataset": "swd", "epochs": 1, "progress": False, "accelerator": "cpu"}
        result = train(TrainConfig(output=str(tmp_path / "a"), **common))
        assert result.metrics["threads"] == 1  # the mlp
        assert torch.get_num_threads() == 2  # the caller's setting survives the run
        result = train(TrainConfig(output=str(tmp_path / "b"), threads=2, **common))
        assert result.metrics["threads"] == 2
    finally:
        torch.set_num_threads(before)
