"""A run directory's files are checked against the layout a run writes, by one loader per file:
a tampered, damaged or other-version file is one line naming the file, the key, the value and
what was expected; never a traceback, a runaway YAML expansion or a silently wrong model.

Issue 21, items 2, 9, 14, 15 and 18: a 1.3 KB YAML alias bomb in ``--config`` or ``config.yaml``
ran without bound; a wrong-length ``feature_mean``, missing keys, NaN weights, garbage or
symlinked checkpoint bytes, a python tag or an unknown key in ``config.yaml``, another run's
``calibrator.json`` gave tracebacks, or a model used silently.

Named for emdloss.training.rundir (one loader per file); also covers _calibrate's digest.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("yaml")
pytest.importorskip("lightning")

from tests._runs import write_grades

from emdloss.cli import main
from emdloss.errors import UserError
from emdloss.training import rundir
from emdloss.training._calibrate import checkpoint_digest
from emdloss.training.config import TrainConfig

# "Billion laughs": nine levels of nine aliases, 1.3 KB of text, 9**9 strings once expanded.
_LEVELS = ["a: &a [" + ",".join(["lol"] * 9) + "]"]
for _level in range(1, 9):
    _prev, _name = chr(ord("a") + _level - 1), chr(ord("a") + _level)
    _LEVELS.append(f"{_name}: &{_name} [" + ",".join([f"*{_prev}"] * 9) + "]")
BOMB_OPTIONS = "data_options:\n" + "\n".join("  " + line for line in _LEVELS) + "\n"


def _exit_2_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _commands(run: Path, tmp_path: Path) -> list[list[str]]:
    rows = tmp_path / "rows.csv"
    write_grades(rows, 3, seed=5, with_target=False)
    commands = [
        ["evaluate", str(run), "--no-progress"],
        ["predict", str(run), str(rows)],
        ["calibrate", str(run), "--no-progress"],
    ]
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return commands
    return [*commands, ["export", str(run), "--output", str(tmp_path / "m.onnx")]]


# ---------------------------------------------------------------------------- config.yaml
def test_the_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB_OPTIONS, encoding="utf-8")
    assert len(BOMB_OPTIONS) < 1500
    with pytest.raises(UserError, match=r"bomb\.yaml, line 2: YAML anchors and aliases \(&a\)"):
        TrainConfig.from_yaml(bomb)


def test_the_alias_bomb_in_train_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB_OPTIONS, encoding="utf-8")
    _exit_2_one_line(capsys, ["train", "--config", str(bomb)], "anchors and aliases")


def test_a_saved_config_never_holds_an_alias(tmp_path: Path) -> None:
    shared = [1, 2]
    config = TrainConfig(model_options={"hidden_sizes": shared}, loss_options={"p": shared})
    text = config.save(tmp_path / "c.yaml").read_text(encoding="utf-8")
    assert "&" not in text and "*" not in text
    assert TrainConfig.from_yaml(tmp_path / "c.yaml").loss_options == {"p": [1, 2]}


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda t: t + "a: &x [1]\nb: *x\n", ["config.yaml", "anchors and aliases"]),
        (lambda t: t + BOMB_OPTIONS, ["config.yaml", "anchors and aliases"]),
        (lambda t: t + "colour: blue\n", ["config.yaml", "unknown option 'colour'"]),
        (
            lambda t: t.replace("lr: 0.001", "lr: fast"),
            ["config.yaml", "lr", "'fast'", "expected a number"],
        ),
        (
            lambda t: t.replace("loss: emd2", "loss: [emd2]"),
            ["config.yaml", "loss", "['emd2']", "expected a text value"],
        ),
        (
            lambda t: t.replace("seed: 0", "seed: !!python/object/apply:os.getcwd []"),
            ["config.yaml", "line", "python/object/apply:os.getcwd", "not plain YAML data"],
        ),
    ],
    ids=["alias", "bomb", "unknown-key", "wrong-type", "list-for-text", "python-tag"],
)
def test_a_tampered_config_yaml_is_one_line_in_every_command(
    run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: Any,
    needles: list[str],
) -> None:
    path = run / rundir.CONFIG_FILE
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    for argv in _commands(run, tmp_path):
        _exit_2_one_line(capsys, argv, *needles)


# ---------------------------------------------------------------------------- data.json
def _edit_json(path: Path, change: Any) -> None:
    record = json.loads(path.read_text(encoding="utf-8"))
    change(record)
    path.write_text(json.dumps(record), encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (
            lambda r: r["table"].update(feature_mean=[0.0]),
            ["data.json", "table.feature_mean = [0.0]", "a list of 2 finite numbers"],
        ),
        (lambda r: r["table"].pop("feature_scale"), ["data.json", "feature_scale"]),
        (lambda r: r.pop("class_names"), ["data.json", "missing key(s) class_names"]),
        (
            lambda r: r.update(input_shape=[7]),
            ["data.json", "input_shape = [7]", "expected [2]"],
        ),
        (lambda r: r.update(positions=[0, 1]), ["data.json", "positions", "a list of 3"]),
        (
            lambda r: r["table"].update(feature_median=[1.0, 2.0, 3.0]),
            ["data.json", "table.feature_median", "a list of 2 finite numbers"],
        ),
    ],
    ids=[
        "short-feature-mean",
        "no-feature-scale",
        "no-class-names",
        "shape",
        "positions",
        "long-feature-median",
    ],
)
def test_an_inconsistent_data_json_is_one_line(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, needles: list[str]
) -> None:
    _edit_json(run / rundir.DATA_FILE, change)
    for argv in _commands(run, tmp_path)[1:2] + _commands(run, tmp_path)[3:]:  # predict, export
        _exit_2_one_line(capsys, argv, *needles)


# ---------------------------------------------------------------------------- checkpoints
def _best(run: Path) -> Path:
    return run / rundir.CHECKPOINT_DIR / rundir.BEST_CHECKPOINT


def test_garbage_checkpoint_bytes_are_one_user_error(tmp_path: Path) -> None:
    # About 1 in 7 random files used to give IndexError, KeyError or struct.error.
    for seed in range(40):
        rng = random.Random(seed)
        path = tmp_path / f"{seed}.ckpt"
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))))
        with pytest.raises(UserError, match=f"cannot read checkpoint {path}"):
            rundir.load_checkpoint(path)


def test_a_checkpoint_symlinked_to_a_text_file_is_one_line(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A CSV of losses: torch's legacy unpickler raised IndexError on it.
    text = tmp_path / "history.csv"
    text.write_text("epoch,loss\n1,0.5\n")
    _best(run).unlink()
    _best(run).symlink_to(text)
    for argv in _commands(run, tmp_path)[:2]:
        _exit_2_one_line(capsys, argv, "cannot read checkpoint", "best.ckpt", "not the zip archive")
    assert text.read_text() == "epoch,loss\n1,0.5\n"


def test_nan_weights_are_refused_not_used(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = torch.load(_best(run), map_location="cpu", weights_only=True)
    name = next(k for k, v in content["state_dict"].items() if v.is_floating_point())
    content["state_dict"][name] = torch.full_like(content["state_dict"][name], float("nan"))
    torch.save(content, _best(run))
    for argv in _commands(run, tmp_path)[:2]:
        _exit_2_one_line(capsys, argv, "best.ckpt", f"weight {name!r} holds NaN")


def test_a_checkpoint_missing_weights_names_them(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = torch.load(_best(run), map_location="cpu", weights_only=True)
    name = sorted(content["state_dict"])[-1]
    del content["state_dict"][name]
    torch.save(content, _best(run))
    for argv in _commands(run, tmp_path)[:2]:
        _exit_2_one_line(capsys, argv, "does not fit the run's model", name)


def test_a_checkpoint_without_its_epoch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(UserError, match=r"x\.ckpt: epoch = None: expected an integer >= 0"):
        rundir.load_checkpoint(path)


# ---------------------------------------------------------------------------- calibrator.json
_CALIBRATOR = {"format": 1, "method": "cdf", "alpha": 0.1, "qhat": 0.5, "n": 60, "num_classes": 3}


def _calibration(run: Path, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "format": 1,
        "calibrator": dict(_CALIBRATOR),
        "split": "val",
        "checkpoint": {
            "file": "checkpoints/best.ckpt",
            "epoch": 1,
            "sha256": checkpoint_digest(run),
        },
        "class_names": ["low", "mid", "high"],
        "evaluation": {"split": "test", "n": 60, "coverage": 0.9, "mean_set_size": 1.5},
        "curve": {"split": "test", "alphas": [], "coverage": [], "mean_set_size": []},
    }
    for key, value in changes.items():
        if value is None:
            record.pop(key)
        else:
            record[key] = value
    return record


def test_a_forged_calibration_record_is_accepted_as_the_baseline(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The record the other tests damage is itself valid: predict uses it.
    (run / rundir.CALIBRATOR_FILE).write_text(json.dumps(_calibration(run)), encoding="utf-8")
    rows = tmp_path / "rows.csv"
    write_grades(rows, 3, seed=5, with_target=False)
    assert main(["predict", str(run), str(rows)]) == 0
    assert "conformal_set" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        (
            {"calibrator": {**_CALIBRATOR, "num_classes": 5}},
            ["calibrator.json", "calibrator.num_classes = 5", "expected 3"],
        ),
        (
            {"class_names": ["a", "b", "c", "d", "e"]},
            ["calibrator.json", "calibrator.num_classes = 3", "expected 5"],
        ),
        ({"class_names": ["x", "y", "z"]}, ["calibrator.json", "another run's"]),
        ({"evaluation": None}, ["calibrator.json", "missing key(s) evaluation"]),
        ({"evaluation": {"split": "test"}}, ["calibrator.json", "evaluation lacks n"]),
    ],
    ids=["num-classes", "class-count", "other-run", "no-evaluation", "short-evaluation"],
)
def test_a_calibrator_json_of_another_run_or_incomplete_is_one_line(
    run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, Any],
    needles: list[str],
) -> None:
    record = _calibration(run, **changes)
    (run / rundir.CALIBRATOR_FILE).write_text(json.dumps(record), encoding="utf-8")
    for argv in _commands(run, tmp_path)[:2]:  # evaluate, predict
        _exit_2_one_line(capsys, argv, *needles)


def test_every_yaml_text_goes_through_the_one_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from emdloss import _yaml
    from emdloss._yaml import UnsafeYAMLError, load_yaml

    # A KEY=VALUE value with an alias: refused by the parser (exit 2), not read as text.
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--data-option", "x=[&a [1], *a]"])
    assert stopped.value.code == 2
    assert "anchors and aliases" in capsys.readouterr().err
    # A text over the size limit is refused before it is parsed.
    monkeypatch.setattr(_yaml, "MAX_YAML_BYTES", 100)
    with pytest.raises(UnsafeYAMLError, match=r"c\.yaml: 101 characters, over the 100"):
        load_yaml("#" * 101, "c.yaml")
    config = tmp_path / "big.yaml"
    config.write_text("loss: ce\n" + "#" * 200 + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="over the 100"):
        TrainConfig.from_yaml(config)
