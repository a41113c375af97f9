"""Nothing in a run directory is executed, and a damaged one ends in one line (issue 8):
malicious and truncated checkpoints given to evaluate, predict and resume; stray rank variables;
``evaluate --json``; evaluate from another directory; the recorded loss implementation.

Named for emdloss.training.rundir (load_checkpoint, run records); also covers _train's checkpoint
and rank handling.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

# The train extra: these tests train runs with Lightning and read YAML.
pytest.importorskip("yaml")
pytest.importorskip("lightning")

import yaml
from tests._runs import QUICK, train_args, write_grades

from emdloss import _ordinal
from emdloss.cli import main
from emdloss.errors import UserError
from emdloss.training import rundir
from emdloss.training._train import launched_rank


class _Exploit:
    """Unpickling this calls ``open(marker, "w")``: a file appears if anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _poison(checkpoint: Path, marker: Path) -> None:
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    content["payload"] = _Exploit(marker)
    torch.save(content, checkpoint)


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _commands(run: Path, tmp_path: Path) -> list[list[str]]:
    rows = tmp_path / "rows.csv"
    write_grades(rows, 3, seed=5, with_target=False)
    return [
        ["evaluate", str(run), "--no-progress"],
        ["predict", str(run), str(rows)],
        # The budget is spent: the resume goes straight to testing best.ckpt (a further epoch
        # could replace best.ckpt before it is read).
        ["train", "--output", str(run), "--resume", "--epochs", "1", *QUICK],
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", [rundir.BEST_CHECKPOINT, rundir.LAST_CHECKPOINT])
def test_malicious_checkpoint_is_refused_and_never_executed(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    marker = tmp_path / "pwned"
    _poison(run / rundir.CHECKPOINT_DIR / name, marker)
    commands = _commands(run, tmp_path)
    if name == rundir.LAST_CHECKPOINT:
        commands = commands[2:]  # only a resume reads last.ckpt
    for argv in commands:
        err = _one_line_exit_2(capsys, argv)
        assert name in err and "refusing to load" in err, err
        assert not marker.exists(), argv


@pytest.mark.slow
@pytest.mark.parametrize("name", [rundir.BEST_CHECKPOINT, rundir.LAST_CHECKPOINT])
def test_truncated_checkpoint_is_one_line(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = run / rundir.CHECKPOINT_DIR / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    commands = _commands(run, tmp_path)
    if name == rundir.LAST_CHECKPOINT:
        commands = commands[2:]
    for argv in commands:
        err = _one_line_exit_2(capsys, argv)
        assert name in err and "truncated or corrupt" in err, err


def test_load_checkpoint_refuses_a_non_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    torch.save([1, 2], path)
    with pytest.raises(UserError, match="not an emdloss checkpoint"):
        rundir.load_checkpoint(path)


def test_no_unrestricted_torch_load_in_the_package() -> None:
    source = Path(rundir.__file__).parents[1]
    for file in source.rglob("*.py"):
        text = file.read_text(encoding="utf-8")
        assert "weights_only=False" not in text, file
        for line in text.splitlines():
            if "torch.load(" in line and not line.lstrip().startswith((">>>", "#")):
                assert "weights_only=True" in line, (file, line)


# ---------------------------------------------------------------------------- ranks
_LAUNCH = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


@pytest.mark.parametrize(
    ("environ", "rank"),
    [
        ({}, 0),
        ({"RANK": "1"}, 0),
        ({"LOCAL_RANK": "1", "NODE_RANK": "1"}, 0),
        ({"SLURM_PROCID": "1"}, 0),
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "1", "SLURM_JOB_ID": "7"}, 0),
        ({"RANK": "1", "WORLD_SIZE": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, 0),
        ({"RANK": "1", "WORLD_SIZE": "2"}, 0),  # no master address: not a launch
        ({**_LAUNCH, "RANK": "1"}, 1),  # torchrun
        ({**_LAUNCH, "LOCAL_RANK": "1", "NODE_RANK": "0"}, 1),  # Lightning's ddp launcher
        ({**_LAUNCH, "LOCAL_RANK": "0", "NODE_RANK": "0"}, 0),
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "7"}, 1),  # srun
    ],
)
def test_launched_rank_needs_a_real_launch(environ: dict[str, str], rank: int) -> None:
    assert launched_rank(environ) == rank


@pytest.mark.slow
def test_stray_rank_variables_do_not_touch_an_existing_run(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"):
        monkeypatch.setenv(key, "1")
    data = tmp_path / "other.csv"
    write_grades(data, 120, seed=3)
    err = _one_line_exit_2(capsys, train_args(data, run))
    assert "already holds a run" in err
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before


# ---------------------------------------------------------------------------- evaluate
@pytest.mark.slow
def test_evaluate_json_is_pure_json_with_progress_bars(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(run), "--json", "--progress"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    saved = json.loads((run / rundir.METRICS_FILE).read_text())
    assert result["test"]["argmax"] == pytest.approx(saved["test"]["argmax"], nan_ok=True)


@pytest.mark.slow
def test_relative_paths_are_recorded_absolute_and_evaluate_works_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write_grades(project / "grades.csv", 200, seed=1)
    monkeypatch.chdir(project)
    argv = train_args(Path("grades.csv"), Path("run"))
    assert main(argv) == 0
    capsys.readouterr()
    saved = yaml.safe_load((project / "run" / rundir.CONFIG_FILE).read_text())
    assert saved["dataset"] == f"csv:{project / 'grades.csv'}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["evaluate", str(project / "run"), "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    saved_metrics = json.loads((project / "run" / rundir.METRICS_FILE).read_text())
    assert result["test"]["argmax"] == pytest.approx(saved_metrics["test"]["argmax"], nan_ok=True)
    # A resume given the same relative paths from the project directory still matches the run.
    monkeypatch.chdir(project)
    assert main([*argv[:-3], "--resume", "--epochs", "2", *QUICK]) == 0


# ---------------------------------------------------------------------------- implementation
@pytest.mark.slow
def test_resume_uses_the_recorded_implementation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "grades.csv"
    write_grades(data, 200, seed=2)
    run = tmp_path / "run"
    assert main(train_args(data, run, "--implementation", "reference")) == 0
    saved = yaml.safe_load((run / rundir.CONFIG_FILE).read_text())
    assert saved["implementation"] == "reference"

    used: list[str] = []
    real = _ordinal.implementation

    @contextlib.contextmanager
    def spy(name: str) -> Iterator[None]:
        used.append(name)
        with real(name):
            yield

    monkeypatch.setattr(_ordinal, "implementation", spy)
    # The machine now "has the kernel" and asks for it: the resume must not follow.
    monkeypatch.setenv("EMDLOSS_CPU_KERNEL", "1")
    assert main(["train", "--output", str(run), "--resume", "--epochs", "2", *QUICK]) == 0
    assert used == ["reference"]
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    assert used == ["reference", "reference"]
    # Asking a resume for another implementation is refused: it would change the numbers.
    capsys.readouterr()
    argv = ["train", "--output", str(run), "--resume", "--epochs", "3", *QUICK]
    err = _one_line_exit_2(capsys, [*argv, "--implementation", "fused"])
    assert "implementation: 'reference' -> 'fused'" in err
    assert os.environ["EMDLOSS_CPU_KERNEL"] == "1"


@pytest.mark.slow
@pytest.mark.filterwarnings("error:The dirpath has changed")  # Lightning's fallback: an error
def test_a_moved_run_resumes_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Lightning forgets the best score of a run whose directory moved; the next epoch would then
    # replace best.ckpt whatever its score. Resuming a moved run must equal an uninterrupted run.
    data = tmp_path / "grades.csv"
    write_grades(data, 240, seed=4)
    whole, cut, moved = tmp_path / "whole", tmp_path / "cut", tmp_path / "moved"
    assert main([*train_args(data, whole), "--epochs", "4", "--loss", "w1", "--lr", "0.05"]) == 0
    assert main([*train_args(data, cut), "--epochs", "2", "--loss", "w1", "--lr", "0.05"]) == 0
    cut.rename(moved)
    assert main(["train", "--output", str(moved), "--resume", "--epochs", "4", *QUICK]) == 0
    capsys.readouterr()
    a = json.loads((whole / rundir.METRICS_FILE).read_text())
    b = json.loads((moved / rundir.METRICS_FILE).read_text())
    assert (a["best_epoch"], a["val"], a["test"]) == (b["best_epoch"], b["val"], b["test"])


def test_checkpoint_state_holds_no_paths(tmp_path: Path) -> None:
    # A run directory that moved resumes with its best score: the state names no file.
    from emdloss.training._checkpoint import RunCheckpoints

    saved = RunCheckpoints(tmp_path / "old" / "checkpoints", monitor="m", mode="min")
    saved.best_score, saved.best_epoch = torch.tensor(0.25), 3
    moved = RunCheckpoints(tmp_path / "new" / "checkpoints", monitor="m", mode="min")
    moved.load_state_dict(saved.state_dict())
    assert (moved.best_score, moved.best_epoch) == (torch.tensor(0.25), 3)
    assert not any(isinstance(v, (str, os.PathLike)) for v in saved.state_dict().values())


@pytest.mark.slow
def test_checkpoints_are_written_once_and_hold_the_best_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 20: best.ckpt and last.ckpt are written once per (short) run, not every epoch, and
    # the best state kept in memory is the best epoch's, not a view of the weights trained on:
    # evaluated again, it scores what history.csv recorded for that epoch.
    from emdloss.training import _checkpoint
    from emdloss.training._io import AtomicCheckpointIO

    written: list[str] = []
    real_bytes, real_save = _checkpoint.write_bytes, AtomicCheckpointIO.save_checkpoint

    def count_bytes(path: Any, data: bytes) -> Any:
        written.append(Path(path).name)
        return real_bytes(path, data)

    def count_save(self: Any, checkpoint: Any, path: Any, storage_options: Any = None) -> None:
        written.append(Path(path).name)
        real_save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(_checkpoint, "write_bytes", count_bytes)
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", count_save)
    data, run = tmp_path / "grades.csv", tmp_path / "run"
    write_grades(data, 240, seed=4)
    argv = [*train_args(data, run), "--epochs", "6", "--loss", "w1", "--lr", "0.05"]
    assert main(argv) == 0
    capsys.readouterr()
    assert written == [rundir.BEST_CHECKPOINT, rundir.LAST_CHECKPOINT]
    metrics = rundir.read_metrics(run)
    assert metrics is not None
    history = rundir.read_history(run)
    maes = [row["val_mae"] for row in history]
    assert metrics["best_epoch"] == 1 + maes.index(min(maes))  # the first of equal bests
    assert metrics["val"]["argmax"]["mae"] == pytest.approx(min(maes), abs=1e-6)
    if len(set(maes)) > 1:  # a best state aliasing the live weights would score the last epoch
        best = rundir.load_checkpoint(run / rundir.CHECKPOINT_DIR / rundir.BEST_CHECKPOINT)
        last = rundir.load_checkpoint(run / rundir.CHECKPOINT_DIR / rundir.LAST_CHECKPOINT)
        assert best["epoch"] == metrics["best_epoch"] - 1 and last["epoch"] == 5


def test_written_probabilities_read_back_as_distributions(tmp_path: Path) -> None:
    # Found in review: written with 6 significant digits, ten-class rows read back as float64
    # summed up to 2e-6 away from 1, and distribution_metrics (1e-6 in float64) refused them.
    import csv

    import numpy as np

    from emdloss.metrics import distribution_metrics

    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(200, 10) * 3, dim=1)
    names = [f"c{k}" for k in range(10)]
    decoded = {"argmax": probs.argmax(dim=1)}
    path = rundir.write_predictions(
        tmp_path, probs.argmax(dim=1).tolist(), probs, decoded, names, target_probs=probs
    )
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    read = torch.tensor([[float(r[f"prob_{n}"]) for n in names] for r in rows], dtype=torch.float64)
    back = [[float(r[f"target_prob_{n}"]) for n in names] for r in rows]
    assert torch.equal(read.float(), probs)  # every float32 value exactly
    old = torch.tensor(np.vectorize(lambda v: float(f"{v:.6g}"))(probs.double().numpy()))
    assert (old.sum(dim=1) - 1).abs().max() > 1e-6  # what 6 digits wrote: refused in float64
    scores = distribution_metrics(read, torch.tensor(back, dtype=torch.float64))
    assert scores["kl"] == pytest.approx(0.0, abs=1e-12)
    line = rundir.predictions_csv([{"id": "a", "prob_x": float(probs[0, 0])}]).splitlines()[1]
    assert torch.tensor(float(line.split(",")[1])) == probs[0, 0]  # predict's rows, too
