"""Debounce: the pure rule (quiet period, max delay, settled writes) and `collect` on a real asyncio queue."""

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


@pytest.mark.parametrize(("debounce", "settled", "fire"), [
    (Debounce(0.1, 2.0, 0.02), True, 0.52),  # every write finished: the short settle period
    (Debounce(0.1, 2.0, 0.02), False, 0.6),  # one still open or deleted: the full quiet period
    (Debounce(0.01, 2.0, 0.02), True, 0.51),  # settle never exceeds quiet
    (Debounce(0.0, 2.0, 0.02), True, 0.5),
    (Debounce(0.1, 0.51, 0.02), True, 0.51),  # max_delay still bounds it
])
def test_fire_at_settled(debounce: Debounce, settled: bool, fire: float) -> None:
    assert debounce.fire_at(0.0, 0.5, settled) == pytest.approx(fire)


def file_event(kind: str, path: str) -> Trigger:
    return Trigger(TriggerSource.FILE, f"{kind} {path}", (path,), settled=kind in ("closed", "moved"))


@pytest.mark.parametrize(("events", "short"), [
    ([("moved", "a.yaml")], True),  # renamed into place (a deploy tool, most editors)
    ([("created", "a.yaml"), ("modified", "a.yaml"), ("closed", "a.yaml")], True),  # written and closed
    ([("closed", "a.yaml"), ("closed", "b.yaml")], True),
    ([("created", "a.yaml"), ("modified", "a.yaml")], False),  # still open
    ([("closed", "a.yaml"), ("modified", "b.yaml")], False),  # b is not finished
    ([("closed", "a.yaml"), ("modified", "a.yaml")], False),  # written again after the close
    ([("deleted", "a.yaml")], False),  # perhaps half of a git checkout
    ([("closed", "a.yaml"), ("deleted", "b.yaml")], False),
])
def test_a_burst_of_finished_writes_waits_only_the_settle_period(events: list[tuple[str, str]],
                                                                  short: bool) -> None:
    async def main() -> tuple[int, float]:
        q: asyncio.Queue[Trigger] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for i, (kind, path) in enumerate(events):  # 5 ms apart: one burst either way
            loop.call_later(i * 0.005, q.put_nowait, file_event(kind, path))
        t0 = loop.time()
        got = await collect(q, Debounce(1.0, 5.0, 0.15))
        return len(got), loop.time() - t0

    n, took = run(main())
    assert n == len(events)
    assert (took < 0.8) if short else (1.0 <= took < 3.0), took


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
