"""Ctrl-C during training: one line naming the run and how to continue it, exit 130, and the run
resumes from its last finished epoch.

Issue 21, item 22: Lightning catches the KeyboardInterrupt and calls ``sys.exit(1)``: the command
exited 1 with no message, not the CLI's "interrupted" and 130.

Named for emdloss.training._train; the exit code is the CLI's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from tests._runs import QUICK, train_args, write_grades

from emdloss.training import rundir

SRC = Path(__file__).resolve().parents[2] / "src"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_mid_training_names_the_run_exits_130_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "grades.csv"
    write_grades(data, 240, seed=0)
    run = tmp_path / "run"
    argv = train_args(data, run, "--epochs", "2000")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "emdloss", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background (`make test &`, nohup) inherits an ignored SIGINT,
        # which Python keeps: the child would never see the Ctrl-C.
        preexec_fn=_default_sigint,
    )
    # data.json is written just before fitting; the checkpoints only every CHECKPOINT_SECONDS of
    # training and when fitting stops, so the interrupt itself must leave last.ckpt behind.
    started = run / rundir.DATA_FILE
    deadline = time.monotonic() + 120
    while not started.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.is_file(), process.communicate()[1][-2000:] if process.poll() is not None else ""
    time.sleep(5.0)  # mid-epoch, some epochs into fitting
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1, err[-3000:]
    assert str(run) in lines[0] and f"emdloss train --output {run} --resume" in lines[0]
    assert not (run / rundir.METRICS_FILE).exists()
    # Nothing lost: the last finished epoch is a whole checkpoint, and the run resumes from it.
    last = run / rundir.CHECKPOINT_DIR / rundir.LAST_CHECKPOINT
    assert last.is_file(), err[-3000:]
    epoch = rundir.load_checkpoint(last)["epoch"]
    command = [sys.executable, "-m", "emdloss", "train", "--output", str(run), "--resume"]
    resumed = subprocess.run(
        [*command, "--epochs", str(epoch + 2), *QUICK],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert rundir.read_metrics(run) is not None


def test_ctrl_c_inside_compare_says_to_run_the_same_command_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("skordinal")
    import emdloss.compare._compare as compare_package
    from emdloss.cli import main
    from emdloss.errors import RunInterrupted

    real_compare = compare_package.compare

    def stopped(config: object) -> object:
        raise RunInterrupted(f"run {getattr(config, 'output', '?')} stopped")

    def with_stopped_training(*args: object, **kwargs: object) -> object:
        return real_compare(*args, **{**kwargs, "train_fn": stopped})

    monkeypatch.setattr(compare_package, "compare", with_stopped_training)
    out = tmp_path / "out"
    argv = ["compare", "--dataset", "lev", "--losses", "ce", "--seeds", "1"]
    assert main([*argv, "--output", str(out), "--no-progress", "--no-baselines"]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("emdloss compare: interrupted: compare into ") and str(out) in err
    assert "run the same command again" in err
