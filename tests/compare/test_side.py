"""The side process of a comparison (emdloss.compare._side)."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

from emdloss.compare._side import SideProcess


class _BlockingPool:
    """A pool whose submit blocks until released, as a fork server's first start does."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        self.entered.set()
        assert self.release.wait(10)
        future: Future[Any] = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self.release.set()


def test_submit_returns_while_the_side_process_is_still_starting() -> None:
    # The pool's first submit starts the fork server and waits for its imports (seconds on the
    # project's machine): compare must not wait for it, or the overlap it exists for is lost.
    side = SideProcess.__new__(SideProcess)
    pool = _BlockingPool()
    side._pool = pool  # type: ignore[assignment]
    from concurrent.futures import ThreadPoolExecutor

    side._handover = ThreadPoolExecutor(1)
    future = side.submit(pow, 2, 10)
    assert future is not None
    assert pool.entered.wait(10)
    assert not future.done()  # submit came back while the pool was still starting
    pool.release.set()
    assert SideProcess.result(future, pow, 2, 10) == 1024
    side.close()


def test_work_the_side_process_cannot_deliver_is_done_here() -> None:
    failed: Future[int] = Future()
    failed.set_exception(RuntimeError("side process died"))
    assert SideProcess.result(failed, pow, 3, 2) == 9
    assert SideProcess.result(None, pow, 3, 2) == 9
