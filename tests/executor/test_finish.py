"""executor.finish: a step that must not stop halfway ends before a cancellation goes on."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.executor.finish import HeldCancel, finish


async def _step(log: list[str], fail: bool = False) -> str:
    log.append("begin")
    await asyncio.sleep(0.05)
    log.append("end")
    if fail:
        raise ValueError("step failed")
    return "done"


def test_a_step_not_cancelled_returns_its_result() -> None:
    log: list[str] = []
    assert asyncio.run(finish(_step(log))) == "done"
    assert log == ["begin", "end"]


def test_a_step_error_propagates() -> None:
    with pytest.raises(ValueError, match="step failed"):
        asyncio.run(finish(_step([], fail=True)))


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("cancels", [1, 3])
def test_cancelled_meanwhile_the_step_ends_then_the_cancellation_goes_on(cancels: int, fail: bool) -> None:
    log: list[str] = []
    held: list[object] = []

    async def caller() -> None:
        try:
            await finish(_step(log, fail))
        except HeldCancel as cancel:  # the caller sees what the step left, then lets the cancellation go on
            held.append(cancel.result)
            raise

    async def main() -> None:
        task = asyncio.ensure_future(caller())
        for _ in range(cancels):
            await asyncio.sleep(0.01)
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        log.append("cancelled")

    asyncio.run(main())
    assert log == ["begin", "end", "cancelled"]
    assert held == [None if fail else "done"]
