"""Watching a QEMU process for its exit, on the host that runs it: a pidfd, and the pidfile's evidence.

Why its own module: the watch daemon watches its local QEMUs with this, and the remote agent watches
its host's QEMUs with the very same code on behalf of a daemon elsewhere (reconciler.remote.hostops), so
an exit is seen the instant it happens wherever the process runs, and the pidfile is looked at right
then, on that host (QEMU removes it on a clean exit: the evidence that tells a handled signal or a quit
from a kill or a crash when no SHUTDOWN event was seen).

Watching never signals, so the identity check is the start time alone (a reused PID has another one).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

import psutil

from reconciler.pidfd import ProcessHandle
from reconciler.values import Value


class Ended(enum.StrEnum):
    GONE = "gone"  # no such process (or another one with that PID) when the watch began
    EXITED = "exited"  # it exited while watched
    RUNNING = "running"  # still running when the watch's time was up


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class ExitSeen(Value):
    """How one watch on a process ended."""

    ended: Ended
    pidfile_left: bool | None = None  # with a pidfile to look at: was it still there when the end was seen


def same_process(pid: int, started_at: float | None) -> bool:
    """Watching only (never signalling): the start time is enough to refuse a reused PID."""
    if started_at is None:
        return True
    try:
        return abs(psutil.Process(pid).create_time() - started_at) < 0.05
    except psutil.Error:
        return False


async def watch_exit(pid: int, started_at: float | None, pidfile: str | None, timeout: float) -> ExitSeen:
    """Wait up to `timeout` seconds for `pid` (started at `started_at`) to exit."""
    handle = ProcessHandle.open_verified(pid, lambda p: same_process(p, started_at))
    if handle is None:  # exited before the watch began: the pidfile's evidence is looked at all the same
        return ExitSeen(Ended.GONE, os.path.lexists(pidfile) if pidfile else None)
    with handle:
        if not await handle.wait_exit(timeout):
            return ExitSeen(Ended.RUNNING)
    return ExitSeen(Ended.EXITED, os.path.lexists(pidfile) if pidfile else None)
