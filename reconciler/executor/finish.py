"""Steps that must not stop halfway when the action is cancelled (Ctrl-C in `apply`, the daemon's
shutdown grace running out).

Some steps leave two QEMUs of one instance if cut short: completing a migration (the target runs the
guest, the source's shell is still alive) or taking a failed migration's target down. `finish` lets such
a step end (each has its own deadlines), then lets the cancellation go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def finish(step: Awaitable[T]) -> T:
    """Await `step` to its end even when this task is cancelled meanwhile (every cancellation is held
    until it ends); a held cancellation then goes on as CancelledError, superseding the step's result
    or error."""
    work = asyncio.ensure_future(step)
    interrupted = False
    while not work.done():
        try:
            await asyncio.wait([work])  # unlike shield or wait_for, never cancels `work`
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        if not work.cancelled():
            work.exception()  # retrieved: the cancellation supersedes it
        raise asyncio.CancelledError
    return work.result()
