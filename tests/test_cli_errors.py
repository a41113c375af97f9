"""The CLI's two kinds of failure: user errors (exit 2, one line in the CLI's own flag spelling;
``--debug`` adds the traceback) and bugs (re-raised with their traceback and a line asking for
a report), issue 9."""

from __future__ import annotations

from pathlib import Path

import pytest

# The commands these tests run need the train extra (on a minimal install they only say so).
pytest.importorskip("yaml")
pytest.importorskip("lightning")

import emdloss.training
from emdloss.cli import main
from emdloss.errors import UserError


def test_a_bug_keeps_its_traceback_and_asks_for_a_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("an internal inconsistency")  # a bug, although a ValueError

    monkeypatch.setattr(emdloss.training, "evaluate", broken)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(["evaluate", "somewhere"])
    err = capsys.readouterr().err
    assert "bug in emdloss" in err and "please report it" in err


def test_a_user_error_is_one_line_and_debug_shows_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise UserError("--data-dir /nowhere does not exist")

    monkeypatch.setattr(emdloss.training, "evaluate", refuse)
    assert main(["evaluate", "somewhere"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "emdloss evaluate: error: --data-dir /nowhere does not exist"
    assert main(["--debug", "evaluate", "somewhere"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("--data-dir /nowhere does not exist")


def test_option_errors_use_the_flag_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--lr", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "emdloss train: error: --lr 0.0: expected a finite number > 0", err
    assert main(["train", "--implementation", "fastest"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--implementation 'fastest': expected one of fused, cpp" in err, err
    assert "option " not in err


def test_a_missing_user_path_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run directory" in err


def test_a_data_option_error_names_the_data_option_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Regression: "option val_fraction=2" was spelled "--val-fraction 2", a flag that does not
    exist; the value is set with --data-option val_fraction=2."""
    assert main(["train", "--dataset", "lev", "--data-option", "val_fraction=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--data-option val_fraction=2: expected a number in [0, 1)" in err, err
    assert "--val-fraction" not in err


def test_a_user_error_from_a_data_loader_worker_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: with num_workers > 0 torch re-raises a worker's UserError with the worker's
    whole traceback in its message, and the CLI printed all of it."""
    from torch.utils.data import DataLoader, Dataset

    import emdloss._cli_commands as commands
    from emdloss.errors import UserError

    class Broken(Dataset[int]):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> int:
            raise UserError(f"cannot read image {index}.png: truncated file")

    def train(args: object) -> int:
        for _ in DataLoader(Broken(), num_workers=1):
            pass
        return 0

    monkeypatch.setattr(commands, "_train", train)
    monkeypatch.setattr("emdloss.cli._train", train)
    with pytest.raises(UserError, match="Original Traceback"):  # what torch raises
        train(None)
    assert main(["train"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "emdloss train: error: cannot read image 0.png: truncated file (in a data-loader worker)"
    ), err
