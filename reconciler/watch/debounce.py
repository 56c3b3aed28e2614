"""Debouncing bursts of triggers into one reconcile.

A `git pull` rewrites many files within milliseconds; an editor writes a file in several steps (truncate,
write, rename). Reconciling after the first event would read a half-updated tree, and reconciling after
each would waste passes. So file events start a quiet period: the pass runs once no event has come for
`quiet` seconds, or `max_delay` after the first event at the latest (a tree that never stops changing
is still reconciled). Triggers that are not file events (a QEMU exit, SIGHUP, a resync) end the wait at
once: they are rare and urgent, and the pass looks at everything anyway.

A write that has visibly finished needs less: when the latest event of every path in the burst ends a
write (inotify's IN_CLOSE_WRITE after writing, or a rename into place, as deploy tools and most editors
write), the quiet period is `settle` (at most `quiet`), just long enough to gather the rest of a burst
(the files of a `git pull` follow each other within a millisecond or so). Any other latest event (a
file created, modified and still open, deleted, a directory) keeps the full `quiet`. Measured with
bench/bench_watch.py: the edit-to-running latency drops by about `quiet - settle`.

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
    """How long file events are gathered before a pass."""

    quiet: float = 0.1  # seconds without a file event before the pass runs
    max_delay: float = 2.0  # seconds after the first event, at the latest
    settle: float = 0.02  # the quiet period when every write of the burst has finished (capped by quiet)

    def fire_at(self, first: float, last: float, settled: bool = False) -> float:
        """When the pass runs, given the first and the latest event times of a burst, and whether every
        path's latest event finished its write."""
        wait = min(self.settle, self.quiet) if settled else self.quiet
        return min(last + wait, first + self.max_delay)


async def collect(queue: asyncio.Queue[Trigger], debounce: Debounce,
                  clock: Callable[[], float] | None = None) -> list[Trigger]:
    """Wait for a trigger, then gather the burst it starts; returns every trigger gathered (>= 1)."""
    now = clock or asyncio.get_running_loop().time
    got = [await queue.get()]
    got.extend(_drain(queue))
    if any(t.source is not TriggerSource.FILE for t in got):
        return got
    first = last = now()
    latest: dict[str | None, bool] = {}  # path -> whether its latest event finished a write
    _note(latest, got)
    while True:
        remaining = debounce.fire_at(first, last, all(latest.values())) - now()
        if remaining <= 0:
            return got
        try:
            async with asyncio.timeout(remaining):
                trigger = await queue.get()
        except TimeoutError:
            return got
        more = [trigger, *_drain(queue)]
        got.extend(more)
        if any(t.source is not TriggerSource.FILE for t in more):
            return got
        _note(latest, more)
        last = now()


def _note(latest: dict[str | None, bool], triggers: list[Trigger]) -> None:
    for t in triggers:
        for path in t.paths if t.paths is not None else (None,):  # None: a path we do not know
            latest[path] = t.settled and path is not None


def _drain(queue: asyncio.Queue[Trigger]) -> list[Trigger]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out
