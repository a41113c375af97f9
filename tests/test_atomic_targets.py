"""Files a command is told to write: never a device, never inside a run, never over a file unasked,
and a full or read-only disk is one line.

Issue 21, items 1, 6 and 17: ``export --output`` / ``predict --output`` on a device node replaced
it with a regular file (``os.replace``; as root ``/dev/null`` itself); ``export --output
RUN/config.yaml`` or ``RUN/checkpoints/best.ckpt`` destroyed the run; any existing file was
overwritten silently; a full or read-only file system gave an OSError traceback.

Named for emdloss._atomic (check_target); the commands are driven through emdloss.cli.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from emdloss import _atomic
from emdloss._atomic import atomic_write, check_target, write_text
from emdloss.cli import main
from emdloss.errors import UserError
from tests._runs import write_grades


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "error:" in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    path = tmp_path / "new.csv"
    write_grades(path, 5, seed=3, with_target=False)
    return path


# ---------------------------------------------------------------------------- the writer
@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_the_atomic_writer_refuses_a_target_that_is_not_a_regular_file(
    tmp_path: Path, kind: str
) -> None:
    if kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
        expected = "a FIFO"
    elif kind == "directory":
        target = tmp_path / "folder"
        target.mkdir()
        expected = "a directory"
    else:
        target = Path("/dev/null")
        expected = "a character device"
    before = os.stat(target)
    with pytest.raises(UserError, match=f"refusing to write {target}: it is {expected}"):
        write_text(target, "x")
    after = os.stat(target)
    assert (after.st_ino, stat.S_IFMT(after.st_mode)) == (
        before.st_ino,
        stat.S_IFMT(before.st_mode),
    )


def test_the_atomic_writer_replaces_an_existing_file_only_when_told(tmp_path: Path) -> None:
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(UserError, match="exists; give --overwrite"):
        write_text(target, "new", overwrite=False)
    assert target.read_text() == "old"
    assert write_text(target, "new", overwrite=True).read_text() == "new"
    assert check_target(tmp_path / "absent.txt", overwrite=False) == tmp_path / "absent.txt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_failed_write_is_one_user_error_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    target = write_text(tmp_path / "p.csv", "old")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    # Where each errno strikes: the temporary file (read-only fs, no permission), the flush.
    where = "mkstemp" if code != errno.ENOSPC else "fsync"
    monkeypatch.setattr(tempfile if where == "mkstemp" else os, where, refuse)
    with pytest.raises(UserError, match=f"cannot write {target}: {os.strerror(code)}"):
        atomic_write(target, lambda handle: handle.write(b"new"))
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


# ---------------------------------------------------------------------------- predict
def test_predict_output_on_a_fifo_leaves_it_a_fifo(
    run: Path, rows: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    assert main(["predict", str(run), str(rows), "--output", str(pipe)]) == 2
    _one_line_error(capsys, str(pipe), "a FIFO, not a regular file")
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)


@pytest.mark.parametrize("inside", ["config.yaml", "checkpoints/best.ckpt", "data.json", "p.csv"])
def test_predict_never_writes_inside_a_run_directory(
    run: Path, rows: Path, capsys: pytest.CaptureFixture[str], inside: str
) -> None:
    target = run / inside
    before = target.read_bytes() if target.exists() else None
    for extra in ([], ["--overwrite"]):
        assert main(["predict", str(run), str(rows), "--output", str(target), *extra]) == 2
        _one_line_error(capsys, "inside the run directory")
        assert (target.read_bytes() if target.exists() else None) == before
    # The run still works.
    assert main(["predict", str(run), str(rows)]) == 0


def test_predict_replaces_an_existing_output_only_with_overwrite(
    run: Path, rows: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine.csv"
    out.write_text("precious\n")
    assert main(["predict", str(run), str(rows), "--output", str(out)]) == 2
    _one_line_error(capsys, str(out), "--overwrite")
    assert out.read_text() == "precious\n"
    assert main(["predict", str(run), str(rows), "--output", str(out), "--overwrite"]) == 0
    assert out.read_text().startswith("id,")


def test_predict_to_a_full_disk_is_one_line(
    run: Path,
    rows: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "p.csv"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_atomic.os, "fsync", full)
    assert main(["predict", str(run), str(rows), "--output", str(out)]) == 2
    _one_line_error(capsys, f"cannot write {out}: No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("p.", ".p."))) == []


# ---------------------------------------------------------------------------- export
def test_export_never_writes_inside_a_run_nor_over_a_file_unasked(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    for inside in ("config.yaml", "checkpoints/best.ckpt", "model.onnx"):
        target = run / inside
        before = target.read_bytes() if target.exists() else None
        assert main(["export", str(run), "--output", str(target), "--overwrite"]) == 2
        _one_line_error(capsys, "inside the run directory")
        assert (target.read_bytes() if target.exists() else None) == before
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"precious")
    assert main(["export", str(run), "--output", str(mine)]) == 2
    _one_line_error(capsys, str(mine), "--overwrite")
    assert mine.read_bytes() == b"precious"
    assert not Path(str(mine) + ".json").exists()


def test_export_to_a_read_only_file_system_is_one_line(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    real = tempfile.mkstemp

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        if str(kwargs.get("dir", "")).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    target = tmp_path / "ro" / "m.onnx"
    assert main(["export", str(run), "--output", str(target)]) == 2
    _one_line_error(capsys, f"cannot write {target}: Read-only file system")


def test_a_project_folder_with_its_own_config_is_not_a_run(
    run: Path, rows: Path, tmp_path: Path
) -> None:
    from emdloss.training.rundir import check_output, enclosing_run

    project = tmp_path / "project"
    (project / "out").mkdir(parents=True)
    (project / "config.yaml").write_text("tool: other\n")
    (project / "data.json").write_text("{}\n")
    assert enclosing_run(project / "out" / "p.csv") is None
    assert main(["predict", str(run), str(rows), "--output", str(project / "out" / "p.csv")]) == 0
    # The run a command reads is protected whatever it holds.
    (run / "checkpoints").rename(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="inside the run directory"):
        check_output(run / "p.csv", run_dir=run)
