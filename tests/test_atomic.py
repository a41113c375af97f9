"""Atomic writes: ordinary modes without touching the umask, and no temporaries left behind.

Issue 8, finding 7: ``_atomic`` set the process umask around every write, so files that other
threads created meanwhile came out 0666; a write killed mid-way left ``.last.ckpt.XXXX.ckpt``
(0600) that nothing removed; downloaded data files were 0600.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from emdloss import _atomic
from emdloss._atomic import (
    atomic_write,
    file_mode,
    remove_stale_temporaries,
    write_bytes,
    write_text,
)
from emdloss.data._download import download_file
from emdloss.errors import UserError

SRC = Path(_atomic.__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_file_mode_follows_the_umask(umask_022: None) -> None:
    assert file_mode() == 0o644
    os.umask(0o027)
    assert file_mode() == 0o640


def test_written_and_downloaded_files_get_ordinary_modes(tmp_path: Path, umask_022: None) -> None:
    assert _mode(write_text(tmp_path / "a.txt", "x")) == 0o644
    pytest.importorskip("tqdm")  # downloads are part of the train extra
    source = tmp_path / "src.bin"
    source.write_bytes(b"abc")
    data = download_file(
        source.as_uri(),
        tmp_path / "data" / "copy.bin",
        md5="900150983cd24fb0d6963f7d28e17f72",
        progress=False,
    )
    assert _mode(data) == 0o644  # was 0600: a private temporary renamed into place


def test_writes_never_change_the_process_umask(
    tmp_path: Path, umask_022: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _atomic._HAS_PROC_UMASK:
        pytest.skip("no Umask line in /proc/self/status: the module reads the umask at import")

    def forbidden(mask: int) -> int:
        raise AssertionError(f"os.umask({mask:#o}) called during a write")

    monkeypatch.setattr(os, "umask", forbidden)
    write_bytes(tmp_path / "b.bin", b"x")
    assert _mode(tmp_path / "b.bin") == 0o644


def test_a_thread_creating_files_during_writes_sees_the_right_umask(
    tmp_path: Path, umask_022: None
) -> None:
    stop = threading.Event()
    modes: set[int] = set()

    def create_files() -> None:
        count = 0
        while not stop.is_set():
            path = tmp_path / "plain" / f"{count % 50}.txt"
            path.unlink(missing_ok=True)
            with open(path, "w") as handle:
                handle.write("x")
            modes.add(_mode(path))
            count += 1

    (tmp_path / "plain").mkdir()
    thread = threading.Thread(target=create_files)
    thread.start()
    try:
        for index in range(300):
            write_text(tmp_path / "atomic" / f"{index % 10}.txt", str(index))
    finally:
        stop.set()
        thread.join()
    assert modes == {0o644}
    assert {_mode(p) for p in (tmp_path / "atomic").iterdir()} == {0o644}


def test_leftover_temporaries_are_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    legacy = tmp_path / ".last.ckpt.a1b2c3d4.ckpt"  # the old naming, without a PID
    killed = tmp_path / f".last.ckpt.{dead_pid}.k9x8y7z6.ckpt"
    other = tmp_path / ".best.ckpt.a1b2c3d4.ckpt"  # another file's: left for its own next write
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = tmp_path / f".last.ckpt.{alive.pid}.q1w2e3r4.ckpt"  # a live writer's: kept
        for path in (legacy, killed, other, busy):
            path.write_bytes(b"half")
        write_bytes(target, b"whole")
        assert target.read_bytes() == b"whole"
        assert not legacy.exists() and not killed.exists()
        assert other.exists() and busy.exists()
    finally:
        alive.kill()
        alive.wait()


def test_kill_9_mid_write_then_next_write_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    write_bytes(target, b"epoch 1")
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(SRC)!r})
        from emdloss._atomic import atomic_write
        def slow(handle):
            handle.write(b"epoch 2, half")
            handle.flush()
            print("writing", flush=True)
            time.sleep(60)
        atomic_write({str(target)!r}, slow)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    leftovers = [p for p in target.parent.iterdir() if p.name != "last.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".last.ckpt.{child.pid}.")
    assert target.read_bytes() == b"epoch 1"  # the previous file, never a mix
    write_bytes(target, b"epoch 2")
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_directory_sweep_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"w")
    stale = run / "checkpoints" / ".last.ckpt.a1b2c3d4.ckpt"
    stale.write_bytes(b"half")
    own_file = run / ".notes.abcdefgh"  # looks like an old temporary, but has no target beside it
    own_file.write_text("mine")
    assert remove_stale_temporaries(run) == [stale]
    assert own_file.exists()


def test_a_write_in_progress_is_not_swept(tmp_path: Path) -> None:
    seen: list[bool] = []

    def write(handle: object) -> None:
        remove_stale_temporaries(tmp_path)  # e.g. another thread resuming meanwhile
        seen.append(any(p.name.startswith(".f.txt.") for p in tmp_path.iterdir()))

    atomic_write(tmp_path / "f.txt", write)  # type: ignore[arg-type]
    assert seen == [True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_text(tmp_path / "m.json", "old")

    def fail(handle: object) -> None:
        raise OSError(28, "No space left on device")

    # A full disk is the user's to fix: one UserError naming the file (issue 21, item 17).
    with pytest.raises(UserError, match=r"cannot write .*m\.json: No space left on device"):
        atomic_write(target, fail)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
