"""Running the grid: skip finished runs, resume or restart half-finished ones, run in parallel."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from pathlib import Path
from typing import Any

from emdloss._atomic import remove_stale_temporaries, write_json, write_text
from emdloss.compare._plan import RunSpec, apply_setting
from emdloss.compare._records import (
    METRIC_KEYS,
    RECORD_FILE,
    RunRecord,
    finished_record,
)
from emdloss.errors import UserError
from emdloss.training.rundir import METRICS_FILE
from emdloss.vocabulary import ENGINES, EXECUTORS

__all__ = [
    "TrainFn",
    "build_config",
    "complete_deferred_tests",
    "execute_group",
    "plan_work",
    "run_all",
    "run_work",
    "worker_count",
]


#: A training function: ``train(config) -> RunResult`` (see :func:`emdloss.training.train`).
TrainFn = Callable[[Any], Any]
#: One run to execute: its spec, directory, train options and torch-thread cap.
Job = tuple[RunSpec, Path, Mapping[str, Any], "int | None"]


def _config_fields() -> set[str]:
    from emdloss.training import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def build_config(
    spec: RunSpec, run_dir: Path, options: Mapping[str, Any], *, resume: bool = False
) -> Any:
    """The :class:`emdloss.training.TrainConfig` of one run.

    Parameters
    ----------
    spec : RunSpec
        The run.
    run_dir : pathlib.Path
        Its output directory.
    options : Mapping
        Train options shared by every run of the data set (model, epochs, batch size, ...).
    resume : bool
        Continue from the run directory's last checkpoint.

    Returns
    -------
    TrainConfig
    """
    from emdloss.training import TrainConfig

    fields = _config_fields()
    kwargs = apply_setting(options, spec.setting)
    kwargs.update(dataset=spec.dataset, loss=spec.loss, seed=spec.seed, output=str(run_dir))
    if spec.fold is not None:
        kwargs.update(fold=spec.fold, num_folds=spec.num_folds)
    if resume:
        kwargs["resume"] = True
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise UserError(
            f"unknown train option(s) {', '.join(unknown)}; TrainConfig fields: "
            f"{', '.join(sorted(fields))}"
        )
    return TrainConfig(**kwargs)


def _checkpoints(run_dir: Path) -> list[Path]:
    # Every checkpoint the run holds (not the temporaries of an interrupted write).
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.rglob("*.ckpt") if not p.name.startswith("."))


def _has_checkpoint(run_dir: Path) -> bool:
    # The training writes checkpoints/last.ckpt at an interval and at its end.
    return any(p.name == "last.ckpt" for p in _checkpoints(run_dir))


def _cut_in_first_write(checkpoints: Sequence[Path]) -> bool:
    """Whether the run was stopped inside its first checkpoint write, so that restarting it
    loses at most one write interval of training.

    A run writes ``best.ckpt`` and then ``last.ckpt``, each atomically, once a
    ``CHECKPOINT_SECONDS`` interval of training has passed and at its end
    (:class:`emdloss.training._checkpoint.RunCheckpoints`); a lone readable ``best.ckpt`` is
    left only by a stop between the two files of the first write (a later stop keeps the
    previous ``last.ckpt``). Unreadable files, or any other checkpoint, are kept for a human.
    """
    from emdloss.training.rundir import BEST_CHECKPOINT, load_checkpoint

    if [path.name for path in checkpoints] != [BEST_CHECKPOINT]:
        return False
    try:
        epoch = load_checkpoint(checkpoints[0]).get("epoch")
    except (OSError, ValueError):
        return False
    return isinstance(epoch, int)


def _record_failure(run_dir: Path, message: str) -> None:
    # The traceback goes to error.txt. Failing to write it (a full disk is one reason runs
    # fail) must not stop the comparison: the message is in the run's record either way.
    try:
        write_text(run_dir / "error.txt", message)
    except (OSError, ValueError):  # ValueError: the UserError of a full disk (emdloss._atomic)
        pass


def _default_train() -> TrainFn:
    from emdloss.training import quiet_lightning_logs, train

    # Lightning's banner and tips, once per run, would drown the progress bar over runs.
    quiet_lightning_logs()
    return train


def execute(
    spec: RunSpec,
    run_dir: Path,
    options: Mapping[str, Any],
    train_fn: TrainFn | None,
    threads: int | None = None,
) -> RunRecord:
    """Run one cell: skip if finished, resume or restart if half-finished, else train.

    Errors of the training are caught and recorded (``status="failed"``, traceback in
    ``error.txt``) so that one diverging run does not stop the comparison; a
    :class:`KeyboardInterrupt` propagates.

    Parameters
    ----------
    spec : RunSpec
        The run.
    run_dir : pathlib.Path
        Its directory.
    options : Mapping
        Train options of its data set.
    train_fn : callable or None
        ``train(config) -> RunResult``; ``None`` for :func:`emdloss.training.train`.
    threads : int, optional
        Torch threads for this run (restored afterwards); ``None`` keeps the process's.

    Returns
    -------
    RunRecord
    """
    with _torch_threads(threads):
        return _execute(spec, run_dir, options, train_fn)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _execute(
    spec: RunSpec, run_dir: Path, options: Mapping[str, Any], train_fn: TrainFn | None
) -> RunRecord:
    record = finished_record(spec, run_dir, "skipped")
    if record is not None:
        return record
    train = train_fn if train_fn is not None else _default_train()
    # The grouped engine's checkpoints hold no loop state: such a run starts again.
    resume = _has_checkpoint(run_dir) and "resume" in _config_fields()
    resume = resume and not _grouped_checkpoint(run_dir)
    if run_dir.exists() and not resume:
        failed = _clear_unfinished(spec, run_dir)
        if failed is not None:
            return failed
    if resume:
        remove_stale_temporaries(run_dir)  # of the write the interruption cut short
    start = time.perf_counter()
    try:
        result = train(build_config(spec, run_dir, options, resume=resume))
        return _trained_record(spec, run_dir, options, result, start, resume)
    except Exception as error:
        return _failed_record(spec, run_dir, error, resume)


def _trained_record(
    spec: RunSpec,
    run_dir: Path,
    options: Mapping[str, Any],
    result: Any,
    start: float,
    resume: bool,
) -> RunRecord:
    """The record of a run that training returned from (raises if its files are incomplete)."""
    seconds = getattr(result, "train_seconds", None)
    train_seconds = float(seconds) if seconds is not None else time.perf_counter() - start
    write_json(run_dir / RECORD_FILE, {"train_seconds": train_seconds, "resumed": resume})
    record = finished_record(spec, run_dir, "done")
    if record is None or (not record.tested and options.get("evaluate_test", True)):
        raise RuntimeError(
            f"training returned but {run_dir / METRICS_FILE} is missing or lacks the test "
            f"metrics {', '.join(METRIC_KEYS)}"
        )
    record.train_seconds = train_seconds
    return record


def _failed_record(spec: RunSpec, run_dir: Path, error: BaseException, resume: bool) -> RunRecord:
    # A failed resume (full disk, unreadable checkpoint, ...) keeps the run directory and
    # its checkpoints: the next compare resumes again, and nothing trained is lost.
    reason = f"{type(error).__name__}: {error}"
    if resume:
        reason = (
            f"resume failed ({reason}); {run_dir} is kept and the next compare retries the resume"
        )
    with contextlib.suppress(OSError):
        run_dir.mkdir(parents=True, exist_ok=True)
    _record_failure(run_dir, "".join(traceback.format_exception(error)))
    return RunRecord(spec, run_dir, "failed", error=reason)


def _grouped_checkpoint(run_dir: Path) -> bool:
    """Whether the run's last.ckpt was written by the grouped engine (it holds no Lightning loop
    state to resume from; the grouped engine trains such a run again from the start)."""
    from emdloss.training.rundir import CHECKPOINT_DIR, LAST_CHECKPOINT, load_checkpoint

    if not (run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file():
        return False
    try:
        checkpoint = load_checkpoint(run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT)
    except (OSError, ValueError):
        return False
    return bool(checkpoint.get("emdloss_engine") == "grouped")


def _clear_unfinished(spec: RunSpec, run_dir: Path) -> RunRecord | None:
    """Remove a half-written run directory to train it again; a failed record instead when it
    holds checkpoints it cannot resume from (other than the grouped engine's)."""
    kept = _checkpoints(run_dir)
    if kept and (_grouped_checkpoint(run_dir) or _cut_in_first_write(kept)):
        # The grouped engine's (no loop state), or cut short between best.ckpt and last.ckpt of
        # its first write (a full disk, a kill): the restart repeats at most one write interval.
        kept = []
    if kept:
        # Trained weights are never deleted: a human decides what to do with them.
        message = (
            f"{run_dir} holds {', '.join(p.name for p in kept)} but no last.ckpt to resume "
            "from; move it away (or delete it) to train this run again"
        )
        _record_failure(run_dir, message + "\n")
        return RunRecord(spec, run_dir, "failed", error=message)
    shutil.rmtree(run_dir)  # half-written: start again from scratch
    return None


def execute_group(
    members: Sequence[tuple[RunSpec, Path, Mapping[str, Any]]], threads: int | None
) -> list[RunRecord]:
    """Train runs that share a shape as one model (:func:`emdloss.training.grouped.train_group`).

    Finished runs are skipped, half-finished ones without a checkpoint (or with the grouped
    engine's, which holds no loop state) start again, and a run whose directory holds other
    checkpoints but no ``last.ckpt`` fails as in :func:`execute`. Each run gets its own record;
    one failing run does not stop the others.

    Parameters
    ----------
    members : sequence of (RunSpec, run_dir, options)
        Runs whose configs share :func:`emdloss.training.grouped.group_key`.
    threads : int, optional
        Torch threads (restored afterwards).

    Returns
    -------
    list of RunRecord
        In the order of ``members``.
    """
    with _torch_threads(threads):
        return _execute_group(members)


def _execute_group(members: Sequence[tuple[RunSpec, Path, Mapping[str, Any]]]) -> list[RunRecord]:
    from emdloss.training import quiet_lightning_logs, train_group

    quiet_lightning_logs()
    records: list[RunRecord | None] = [None] * len(members)
    todo: list[int] = []
    for k, (spec, run_dir, _) in enumerate(members):
        record = finished_record(spec, run_dir, "skipped")
        if record is not None:
            records[k] = record
            continue
        if run_dir.exists():
            records[k] = _clear_unfinished(spec, run_dir)
            if records[k] is not None:
                continue
        todo.append(k)
    start = time.perf_counter()
    configs = []
    for k in todo:
        spec, run_dir, options = members[k]
        configs.append(build_config(spec, run_dir, options))
    try:
        results: list[Any] = list(train_group(configs))
    except Exception as error:  # a failure of the group as a whole: every run reports it
        results = [error] * len(todo)
    for k, result in zip(todo, results, strict=True):
        spec, run_dir, options = members[k]
        if isinstance(result, BaseException):
            records[k] = _failed_record(spec, run_dir, result, False)
            continue
        try:
            records[k] = _trained_record(spec, run_dir, options, result, start, False)
        except Exception as error:
            records[k] = _failed_record(spec, run_dir, error, False)
    return [record for record in records if record is not None]


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: What the fork server imports before it forks the workers (torch, Lightning, the trainer).
WORKER_PRELOAD = ("emdloss.compare._forkserver",)


def _worker_context(mp_context: str | None) -> Any:
    """The start method of the workers: by default a fork server that has imported
    :data:`WORKER_PRELOAD` once, so that every worker starts with torch and Lightning loaded
    (a spawned worker imported them again, seconds each) and ends without the interpreter's
    teardown; ``"spawn"`` where there is no fork server (Windows).

    The fork server itself runs no torch operation, so no thread pool is forked.
    """
    if mp_context is None:
        if "forkserver" not in multiprocessing.get_all_start_methods():
            return multiprocessing.get_context("spawn")
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(WORKER_PRELOAD))
        return context
    return multiprocessing.get_context(mp_context)


def _init_worker(threads: int) -> None:
    import gc

    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    # The modules the worker started with stay for its life: out of the collector's way (and
    # of copy-on-write: a collection would touch every page it shares with the fork server).
    gc.freeze()


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="compare", unit="run", disable=not enabled, file=sys.stderr)


def run_all(
    specs: Sequence[Job],
    *,
    jobs: int = 1,
    train_fn: TrainFn | None = None,
    progress: bool = True,
    mp_context: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    engine: str = "grouped",
) -> list[RunRecord]:
    """Run (or skip) every run, ``jobs`` at a time, with a progress bar over runs.

    Parameters
    ----------
    specs : sequence of (RunSpec, run_dir, options, threads)
        The runs in plan order; ``threads`` caps a run's torch threads (``None``: the
        process's, ``cores // jobs`` in a worker).
    jobs : int
        Parallel processes, this one included (1: only this one): at most ``jobs - 1`` workers,
        never more than there is work for (:func:`worker_count`). Each gets ``cores // jobs``
        torch threads.
    train_fn : callable or None
        Training function (must be picklable when ``jobs > 1``); given, every run trains with
        it, one at a time.
    progress : bool
        Show the progress bar.
    mp_context : str or None
        Multiprocessing start method for ``jobs > 1`` (default: a fork server that has imported
        the trainer once, see :func:`_worker_context`; ``"spawn"`` where there is none).
    executor : {"local", "ray"}
        ``"ray"`` runs each group (or run) as a Ray task (the same :func:`execute_group` and
        :func:`execute`, so results and resume are those of ``"local"``; a group never spans
        machines); ``jobs`` is then ignored: Ray schedules one task per CPU.
    ray_address : str, optional
        Address of a running Ray cluster to join; else a local instance (2 CPUs) is started.
    engine : {"grouped", "per-run"}
        ``"grouped"`` trains the runs that share a shape as one vectorised model
        (:mod:`emdloss.training.grouped`) and the others one at a time, saying which and why in
        one line on stderr; ``"per-run"`` trains every run alone.

    Returns
    -------
    list of RunRecord
        In plan order.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: expected an integer >= 1, got {jobs!r}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    records: list[RunRecord | None] = [None] * len(specs)
    todo: list[int] = []
    bar = _progress(len(specs), progress)
    try:
        # Finished runs first, so the bar shows how much is left.
        for index, (spec, run_dir, _, _) in enumerate(specs):
            record = finished_record(spec, run_dir, "skipped")
            if record is None:
                todo.append(index)
            else:
                records[index] = record
                bar.update(1)
        if todo and records:
            bar.set_postfix_str(f"{len(specs) - len(todo)} already done")
        works, note = plan_work(specs, todo, engine if train_fn is None else "per-run")
        for line in (grouped_line(works), note):
            if line:
                print(line, file=sys.stderr)
        if executor == "local" and jobs > 1:
            works = _split_groups(works, jobs)
        many = (
            _execute_ray(specs, works, train_fn, ray_address)
            if executor == "ray"
            else _execute_many(specs, works, jobs, train_fn, mp_context)
        )
        for index, record in many:
            records[index] = record
            bar.set_postfix_str(f"{record.spec.label} {record.status}")
            bar.update(1)
    finally:
        bar.close()
    return [record for record in records if record is not None]


#: One piece of work for a worker: ``("group", indices)`` trains the runs as one model,
#: ``("run", [index])`` one run on the per-run path.
Work = tuple[str, list[int]]


def plan_work(specs: Sequence[Job], todo: Sequence[int], engine: str) -> tuple[list[Work], str]:
    """Split the runs to train into groups and per-run runs, and say why runs train alone.

    Parameters
    ----------
    specs : sequence of Job
        Every run of the plan.
    todo : sequence of int
        Indices of the runs to train.
    engine : {"grouped", "per-run"}
        With ``"per-run"`` every run is its own piece of work.

    Returns
    -------
    works : list of Work
        Groups first (in plan order of their first run), then the per-run runs.
    note : str
        One line naming the runs that fall back to the per-run path and why (``""``: none).
    """
    if engine == "per-run" or not todo:
        return [("run", [i]) for i in todo], ""
    from emdloss.training import group_key, why_not_grouped

    groups: dict[tuple[Any, ...], list[int]] = {}
    alone: list[int] = []
    reasons: dict[str, list[str]] = {}
    for index in todo:
        spec, run_dir, options, threads = specs[index]
        config = build_config(spec, run_dir, options)
        reason = why_not_grouped(config)
        if reason is None and config.model is None:
            reason = "no model named (the data's default)"
        if reason is None and _has_checkpoint(run_dir) and not _grouped_checkpoint(run_dir):
            reason = "a resume from its last checkpoint"
        if reason is not None:
            alone.append(index)
            reasons.setdefault(reason, []).append(spec.label)
            continue
        groups.setdefault((group_key(config), threads), []).append(index)
    works: list[Work] = [("group", members) for members in groups.values()]
    works += [("run", [index]) for index in alone]
    note = ""
    if reasons:
        parts = []
        for reason, labels in reasons.items():
            shown = ", ".join(labels[:3]) + (", ..." if len(labels) > 3 else "")
            parts.append(f"{len(labels)} run(s) for {reason} ({shown})")
        note = "compare: per-run engine for " + "; ".join(parts)
    return works, note


def grouped_line(works: Sequence[Work]) -> str:
    """One line saying how many runs train grouped, in how many groups (``""``: none).

    Examples
    --------
    >>> grouped_line([("group", [0, 1, 2]), ("group", [3, 4]), ("run", [5])])
    'compare: grouped engine for 5 run(s) in 2 group(s) of 3, 2'
    """
    sizes = [len(members) for kind, members in works if kind == "group"]
    if not sizes:
        return ""
    return (
        f"compare: grouped engine for {sum(sizes)} run(s) in {len(sizes)} group(s) of "
        + ", ".join(map(str, sizes))
    )


#: The fewest runs of a piece when a group is cut for parallel workers. A worker's start (its
#: fork server imports torch and Lightning: seconds of CPU) costs more than training a dozen
#: tabular runs as one group (issue 20: ``--jobs 2`` was 1.6x slower than ``--jobs 1`` on 8
#: runs, cut into two pieces of 4): only large groups are worth cutting.
MIN_PIECE_RUNS = 24


def _split_groups(works: list[Work], processes: int) -> list[Work]:
    """Groups cut into pieces so that ``processes`` processes have work (a run's numbers do not
    depend on the other runs of its group), each piece at least :data:`MIN_PIECE_RUNS` runs."""
    groups = [w for w in works if w[0] == "group"]
    if not groups or len(works) >= processes:
        return works
    pieces = math.ceil(processes / len(groups))
    out: list[Work] = []
    for kind, members in works:
        count = min(pieces, len(members) // MIN_PIECE_RUNS) if kind == "group" else 1
        if count <= 1:
            out.append((kind, members))
            continue
        size = math.ceil(len(members) / count)
        out += [(kind, members[i : i + size]) for i in range(0, len(members), size)]
    return out


def worker_count(jobs: int, works: int) -> int:
    """Worker processes to start for ``works`` pieces of work with ``--jobs jobs``.

    This process trains too (it has torch and Lightning loaded already, and would otherwise
    only wait), so ``jobs`` processes means ``jobs - 1`` workers; never more workers than there
    is work for the others: one piece of work (or ``--jobs 1``) starts none, and no fork
    server.

    Examples
    --------
    >>> worker_count(1, 10), worker_count(2, 1), worker_count(2, 4), worker_count(8, 3)
    (0, 0, 1, 2)
    """
    return max(0, min(jobs - 1, works - 1))


def run_work(kind: str, items: Sequence[Job], train_fn: TrainFn | None) -> list[RunRecord]:
    """Execute one piece of work: a group (:func:`execute_group`) or one run (:func:`execute`)."""
    if kind == "group":
        return execute_group([(s, d, o) for s, d, o, _ in items], items[0][3])
    spec, run_dir, options, threads = items[0]
    return [execute(spec, run_dir, options, train_fn, threads)]


def _execute_many(
    specs: Sequence[Job],
    works: Sequence[Work],
    jobs: int,
    train_fn: TrainFn | None,
    mp_context: str | None,
) -> Iterator[tuple[int, RunRecord]]:
    """Run the pieces of work: this process takes them from the front of the list, the
    :func:`worker_count` workers (if any) from the back, so that a worker still starting never
    holds up the work this process could do meanwhile.

    The workers' first pieces are set aside before anything runs and handed over by a thread:
    the pool's first ``submit`` waits for the fork server's imports (seconds), and this process
    trains its first piece meanwhile. It takes the thread's futures after that piece, whatever
    the timing, so which piece runs where depends on the plan and the workers' progress only.
    """
    workers = worker_count(jobs, len(works))
    if workers == 0:
        for kind, members in works:
            records = run_work(kind, [specs[i] for i in members], train_fn)
            yield from zip(members, records, strict=True)
        return
    threads = max(1, available_cores() // jobs)
    # Here as in a worker: cores // jobs torch threads for a run that names none.
    mine = [(s, d, o, t if t is not None else threads) for s, d, o, t in specs]
    queue = list(works)
    executor = ProcessPoolExecutor(workers, _worker_context(mp_context), _init_worker, (threads,))
    pending: dict[Future[list[RunRecord]], list[int]] = {}

    def submit(kind: str, members: list[int]) -> tuple[Future[list[RunRecord]], list[int]]:
        return executor.submit(run_work, kind, [specs[i] for i in members], train_fn), members

    def feed() -> None:  # every idle worker gets the last piece of work
        while queue and len(pending) < workers:
            future, members = submit(*queue.pop())
            pending[future] = members

    first = [queue.pop() for _ in range(min(workers, len(queue) - 1))]
    handover = ThreadPoolExecutor(1, thread_name_prefix="emdloss-handover")
    handed: Future[list[tuple[Future[list[RunRecord]], list[int]]]] | None = handover.submit(
        lambda: [submit(*piece) for piece in first]
    )
    try:
        while queue or pending or handed is not None:
            if queue:
                kind, members = queue.pop(0)
                records = run_work(kind, [mine[i] for i in members], train_fn)
                yield from zip(members, records, strict=True)
            if handed is not None:
                pending.update(handed.result())  # re-raises what the hand-over raised
                handed = None
            if queue:
                done = {future for future in pending if future.done()}
            elif pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
            else:
                done = set()
            for future in done:
                yield from zip(pending.pop(future), future.result(), strict=True)
            feed()
    finally:
        handover.shutdown(wait=True)
        executor.shutdown(wait=True, cancel_futures=True)


#: CPUs of the local Ray instance that ``--executor ray`` starts without ``--ray-address``.
RAY_LOCAL_CPUS = 2


def _ray_execute(kind: str, items: Sequence[Job], train_fn: TrainFn | None) -> list[RunRecord]:
    # One CPU per task: one torch thread unless the plan asks otherwise.
    threads = items[0][3] or 1
    os.environ["OMP_NUM_THREADS"] = str(threads)
    items = [(s, d, o, t or 1) for s, d, o, t in items]
    return run_work(kind, items, train_fn)


def _execute_ray(
    specs: Sequence[Job], works: Sequence[Work], train_fn: TrainFn | None, address: str | None
) -> Iterator[tuple[int, RunRecord]]:
    """Run each piece of work (a group, or one run) as a Ray task; yield records as tasks finish.

    A group is one task, so it never spans machines. The run directories must be reachable
    from the workers under the same paths (one machine, or a shared file system on a cluster).
    """
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "--executor ray needs Ray; install the ray extra: pip install 'emdloss[ray]'"
        ) from error
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=RAY_LOCAL_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_execute)
        pending = {
            remote.remote(kind, [specs[i] for i in members], train_fn): members
            for kind, members in works
        }
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield from zip(pending.pop(ref), ray.get(ref), strict=True)
    finally:
        if started:
            ray.shutdown()


def complete_deferred_tests(
    records: Sequence[RunRecord], test_fn: Callable[[Path], Any] | None
) -> list[RunRecord]:
    """The records, each run trained without its test evaluation now tested (in order).

    A run whose deferred test fails becomes a failed record (reported, retried next time), like
    a run whose training failed.
    """
    if all(r.status == "failed" or r.tested for r in records):
        return list(records)
    if test_fn is None:
        from emdloss.training import run_deferred_test

        test_fn = run_deferred_test
    out: list[RunRecord] = []
    for record in records:
        if record.status == "failed" or record.tested:
            out.append(record)
            continue
        try:
            test_fn(record.run_dir)
            tested = finished_record(record.spec, record.run_dir, record.status)
            if tested is None or not tested.tested:
                raise RuntimeError(f"{record.run_dir / METRICS_FILE} still lacks test metrics")
        except Exception as error:
            reason = f"test evaluation failed: {type(error).__name__}: {error}"
            out.append(RunRecord(record.spec, record.run_dir, "failed", error=reason))
            continue
        if not math.isnan(record.train_seconds):
            tested.train_seconds = record.train_seconds
        out.append(tested)
    return out
