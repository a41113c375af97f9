"""The error contract of every ``emdloss`` subcommand (issue 19): a bad value given by the user
ends the command with exit code 2 and one line naming the value and what was expected, never a
traceback, and nothing is written.

Each row of :data:`CASES` is one command line; ``{run}`` is a finished run (a private copy),
``{out}`` a path the command would write to, ``{csv}`` a small CSV table and ``{tmp}`` the test's
directory. The commands run in-process (``emdloss.cli.main``); two run as a subprocess, as a user
runs them. Library-level messages are tested with their modules; here only the boundary.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("yaml")
pytest.importorskip("lightning")

from emdloss.cli import main
from tests._runs import write_grades

QUICK = ["--no-progress", "--epochs", "1"]
CSV = ["--dataset", "{csv}", "--target", "grade", "--classes", "low,mid,high"]

#: (command line, text the error line must hold)
CASES: list[tuple[list[str], str]] = [
    # train: option values, names, ranges, files, data options, run-directory states
    (["train", "--loss", "nope", "--output", "{out}"], "unknown loss 'nope'; valid losses: ce"),
    (["train", "--epochs", "0", "--output", "{out}"], "--epochs 0: expected an integer >= 1"),
    (["train", "--epochs", "zero", "--output", "{out}"], "--epochs 'zero': expected an integer"),
    (["train", "--lr", "0", "--output", "{out}"], "--lr 0.0: expected a finite number > 0"),
    (["train", "--lr", "nan", "--output", "{out}"], "--lr 'nan': expected a finite number"),
    (["train", "--momentum", "1", "--output", "{out}"], "--momentum 1.0: expected a number in"),
    (["train", "--threads", "0", "--output", "{out}"], "--threads 0: expected an integer >= 1"),
    (["train", "--monitor", "nope", "--output", "{out}"], "--monitor 'nope': expected one of"),
    (["train", "--monitor-rule", "mode", "--output", "{out}"], "--monitor-rule 'mode'"),
    (["train", "--optimizer", "adam", "--output", "{out}"], "--optimizer 'adam': expected one"),
    (["train", "--scheduler", "step", "--output", "{out}"], "--scheduler 'step': expected one"),
    (["train", "--implementation", "x", "--output", "{out}"], "--implementation 'x': expected"),
    (["train", "--tta", "--model", "vgg99", "--output", "{out}"], "unknown model 'vgg99'"),
    (["train", "--config", "{tmp}/missing.yaml", "--output", "{out}"], "config file not found"),
    (["train", "--dataset", "mnist", "--output", "{out}"], "unknown dataset 'mnist'"),
    (["train", "--dataset", "csv:{tmp}/none.csv", "--target", "y", "--output", "{out}"], "none.csv"),
    (["train", *CSV, "--output", "{out}", "--target", "nope"], "target column 'nope' not found"),
    ([
        "train", *CSV, "--output", "{out}", "--data-option", "val_fraction=2",
    ], "--data-option val_fraction=2: expected a number in [0, 1)"),
    ([
        "train", *CSV, "--output", "{out}", "--loss", "ground",
        "--ground-matrix", "{tmp}/none.npy",
    ], "--ground-matrix file not found"),
    (["train", *CSV, "--output", "{out}", "--loss-option", "mu=banana", "--loss", "xemd1"],
     "loss option mu is 'banana'"),
    (["train", *CSV, "--output", "{out}", "--accelerator", "nope", *QUICK], "accelerator='nope'"),
    (["train", *CSV, "--output", "{out}", "--precision", "99", *QUICK], "Precision '99' is invalid"),
    (["train", *CSV, "--output", "{out}", "--strategy", "nope", *QUICK], "nope"),
    (["train", *CSV, "--output", "{run}", *QUICK], "--overwrite"),
    # evaluate, calibrate, predict, export: missing and unfit paths, out-of-range values
    (["evaluate", "{tmp}/missing"], "not a run directory"),
    (["evaluate", "{tmp}"], "not a run directory"),
    (["calibrate", "{tmp}/missing"], "not a run directory"),
    (["calibrate", "{run}", "--alpha", "2"], "alpha must be strictly between 0 and 1, got 2.0"),
    (["calibrate", "{run}", "--alpha", "0"], "alpha must be strictly between 0 and 1, got 0.0"),
    (["predict", "{tmp}/missing", "{csv_path}", "--output", "{out}"], "not a run directory"),
    (["predict", "{run}", "{tmp}/missing.csv", "--output", "{out}"], "input not found"),
    (["export", "{tmp}/missing", "--output", "{out}"], "not a run directory"),
    (["export", "{run}", "--output", "{out}", "--rule", "nope"], "rule must be one of argmax"),
    (["export", "{run}", "--output", "{out}", "--opset", "0"], "--opset 0: expected an ONNX opset"),
    # plot: every folder is checked before any figure is drawn (the run stays untouched)
    (["plot", "{tmp}/missing"], "missing is not a finished run directory: expected config.yaml"),
    (["plot", "{tmp}"], "is not a finished run directory"),
    (["plot", "{run}", "{tmp}/missing"], "missing is not a finished run directory"),
    # compare: the values of issue 19, then train options passed through or set
    (["compare", "--losses", "nope", "--output", "{out}"], "unknown loss 'nope'"),
    (["compare", "--losses", "ce,,w1", "--output", "{out}"], "--losses: empty name"),
    (["compare", "--jobs", "0", "--output", "{out}"], "--jobs: expected an integer >= 1, got 0"),
    (["compare", "--seeds", "0", "--output", "{out}"], "--seeds: expected a count >= 1, got 0"),
    (["compare", "--seeds", "a,b", "--output", "{out}"], "--seeds: expected comma-separated"),
    (["compare", "--folds", "1", "--output", "{out}"], "--folds: expected an integer >= 2"),
    (["compare", "--dataset", "nope", "--output", "{out}"], "unknown dataset 'nope'"),
    (["compare", "--grid", "nope=1", "--output", "{out}"], "--grid 'nope=1': unknown train"),
    (["compare", "--grid", "lr", "--output", "{out}"], "--grid 'lr': expected KEY=V1,V2"),
    (["compare", "--grid", "seed=1,2", "--output", "{out}"], "set by compare itself"),
    (["compare", "--conformal", "2", "--output", "{out}"], "--conformal 2.0: alpha must be"),
    (["compare", "--lr", "0", "--output", "{out}"], "--lr 0.0: expected a finite number > 0"),
    (["compare", "--epochs", "0", "--output", "{out}"], "--epochs 0: expected an integer >= 1"),
    (["compare", "--set", "monitor=x", "--select", "mae", "--output", "{out}"],
     "--set monitor='x': expected one of"),
    (["compare", "--set", "lrr=1", "--output", "{out}"], "unknown train option(s) lrr"),
    (["compare", "--set", "seed=1", "--output", "{out}"], "set by compare itself"),
    (["compare", "--set", "novalue", "--output", "{out}"], "--set 'novalue': expected KEY=VALUE"),
    (["compare", "--config", "{tmp}/missing.yaml", "--output", "{out}"], "config file not found"),
    ([
        "compare", "--dataset", "{csv}", "--target", "grade", "--classes", "low,mid,high",
        "--data-option", "val_fraction=2", "--output", "{out}",
    ], "--data-option val_fraction=2: expected a number in [0, 1)"),
]  # fmt: skip

#: Bad command lines that argparse itself refuses (its usage, then one error line).
USAGE_CASES: list[list[str]] = [
    ["nope"],
    ["train", "--epoch", "3"],
    ["train", "--data-option", "novalue"],
    ["evaluate"],
    ["calibrate", "{run}", "--method", "nope"],
    ["calibrate", "{run}", "--split", "train"],
    ["predict", "{run}"],
    ["export", "{run}"],
    ["export", "{run}", "--output", "{out}", "--format", "pdf"],
    ["plot"],
    ["plot", "{run}", "--nope"],
    ["compare", "--plots", "nope"],
    ["compare", "--jobs", "two"],
    ["compare", "--select", "nope"],
    ["compare", "--executor", "nope"],
    ["compare", "--conformal-method", "nope"],
    ["build-kernel", "--nope"],
]


@pytest.fixture
def paths(run: Path, tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "grades.csv"
    write_grades(data, 60, seed=1)
    return {
        "run": str(run),
        "out": str(tmp_path / "out"),
        "csv": f"csv:{data}",
        "csv_path": str(data),
        "tmp": str(tmp_path),
    }


def _fill(argv: list[str], paths: dict[str, str]) -> list[str]:
    return [item.format(**paths) for item in argv]


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def _ids(cases: list[tuple[list[str], str]]) -> list[str]:
    return [" ".join(argv[:3]) + f"-{i}" for i, (argv, _) in enumerate(cases)]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=_ids(CASES))
def test_a_bad_value_is_one_line_exit_2_and_writes_nothing(
    argv: list[str], expected: str, paths: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    if argv[0] == "export" and not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript")):
        expected = "ONNX export needs the onnx extra"  # the one line of an install without it
    run = Path(paths["run"])
    before = _snapshot(run)
    code = main(_fill(argv, paths))
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, err
    assert "Traceback" not in err + captured.out, err
    # Warnings about the data (a tiny validation split) may come before the error.
    lines = [line for line in err.splitlines() if ": warning: " not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"emdloss {argv[0]}: error: "), err
    assert expected in lines[0], err
    assert not Path(paths["out"]).exists()  # nothing written where the command would write
    assert _snapshot(run) == before  # the run directory untouched


@pytest.mark.parametrize("argv", USAGE_CASES, ids=[" ".join(a) for a in USAGE_CASES])
def test_a_bad_command_line_is_argparse_usage_and_exit_2(
    argv: list[str], paths: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(_fill(argv, paths))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("usage: emdloss"), err
    assert len([line for line in err.splitlines() if ": error: " in line]) == 1, err
    assert not Path(paths["out"]).exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--losses", "nope", "--output", "{out}"],
        ["calibrate", "{run}", "--alpha", "2"],
    ],
)
def test_as_a_user_runs_it(argv: list[str], paths: dict[str, str]) -> None:
    """In a fresh process: exit status 2 and the one line on stderr, nothing on stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "emdloss", *_fill(argv, paths)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""
    assert not Path(paths["out"]).exists()


def test_a_bug_in_compare_planning_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, paths: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain ValueError from compare's own code is a bug, not a user error."""
    from emdloss.compare import _compare

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(_compare, "compare", broken)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(["compare", "--output", paths["out"]])
    assert "bug in emdloss" in capsys.readouterr().err
