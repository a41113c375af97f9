"""Thread- and task-safe settings (issue 9): the validation switch, the implementation choice
and the ground-distance cache live in ContextVars, so a block in one thread or asyncio task
never changes what another computes.

Named for emdloss._ordinal (the implementation choice); also covers emdloss._validation's switch
and emdloss.ground's cache.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

import emdloss
from emdloss import _ordinal
from emdloss import functional as EF
from emdloss.ground import ordinal_ground_distance


def _run_in_thread(fn: object) -> list[object]:
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(fn()))  # type: ignore[operator]
    thread.start()
    thread.join()
    return box


def test_validation_block_does_not_leak_into_another_thread() -> None:
    """Regression: ``with validation(False)`` in one thread switched the checks off everywhere."""
    bad = torch.full((2, 3), 0.3)  # rows sum to 0.9: rejected while checks are on
    inside = threading.Event()
    leave = threading.Event()
    seen: dict[str, object] = {}

    def holder() -> None:
        with emdloss.validation(False):
            seen["holder"] = emdloss.is_validation_enabled()
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert inside.wait(10)
        assert seen["holder"] is False
        assert emdloss.is_validation_enabled()  # this thread still checks
        with pytest.raises(ValueError, match=r"sums to 0.9"):
            EF.squared_emd(torch.zeros(2, 3), bad)
    finally:
        leave.set()
        thread.join()


def test_validation_block_in_the_main_thread_is_not_seen_by_a_worker() -> None:
    with emdloss.validation(False):
        assert _run_in_thread(emdloss.is_validation_enabled) == [True]
    emdloss.set_validation(False)  # the process-wide default applies to every thread
    try:
        assert _run_in_thread(emdloss.is_validation_enabled) == [False]
        with emdloss.validation(True):  # and a block overrides it here only
            assert emdloss.is_validation_enabled()
            assert _run_in_thread(emdloss.is_validation_enabled) == [False]
    finally:
        emdloss.set_validation(True)


def test_implementation_block_is_per_thread() -> None:
    default = emdloss.current_implementation()  # "fused" unless EMDLOSS_CPU_KERNEL=1
    with _ordinal.implementation("reference"):
        assert emdloss.current_implementation() == "reference"
        assert _run_in_thread(emdloss.current_implementation) == [default]
    assert emdloss.current_implementation() == default


def test_settings_are_per_asyncio_task() -> None:
    async def task(name: str, gate: asyncio.Event, other: asyncio.Event) -> tuple[str, bool]:
        with _ordinal.implementation(name), emdloss.validation(name == "reference"):
            gate.set()
            await other.wait()  # both blocks are open at the same time
            return emdloss.current_implementation(), emdloss.is_validation_enabled()

    async def main() -> list[tuple[str, bool]]:
        a, b = asyncio.Event(), asyncio.Event()
        return list(await asyncio.gather(task("reference", a, b), task("library", b, a)))

    assert asyncio.run(main()) == [("reference", True), ("library", False)]
    assert emdloss.is_validation_enabled()


def test_ground_distance_cache_is_per_thread() -> None:
    """Two threads with different ground distances each get their own, correct, result."""
    logits = torch.randn(64, 5, dtype=torch.float64)
    target = torch.randint(0, 5, (64,))
    i = torch.arange(5, dtype=torch.float64)
    mats = [(i[:, None] - i[None, :]).abs() ** p for p in (1.0, 2.0)]
    expected = [
        (logits.softmax(1) * m[:, target].t()).sum(1).mean() for m in mats
    ]  # sum_i p_i D[i, y]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for _ in range(200):
                got = EF.ground_emd(logits, target, mats[k])
                torch.testing.assert_close(got, expected[k])
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("squared_emd", lambda x, y: EF.squared_emd(x, y)),
        ("squared_emd positions", lambda x, y: EF.squared_emd(x, y, positions=[0, 1, 3, 4])),
        ("emd", lambda x, y: EF.emd(x, y)),
        ("emd p=2", lambda x, y: EF.emd(x, y, p=2)),
        ("ground_emd", lambda x, y: EF.ground_emd(x, y, ordinal_ground_distance(4))),
    ],
)
def test_the_implementation_is_chosen_once_per_call(
    name: str, call: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 19): squared_emd read the setting and the environment twice per call,
    in functional and again in _ordinal; now _ordinal.choose decides once and passes it on."""
    from emdloss import _cpu_kernel

    reads = {"setting": 0, "environment": 0}
    setting, mode = _ordinal.current_implementation, _cpu_kernel.mode

    def counted_setting() -> str:
        reads["setting"] += 1
        return setting()

    def counted_mode() -> str:
        reads["environment"] += 1
        return mode()

    monkeypatch.setattr(_ordinal, "current_implementation", counted_setting)
    monkeypatch.setattr(_cpu_kernel, "mode", counted_mode)
    monkeypatch.delenv("EMDLOSS_CPU_KERNEL", raising=False)
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1])
    call(x, y)  # type: ignore[operator]
    assert reads == {"setting": 1, "environment": 1}, name
