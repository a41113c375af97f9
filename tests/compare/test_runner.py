"""compare never deletes a resumable run, and one output directory serves one compare at a time.

Issue 8, findings 3 and 8: any exception while resuming a run (a full disk, say) ended in
``shutil.rmtree(run_dir)`` and a restart from scratch; two ``compare`` commands into one
directory both trained every run.

Named for emdloss.compare._runner (runs kept on a failed resume); also covers _lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

# compare is part of the train extra: skipped on the minimal install.
pytest.importorskip("yaml")
pytest.importorskip("lightning")
pytest.importorskip("skordinal")

from emdloss import _atomic
from emdloss.compare import METRIC_KEYS, compare
from emdloss.compare._lock import LOCK_FILE
from emdloss.errors import UserError

SRC = Path(__file__).resolve().parents[2] / "src"


def fake_train(config: Any) -> SimpleNamespace:
    """Write a complete metrics.json whose values depend only on (loss, seed)."""
    run_dir = Path(config.output)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([config.seed, sum(map(ord, config.loss))])
    test = {rule: {k: float(rng.uniform()) for k in METRIC_KEYS} for rule in ("argmax",)}
    metrics = {"test": test, "val": test, "train_seconds": 0.25}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return SimpleNamespace(run_dir=run_dir, metrics=metrics, train_seconds=0.25)


class Recorder:
    def __init__(self, fail_resume: bool = False) -> None:
        self.calls: list[tuple[str, int, bool]] = []
        self.fail_resume = fail_resume

    def __call__(self, config: Any) -> SimpleNamespace:
        self.calls.append((config.loss, config.seed, config.resume))
        if config.resume and self.fail_resume:
            raise OSError(errno.ENOSPC, "No space left on device")
        return fake_train(config)


def _interrupted_run(root: Path) -> tuple[Path, dict[str, bytes]]:
    """A run killed after some epochs: checkpoints, no metrics.json."""
    run_dir = root / "runs" / "lev" / "emd2" / "seed0"
    files = {
        "checkpoints/last.ckpt": b"epoch 7 weights",
        "checkpoints/best.ckpt": b"epoch 5 weights",
        "config.yaml": b"loss: emd2\n",
        "history.csv": b"epoch,val_mae\n",
    }
    for name, data in files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(data)
    return run_dir, files


def _contents(run_dir: Path, names: Any) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in names}


def test_failed_resume_keeps_the_run_and_the_next_compare_retries(tmp_path: Path) -> None:
    run_dir, files = _interrupted_run(tmp_path)
    stale = run_dir / "checkpoints" / ".last.ckpt.a1b2c3d4.ckpt"  # the write the kill cut short
    stale.write_bytes(b"half")

    first = Recorder(fail_resume=True)  # the disk is full while resuming
    result = compare("lev", "ce,emd2", 1, tmp_path, train_fn=first, progress=False)
    assert first.calls == [("ce", 0, False), ("emd2", 0, True)]  # no restart from scratch
    assert [r.status for r in result.records] == ["done", "failed"]
    failed = result.records[1]
    assert failed.error is not None and "resume failed" in failed.error
    assert "No space left on device" in failed.error and "retries" in failed.error
    assert _contents(run_dir, files) == files  # every file of the run, byte for byte
    assert "OSError" in (run_dir / "error.txt").read_text(encoding="utf-8")
    assert "lev/emd2/seed0: resume failed" in result.summary
    assert not stale.exists()  # swept before resuming

    second = Recorder()
    result = compare("lev", "ce,emd2", 1, tmp_path, train_fn=second, progress=False)
    assert second.calls == [("emd2", 0, True)]  # the finished run skipped, this one resumed
    assert [r.status for r in result.records] == ["skipped", "done"]


@pytest.mark.parametrize("engine", ["per-run", "grouped"])
def test_failed_resume_with_the_real_trainer_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    # per-run resumes from last.ckpt, and a failed resume leaves the checkpoints as they were;
    # grouped checkpoints hold no loop state, so the grouped engine retrains an unfinished run
    # from its seed (the same numbers). Either way a re-run finishes the run.
    options = {"epochs": 2, "batch_size": 64}
    kwargs: dict[str, Any] = dict(train_options=options, progress=False, engine=engine)
    compare("lev", "emd2", 1, tmp_path, **kwargs)
    run_dir = tmp_path / "runs" / "lev" / "emd2" / "seed0"
    expected = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    (run_dir / "metrics.json").unlink()  # as if killed after the last checkpoint
    names = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.ckpt"))
    before = _contents(run_dir, names)

    real_atomic_path = _atomic.atomic_path

    @contextlib.contextmanager
    def disk_full(path: Any, **kwargs: Any) -> Iterator[Path]:
        # Every file the run would write fails as on a full disk; compare's own files do not.
        if Path(path).resolve().is_relative_to(run_dir.resolve()):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        with real_atomic_path(path, **kwargs) as tmp:
            yield tmp

    monkeypatch.setattr(_atomic, "atomic_path", disk_full)
    # Resuming a finished 2-epoch run from its last checkpoint writes only the results.
    result = compare("lev", "emd2", 1, tmp_path, **kwargs)
    assert [r.status for r in result.records] == ["failed"], result.records
    expected_error = "No space left on device"
    if engine == "per-run":
        expected_error = "resume failed (OSError: [Errno 28] " + expected_error
    assert expected_error in str(result.records[0].error)
    if engine == "per-run":
        assert _contents(run_dir, names) == before
    monkeypatch.undo()

    result = compare("lev", "emd2", 1, tmp_path, **kwargs)
    assert [r.status for r in result.records] == ["done"]
    again = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert again["test"] == expected["test"]


def test_checkpoints_without_last_ckpt_are_never_deleted(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "lev" / "ce" / "seed0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    recorder = Recorder()
    result = compare("lev", "ce", 1, tmp_path, train_fn=recorder, progress=False)
    assert recorder.calls == []
    assert result.records[0].status == "failed"
    assert "best.ckpt" in str(result.records[0].error)
    assert (run_dir / "checkpoints" / "best.ckpt").read_bytes() == b"weights"


def test_a_second_compare_into_the_same_directory_is_refused(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def slow_train(config: Any) -> SimpleNamespace:
        started.set()
        assert release.wait(30)
        return fake_train(config)

    def first() -> None:
        outcome["result"] = compare("lev", "ce", 1, tmp_path, train_fn=slow_train, progress=False)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(30)
        second = Recorder()
        with pytest.raises(UserError) as caught:
            compare("lev", "ce", 1, tmp_path, train_fn=second, progress=False)
        message = str(caught.value)
        assert "\n" not in message
        assert str(tmp_path) in message and f"PID {os.getpid()}" in message
        assert second.calls == []
    finally:
        release.set()
        thread.join()
    assert [r.status for r in outcome["result"].records] == ["done"]
    # Released at the end: the next compare goes ahead (and finds the run finished).
    assert [r.status for r in compare("lev", "ce", 1, tmp_path, progress=False).records] == [
        "skipped"
    ]


def test_a_lock_held_by_another_process_names_its_pid(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(SRC)!r})
        from emdloss.compare._lock import output_lock
        with output_lock({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            UserError, match=f"in use by another emdloss compare \\(PID {holder.pid}"
        ):
            compare("lev", "ce", 1, tmp_path, train_fn=Recorder(), progress=False)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # Killed holder: its lock went with it, the PID left in the file is stale and taken over.
    assert str(holder.pid) in (tmp_path / LOCK_FILE).read_text(encoding="utf-8")
    recorder = Recorder()
    compare("lev", "ce", 1, tmp_path, train_fn=recorder, progress=False)
    assert recorder.calls == [("ce", 0, False)]


# ------------------------------------------------------------------------------- --jobs
class _Pool:
    """A ProcessPoolExecutor stand-in that runs each submitted piece of work at once and
    records how many workers it was asked for and what they ran."""

    made: ClassVar[list[int]] = []
    ran: ClassVar[list[list[str]]] = []

    def __init__(self, workers: int, *args: Any) -> None:
        _Pool.made.append(workers)

    def submit(self, fn: Any, kind: str, items: Any, train_fn: Any) -> Any:
        from concurrent.futures import Future

        _Pool.ran.append([spec.label for spec, *_ in items])
        future: Future[Any] = Future()
        future.set_result(fn(kind, items, train_fn))
        return future

    def shutdown(self, **kwargs: Any) -> None:
        pass


def _jobs(tmp_path: Path, count: int) -> list[Any]:
    from emdloss.compare._plan import RunSpec

    specs = [RunSpec("lev", "ce", seed, None) for seed in range(count)]
    return [(spec, tmp_path / f"seed{spec.seed}", {}, 1) for spec in specs]


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> type[_Pool]:
    from emdloss.compare import _runner

    _Pool.made, _Pool.ran = [], []
    monkeypatch.setattr(_runner, "ProcessPoolExecutor", _Pool)
    monkeypatch.setattr(_runner, "_worker_context", lambda context: None)
    return _Pool


def test_one_piece_of_work_starts_no_worker_and_no_fork_server(
    tmp_path: Path, pool: type[_Pool]
) -> None:
    """Issue 20: --jobs 2 was slower than --jobs 1 when there was one group to train: a worker
    (and its fork server's imports) for work this process does as fast."""
    from emdloss.compare._runner import run_all

    records = run_all(_jobs(tmp_path, 1), jobs=4, train_fn=fake_train, progress=False)
    assert [r.status for r in records] == ["done"]
    assert pool.made == []


def test_this_process_trains_beside_jobs_minus_one_workers(
    tmp_path: Path, pool: type[_Pool]
) -> None:
    """--jobs J: J - 1 workers (never more than the work for them) take work from the back of
    the list while this process takes it from the front; every run once, in plan order."""
    from emdloss.compare._runner import run_all

    jobs = _jobs(tmp_path, 4)
    records = run_all(jobs, jobs=2, train_fn=fake_train, progress=False)
    assert pool.made == [1]
    assert pool.ran == [["lev/ce/seed3"], ["lev/ce/seed2"]]  # the rest ran here
    assert [r.spec for r in records] == [spec for spec, *_ in jobs]
    assert [r.status for r in records] == ["done"] * 4
    pool.made, pool.ran = [], []
    run_all(_jobs(tmp_path / "b", 3), jobs=8, train_fn=fake_train, progress=False)
    assert pool.made == [2]  # three pieces of work: two workers and this process


def test_this_process_trains_while_the_first_submit_waits_for_the_workers(
    tmp_path: Path, pool: type[_Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's first submit blocks while the fork server imports (seconds); this process
    trains its first piece meanwhile instead of waiting (it waited about 5 s under --jobs 2)."""
    from emdloss.compare import _runner

    trained_here = threading.Event()
    seen: list[bool] = []

    def train(config: Any) -> SimpleNamespace:
        if threading.current_thread() is threading.main_thread():
            trained_here.set()
        return fake_train(config)

    class SlowStart(_Pool):
        def submit(self, fn: Any, kind: str, items: Any, train_fn: Any) -> Any:
            if not seen:  # the first submit returns once the fork server is up
                seen.append(trained_here.wait(timeout=10))
            return super().submit(fn, kind, items, train_fn)

    monkeypatch.setattr(_runner, "ProcessPoolExecutor", SlowStart)
    records = _runner.run_all(_jobs(tmp_path, 4), jobs=2, train_fn=train, progress=False)
    assert seen == [True]
    assert pool.ran[0] == ["lev/ce/seed3"]
    assert [r.status for r in records] == ["done"] * 4


def test_only_large_groups_are_cut_for_workers() -> None:
    from emdloss.compare._runner import MIN_PIECE_RUNS, _split_groups

    small = [("group", list(range(12)))]
    assert _split_groups(small, 2) == small  # the default suite's groups: cheaper whole
    large = [("group", list(range(2 * MIN_PIECE_RUNS)))]
    assert _split_groups(large, 2) == [
        ("group", list(range(MIN_PIECE_RUNS))),
        ("group", list(range(MIN_PIECE_RUNS, 2 * MIN_PIECE_RUNS))),
    ]
    # Never a piece below MIN_PIECE_RUNS, whatever the number of processes.
    pieces = _split_groups([("group", list(range(3 * MIN_PIECE_RUNS - 1)))], 8)
    assert len(pieces) == 2 and all(len(m) >= MIN_PIECE_RUNS for _, m in pieces)
    works = [("group", list(range(10 * MIN_PIECE_RUNS))), ("run", [999])]
    assert _split_groups(works, 2) == works  # already two pieces of work for two processes
