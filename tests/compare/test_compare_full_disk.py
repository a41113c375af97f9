"""A full disk during ``compare``: one line, exit 2, and every run resumable or restartable by
running the same command again, without a manual step.

Issue 21, item 16: the plots ended in an ENOSPC traceback, and a run caught between writing
``best.ckpt`` and ``last.ckpt`` had to be removed by hand before a re-run ("move it away").

Named for emdloss.compare._compare (compare end to end); also covers _runner's restart.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("yaml")
pytest.importorskip("lightning")
pytest.importorskip("skordinal")
pytest.importorskip("matplotlib")

import emdloss.compare._compare as compare_package
from emdloss import _atomic
from emdloss._atomic import write_bytes
from emdloss.cli import main
from emdloss.compare import METRIC_KEYS, compare

_REAL_REPLACE = os.replace


def _checkpoint(epoch: int) -> bytes:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"emdloss-test-{os.getpid()}.ckpt"
    torch.save({"epoch": epoch, "state_dict": {"w": torch.zeros(2)}}, path)
    data = path.read_bytes()
    path.unlink()
    return data


def fake_train(config: Any) -> SimpleNamespace:
    run_dir = Path(config.output)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([config.seed, sum(map(ord, config.loss))])
    test = {"argmax": {k: float(rng.uniform()) for k in METRIC_KEYS}}
    metrics = {"test": test, "val": test, "train_seconds": 0.25}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return SimpleNamespace(run_dir=run_dir, metrics=metrics, train_seconds=0.25)


class DiskFullAfterBest:
    """The first epoch writes best.ckpt, then the disk is full when last.ckpt is written."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.calls: list[bool] = []

    def __call__(self, config: Any) -> SimpleNamespace:
        self.calls.append(bool(config.resume))
        checkpoints = Path(config.output) / "checkpoints"
        write_bytes(checkpoints / "best.ckpt", _checkpoint(0))

        def full(src: Any, dst: Any) -> None:
            if Path(dst).name == "last.ckpt":
                raise OSError(errno.ENOSPC, "No space left on device")
            _REAL_REPLACE(src, dst)

        with self.monkeypatch.context() as patch:
            patch.setattr(_atomic.os, "replace", full)
            write_bytes(checkpoints / "last.ckpt", _checkpoint(0))
        raise AssertionError("unreachable: the write above fails")


def test_a_run_cut_between_best_and_last_restarts_without_a_manual_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = DiskFullAfterBest(monkeypatch)
    result = compare("lev", "ce", 1, tmp_path, train_fn=first, progress=False)
    assert [r.status for r in result.records] == ["failed"]
    assert "No space left on device" in str(result.records[0].error)
    run_dir = tmp_path / "runs" / "lev" / "ce" / "seed0"
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()

    calls: list[bool] = []

    def train(config: Any) -> SimpleNamespace:
        calls.append(bool(config.resume))
        return fake_train(config)

    result = compare("lev", "ce", 1, tmp_path, train_fn=train, progress=False)
    assert [r.status for r in result.records] == ["done"], result.records
    assert calls == [False]  # restarted: its one epoch is trained again


def test_a_lone_best_checkpoint_of_a_later_epoch_restarts_too(tmp_path: Path) -> None:
    # Issue 20: the checkpoints are written together at an interval, so the first write (the
    # only one that can leave a lone best.ckpt) may hold any epoch: at most one interval is lost.
    run_dir = tmp_path / "runs" / "lev" / "ce" / "seed0"
    write_bytes(run_dir / "checkpoints" / "best.ckpt", _checkpoint(4))
    result = compare("lev", "ce", 1, tmp_path, train_fn=fake_train, progress=False)
    assert [r.status for r in result.records] == ["done"], result.records


def test_checkpoints_beyond_a_lone_best_are_kept_for_a_human(tmp_path: Path) -> None:
    checkpoints = tmp_path / "runs" / "lev" / "ce" / "seed0" / "checkpoints"
    write_bytes(checkpoints / "best.ckpt", _checkpoint(4))
    (checkpoints / "best.ckpt.bak").write_bytes(b"")  # not a checkpoint name
    write_bytes(checkpoints / "epoch=3.ckpt", _checkpoint(3))  # not a file the run writes
    data = (checkpoints / "best.ckpt").read_bytes()
    result = compare("lev", "ce", 1, tmp_path, train_fn=fake_train, progress=False)
    assert [r.status for r in result.records] == ["failed"]
    assert "no last.ckpt to resume" in str(result.records[0].error)
    assert (checkpoints / "best.ckpt").read_bytes() == data


def test_a_full_disk_while_drawing_the_plots_is_one_line_and_a_rerun_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import matplotlib.figure

    real_compare = compare_package.compare

    def with_fake_training(*args: Any, **kwargs: Any) -> Any:
        return real_compare(*args, **{**kwargs, "train_fn": fake_train})

    def full(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(compare_package, "compare", with_fake_training)
    argv = ["compare", "--dataset", "lev", "--losses", "ce", "--seeds", "1"]
    argv += ["--output", str(tmp_path / "out"), "--no-progress", "--no-baselines"]
    with monkeypatch.context() as patch:
        patch.setattr(matplotlib.figure.Figure, "savefig", full)
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot write" in err and ".png: No space left on device" in err, err
    # Space again: the same command finishes, the trained run is kept (skipped).
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "summary" in out.lower() or "Wrote" in out
