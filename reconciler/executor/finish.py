"""Steps that must not stop halfway when the action is cancelled (Ctrl-C in `apply`, the daemon's
shutdown grace running out).

Some steps leave two QEMUs of one instance if cut short: completing a migration (the target runs the
guest, the source's shell is still alive) or taking a failed migration's target down. `finish` lets such
a step end (each has its own deadlines), then lets the cancellation go on, carrying the step's result
so the caller can still account for what the step left (a launched QEMU, for example).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Generic, TypeVar

T = TypeVar("T")


class HeldCancel(asyncio.CancelledError, Generic[T]):
    """A cancellation held until a step ended; `result` is what the step returned (None if it failed or
    was itself cancelled). It is a CancelledError: the cancellation goes on once the caller has handled
    `result`."""

    def __init__(self, result: T | None) -> None:
        super().__init__()
        self.result = result


async def finish(step: Awaitable[T]) -> T:
    """Await `step` to its end even when this task is cancelled meanwhile (every cancellation is held
    until it ends); a held cancellation then goes on as HeldCancel, carrying the step's result (its
    error is superseded)."""
    work = asyncio.ensure_future(step)
    interrupted = False
    while not work.done():
        try:
            await asyncio.wait([work])  # unlike shield or wait_for, never cancels `work`
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        failed = work.cancelled() or work.exception() is not None  # retrieved: the cancellation supersedes it
        raise HeldCancel(None if failed else work.result())
    return work.result()
