"""Debouncing bursts of triggers into one reconcile.

A `git pull` rewrites many files within milliseconds; an editor writes a file in several steps (truncate,
write, rename). Reconciling after the first event would read a half-updated tree, and reconciling after
each would waste passes. So file events start a quiet period: the pass runs once no event has come for
`quiet` seconds, or `max_delay` after the first event at the latest (a tree that never stops changing
is still reconciled). Triggers that are not file events (a QEMU exit, SIGHUP, a resync) end the wait at
once: they are rare and urgent, and the pass looks at everything anyway.

`Debounce.fire_at` is the pure rule; `collect` applies it to an asyncio queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.values import Value
from reconciler.watch.triggers import Trigger, TriggerSource


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Debounce(Value):
    quiet: float = 0.1  # seconds without a file event before the pass runs
    max_delay: float = 2.0  # seconds after the first event, at the latest

    def fire_at(self, first: float, last: float) -> float:
        """When the pass runs, given the first and the latest event times of a burst."""
        return min(last + self.quiet, first + self.max_delay)


async def collect(queue: asyncio.Queue[Trigger], debounce: Debounce,
                  clock: Callable[[], float] | None = None) -> list[Trigger]:
    """Wait for a trigger, then gather the burst it starts; returns every trigger gathered (>= 1)."""
    now = clock or asyncio.get_running_loop().time
    got = [await queue.get()]
    got.extend(_drain(queue))
    if any(t.source is not TriggerSource.FILE for t in got):
        return got
    first = last = now()
    while True:
        remaining = debounce.fire_at(first, last) - now()
        if remaining <= 0:
            return got
        try:
            async with asyncio.timeout(remaining):
                trigger = await queue.get()
        except TimeoutError:
            return got
        got.append(trigger)
        got.extend(_drain(queue))
        if any(t.source is not TriggerSource.FILE for t in got):
            return got
        last = now()


def _drain(queue: asyncio.Queue[Trigger]) -> list[Trigger]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out
