"""Debounce: the pure rule (quiet period, max delay) and `collect` on a real asyncio queue."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from reconciler.watch.debounce import Debounce, collect
from reconciler.watch.triggers import Trigger, TriggerSource

T = TypeVar("T")
FILE = Trigger(TriggerSource.FILE, "modified a.yaml")


@pytest.mark.parametrize(("first", "last", "fire"), [
    (0.0, 0.0, 0.1),  # a single event: after the quiet period
    (0.0, 0.5, 0.6),  # the last event restarts the quiet period
    (0.0, 1.95, 2.0),  # never later than max_delay after the first
    (10.0, 13.0, 12.0),
])
def test_fire_at(first: float, last: float, fire: float) -> None:
    assert Debounce(0.1, 2.0).fire_at(first, last) == pytest.approx(fire)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 10.0))


def test_burst_is_one_collection() -> None:
    async def main() -> tuple[list[Trigger], float]:
        q: asyncio.Queue[Trigger] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for i in range(5):  # 5 events 20 ms apart: one burst
            loop.call_later(i * 0.02, q.put_nowait, FILE)
        t0 = loop.time()
        got = await collect(q, Debounce(0.1, 2.0))
        return got, loop.time() - t0

    got, took = run(main())
    assert len(got) == 5
    assert 0.18 <= took < 1.0  # last event at 80 ms + 100 ms quiet


def test_events_after_the_quiet_period_are_left_for_the_next_pass() -> None:
    async def main() -> tuple[int, int]:
        q: asyncio.Queue[Trigger] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        q.put_nowait(FILE)
        loop.call_later(0.4, q.put_nowait, FILE)
        first = await collect(q, Debounce(0.05, 2.0))
        second = await collect(q, Debounce(0.05, 2.0))
        return len(first), len(second)

    assert run(main()) == (1, 1)


def test_max_delay_bounds_an_endless_burst() -> None:
    async def main() -> float:
        q: asyncio.Queue[Trigger] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for i in range(60):  # an event every 10 ms for 0.6 s
            loop.call_later(i * 0.01, q.put_nowait, FILE)
        t0 = loop.time()
        await collect(q, Debounce(0.1, 0.25))
        return loop.time() - t0

    took = run(main())
    assert 0.24 <= took < 0.5


def test_non_file_trigger_ends_the_wait_at_once() -> None:
    async def main() -> tuple[list[TriggerSource], float]:
        q: asyncio.Queue[Trigger] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        q.put_nowait(FILE)
        loop.call_later(0.02, q.put_nowait, Trigger(TriggerSource.QEMU, "vm exited"))
        t0 = loop.time()
        got = await collect(q, Debounce(5.0, 10.0))
        return [t.source for t in got], loop.time() - t0

    sources, took = run(main())
    assert sources == [TriggerSource.FILE, TriggerSource.QEMU]
    assert took < 1.0
