"""emdloss export --format onnx: onnxruntime reproduces emdloss predict on the run's test split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emdloss.decoding import decode
from emdloss.integrations.onnx import DEFAULT_OPSET, decode_exportable
from emdloss.vocabulary import RULES

QUICK = ["--accelerator", "cpu", "--no-progress", "--epochs", "2", "--batch-size", "32"]


def test_decode_exportable_equals_decode() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(500, 6, generator=g) * 3, dim=1)
    probs[:5] = torch.tensor([1 / 6] * 6)  # ties
    probs[5] = torch.tensor([0.5, 0.0, 0.0, 0.0, 0.0, 0.5])  # the median's boundary
    cost = torch.rand(6, 6, generator=g)
    positions = torch.tensor([0.0, 1.0, 2.0, 4.0, 8.0, 16.0])
    for rule in RULES:
        kwargs: dict = {}
        if rule == "bayes":
            kwargs = {"ground_distance": cost}
        got = decode_exportable(probs, rule, **kwargs)
        torch.testing.assert_close(got, decode(probs, rule, **kwargs), rtol=0, atol=0)
    torch.testing.assert_close(
        decode_exportable(probs, "expected", positions=positions),
        decode(probs, "expected", positions=positions),
        rtol=0,
        atol=0,
    )


ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _write_table(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    colours = ["red", "green", "blue"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x1", "x2", "colour", "grade"])
        for _ in range(n):
            x1, x2 = rng.normal(size=2)
            colour = colours[int(rng.integers(3))]
            score = x1 + 0.5 * x2 + (0.7 if colour == "red" else 0.0) + rng.normal(0, 0.3)
            grade = "low" if score < -0.5 else ("mid" if score < 0.6 else "high")
            writer.writerow([f"{x1:.4f}", f"{x2:.4f}", colour, grade])


def _train_on_table(tmp_path: Path, rows: int, seed: int, *options: str) -> tuple[Path, Path]:
    """``_write_table``'s grades, trained with emd2 and ``options``: (the table, the run)."""
    from emdloss.cli import main

    table = tmp_path / "grades.csv"
    _write_table(table, rows, seed=seed)
    run = tmp_path / "run"
    argv = ["train", "--dataset", f"csv:{table}", "--target", "grade", "--classes"]
    argv += ["low,mid,high", "--loss", "emd2", *options, "--output", str(run), *QUICK]
    assert main(argv) == 0
    return table, run


def _predict_rows(run: Path, inputs: list[str]) -> list[dict]:
    from emdloss.training import predict

    return predict(run, inputs)


def _compare(run: Path, session: object, feeds: dict, rows: list[dict], rule: str) -> None:
    sidecar = json.loads((run.parent / "model.onnx.json").read_text())
    names = sidecar["class_names"]
    probs, labels = session.run(None, feeds)  # type: ignore[attr-defined]
    want = np.array([[row[f"prob_{n}"] for n in names] for row in rows])
    np.testing.assert_allclose(probs, want, atol=1e-5, rtol=0)
    assert [names[k] for k in labels] == [row[f"pred_{rule}"] for row in rows]
    assert probs.dtype == np.float32 and labels.dtype == np.int64


@pytest.mark.slow
def test_table_run_onnx_equals_predict(tmp_path: Path) -> None:
    from emdloss.cli import main
    from emdloss.training._build import load_data
    from emdloss.training.rundir import read_config, read_data_record

    table, run = _train_on_table(tmp_path, 300, 0, "--seed", "1")
    model = tmp_path / "model.onnx"
    assert main(["export", str(run), "--format", "onnx", "--output", str(model)]) == 0
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["opset"] == DEFAULT_OPSET and sidecar["class_names"] == ["low", "mid", "high"]
    assert sidecar["rule"] == read_config(run).monitor_rule
    assert [i["name"] for i in sidecar["inputs"]] == ["numeric", "categorical"]

    # The run's test split, as raw CSV rows (the ids are the lines of the file).
    dataset = load_data(read_config(run))
    lines = table.read_text().splitlines()
    test_lines = [int(str(i).split()[-1]) for i in dataset.test.ids]
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("\n".join([lines[0], *(lines[k - 1] for k in test_lines)]) + "\n")
    rows = _predict_rows(run, [str(test_csv)])
    assert len(rows) == len(test_lines) >= 30

    record = read_data_record(run)["table"]
    with test_csv.open() as handle:
        raw = list(csv.DictReader(handle))
    numeric = np.array([[float(r[c]) for c in record["numeric_columns"]] for r in raw])
    categorical = np.array(
        [
            [
                record["categories"][c].index(r[c]) if r[c] in record["categories"][c] else -1
                for c in record["categorical_columns"]
            ]
            for r in raw
        ],
        dtype=np.int64,
    )
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    _compare(run, session, {"numeric": numeric, "categorical": categorical}, rows, sidecar["rule"])

    # Issue 21's edge rows: an unseen category (predict warns; ONNX takes index -1), a large
    # finite value, -0.0, the smallest normal float; then no rows at all.
    edge_csv = tmp_path / "edge.csv"
    edge = [("1e4", "0.0", "purple"), ("-0.0", "-0.0", "red"), ("2.2e-308", "-3.5", "blue")]
    edge_csv.write_text("x1,x2,colour\n" + "".join(f"{a},{b},{c}\n" for a, b, c in edge))
    with pytest.warns(UserWarning, match=r"'colour' has value\(s\) \['purple'\] not seen"):
        edge_rows = _predict_rows(run, [str(edge_csv)])
    edge_numeric = np.array([[float(a), float(b)] for a, b, _ in edge])
    known = record["categories"]["colour"]
    edge_categorical = np.array([[known.index(c) if c in known else -1] for *_, c in edge])
    edge_feeds = {"numeric": edge_numeric, "categorical": edge_categorical}
    _compare(run, session, edge_feeds, edge_rows, sidecar["rule"])
    empty = {"numeric": np.zeros((0, 2)), "categorical": np.zeros((0, 1), dtype=np.int64)}
    probs, labels = session.run(None, empty)
    assert probs.shape == (0, 3) and labels.shape == (0,)

    # Another rule, chosen at export time.
    median = tmp_path / "median.onnx"
    assert main(["export", str(run), "--output", str(median), "--rule", "median"]) == 0
    session = ort.InferenceSession(str(median), providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {"numeric": numeric, "categorical": categorical})[0]
    assert [sidecar["class_names"][k] for k in labels] == [r["pred_median"] for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize(
    "options", [("--ensemble", "3"), ("--data-option", "standardize=false")], ids=str
)
def test_ensemble_and_unstandardised_runs_onnx_equals_predict(
    tmp_path: Path, options: tuple[str, str]
) -> None:
    """An ensemble exports as one graph (every member, and the mean of their probabilities); a
    run on unstandardised features exports the identity it recorded."""
    from emdloss.cli import main
    from emdloss.training.rundir import read_data_record

    table, run = _train_on_table(tmp_path, 200, 2, *options)
    model = tmp_path / "model.onnx"
    assert main(["export", str(run), "--output", str(model), "--rule", "expected"]) == 0
    rows = _predict_rows(run, [str(table)])
    record = read_data_record(run)["table"]
    if "standardize=false" in options:
        assert record["feature_mean"] == [0.0, 0.0] and record["feature_scale"] == [1.0, 1.0]
    with table.open() as handle:
        raw = list(csv.DictReader(handle))
    numeric = np.array([[float(r[c]) for c in record["numeric_columns"]] for r in raw])
    categorical = np.array(
        [[record["categories"]["colour"].index(r["colour"])] for r in raw], dtype=np.int64
    )
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    _compare(run, session, {"numeric": numeric, "categorical": categorical}, rows, "expected")


@pytest.mark.slow
def test_image_run_onnx_equals_predict(tmp_path: Path) -> None:
    from PIL import Image

    from emdloss.cli import main
    from emdloss.data import load_image
    from emdloss.training._build import load_data
    from emdloss.training.rundir import read_config

    root = tmp_path / "grades"
    rng = np.random.default_rng(0)
    for k in range(3):
        (root / str(k)).mkdir(parents=True)
        for i in range(24):  # brighter images, higher grade, plus noise
            pixels = np.clip(rng.normal(60 + 70 * k, 40, size=(16, 16, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / str(k) / f"{i}.png")
    run = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        f"folder:{root}",
        "--model",
        "cnn",
        "--data-option",
        "image_size=16",
    ]
    argv += ["--loss", "emd2", "--tta", "--seed", "0", "--output", str(run), *QUICK]
    assert main(argv) == 0
    model = tmp_path / "model.onnx"
    assert main(["export", str(run), "--output", str(model), "--rule", "bayes"]) == 0

    dataset = load_data(read_config(run))
    paths = [str(root / i) for i in dataset.test.ids]
    rows = _predict_rows(run, paths)
    images = torch.stack([load_image(p, 16) for p in paths]).numpy()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    _compare(run, session, {"image": images}, rows, "bayes")


def test_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from emdloss.cli import main

    assert main(["export", str(tmp_path), "--output", str(tmp_path / "m.onnx")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    # predict too: a folder that is no run is named as such before its --output is judged
    out = str(tmp_path / "p.csv")
    assert main(["predict", str(tmp_path), "x.png", "--output", out]) == 2
    assert "is not a run directory" in capsys.readouterr().err


# ---------------------------------------------------------------------- issue 21: items 3, 11, 12


def test_expected_rule_with_list_positions_decodes_like_decode() -> None:
    """``export --rule expected`` crashed (AttributeError) on any run with class positions."""
    from types import SimpleNamespace

    from emdloss.integrations.onnx import _decode

    probs = torch.softmax(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), 1)
    positions = [0.5, 2.0, 3.5, 9.0]  # what data.json holds: a list of floats
    task = SimpleNamespace(positions=positions, decision_cost=None)
    torch.testing.assert_close(
        _decode(task, probs, "expected"),
        decode(probs, "expected", positions=torch.tensor(positions)),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("head", ["coral", "corn"])
def test_coral_and_corn_probabilities_export_to_onnx(head: str, tmp_path: Path) -> None:
    """Their heads failed to export (aten.cummin, prims.prod); the traced form is exact."""
    from emdloss.training.losses import build_loss

    loss = build_loss(head, 4)

    class Head(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = loss.probabilities(x)
            return out

    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(1)) * 3
    path = tmp_path / f"{head}.onnx"
    program = torch.onnx.export(
        Head().eval(), (x,), dynamo=True, input_names=["x"], dynamic_shapes=({0: "batch"},)
    )
    assert program is not None
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got, loss.probabilities(x).numpy(), rtol=0, atol=1e-6)


def test_flag_invalid_rows() -> None:
    from emdloss.integrations.onnx import INVALID_LABEL, _flag_invalid

    probs = torch.tensor([[0.2, 0.8], [0.5, 0.5], [float("nan"), 0.5]])
    label = torch.tensor([1, 0, 0])
    p, lab = _flag_invalid(probs, label, torch.tensor([True, False, True]))
    assert lab.tolist() == [1, INVALID_LABEL, INVALID_LABEL]
    assert torch.isnan(p[1:]).all() and torch.equal(p[0], probs[0])


def _binned_table(path: Path) -> None:
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x1", "x2", "score"])
        for _ in range(120):
            x1, x2 = rng.normal(size=2)
            writer.writerow([f"{x1:.4f}", f"{x2:.4f}", f"{x1 + 0.5 * x2 + rng.normal(0, 0.3):.4f}"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss", "rule"), [("emd2", "expected"), ("coral", "median"), ("corn", "argmax")]
)
def test_positions_coral_corn_runs_export_and_flag_what_predict_refuses(
    tmp_path: Path, loss: str, rule: str
) -> None:
    """Items 3, 11, 12: runs with class positions (binned scores), coral and corn export; ONNX
    equals predict on finite rows; rows predict refuses get label -1 and NaN probabilities."""
    from emdloss.cli import main
    from emdloss.errors import UserError
    from emdloss.integrations.onnx import INVALID_LABEL

    table = tmp_path / "scores.csv"
    _binned_table(table)
    run = tmp_path / "run"
    argv = ["train", "--dataset", f"csv:{table}", "--target", "score", "--data-option", "bins=3"]
    argv += ["--loss", loss, "--seed", "0", "--output", str(run), *QUICK]
    assert main(argv) == 0
    model = tmp_path / "model.onnx"
    assert main(["export", str(run), "--output", str(model), "--rule", rule]) == 0
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["outputs"][1]["invalid_label"] == INVALID_LABEL
    assert "NaN" in sidecar["outputs"][1]["invalid_rows"]

    good = np.array([[0.1, 0.2], [1.5, -0.3], [-2.0, 0.7]])
    rows_csv = tmp_path / "good.csv"
    rows_csv.write_text("x1,x2\n" + "".join(f"{a},{b}\n" for a, b in good))
    rows = _predict_rows(run, [str(rows_csv)])
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    _compare(run, session, {"numeric": good}, rows, rule)

    for bad in ("nan", "inf", "-inf", "1e308"):
        bad_csv = tmp_path / "bad.csv"
        bad_csv.write_text(f"x1,x2\n0.1,0.2\n{bad},0.5\n")
        with pytest.raises(UserError):
            _predict_rows(run, [str(bad_csv)])
        probs, labels = session.run(None, {"numeric": np.array([[0.1, 0.2], [float(bad), 0.5]])})
        assert labels.tolist()[1] == INVALID_LABEL and labels.tolist()[0] >= 0
        assert np.isnan(probs[1]).all() and np.isfinite(probs[0]).all()
