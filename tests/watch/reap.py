"""Kill every QEMU recorded under some state directories, verified (psutil create_time + cmdline) and
pinned by a pidfd first: what the daemon started is not the test's child, so this is how tests clean up."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterable

import psutil

from reconciler import layout, procs, statedir
from reconciler.errors import RecordError
from reconciler.model import NodeSpec
from reconciler.pidfd import ProcessHandle

EXIT_TIMEOUT = 10.0


def _ours(pid: int, ctime: float, argv: tuple[str, ...]) -> ProcessHandle | None:
    def verify(p: int) -> bool:
        return procs.check(p, ctime, argv).ours

    return ProcessHandle.open_verified(pid, verify)


def _under(state_dirs: list[str]) -> list[ProcessHandle]:
    """QEMU processes whose command line names a file in one of the (unique, temporary) state dirs:
    launches that never got a record (a daemon stopped mid-start, a migration target)."""
    found = []
    for proc in procs.qemu_processes():
        if any(sd + os.sep in arg for sd in state_dirs for arg in proc.cmdline):
            handle = ProcessHandle.open_verified(proc.pid, lambda p, c=proc.cmdline: _cmdline(p) == c)
            if handle is not None:
                found.append(handle)
    return found


def _cmdline(pid: int) -> tuple[str, ...]:
    try:
        return tuple(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ()


def reap(state_dirs: Iterable[str]) -> int:
    """SIGKILL every live QEMU recorded in (or started for) the state dirs; returns how many."""
    dirs = [os.path.abspath(d) for d in state_dirs]
    handles: list[ProcessHandle] = []
    for sd in dirs:
        node = NodeSpec(name="reap", state_dir=sd)
        for name in statedir.instance_names(node):
            try:
                rec = statedir.read_record(layout.instance_paths(node, name))
            except (RecordError, layout.InvalidInstanceName):
                continue
            if rec is not None and (h := _ours(rec.pid, rec.create_time, rec.argv)) is not None:
                handles.append(h)
    pinned = {h.pid for h in handles}
    for h in _under(dirs):
        if h.pid in pinned:
            h.close()
        else:
            handles.append(h)
    killed = 0
    for handle in handles:
        with handle:
            if handle.send_signal(signal.SIGKILL):
                killed += 1
            if not asyncio.run(handle.wait_exit(EXIT_TIMEOUT)):
                raise AssertionError(f"QEMU pid {handle.pid} did not die")
    return killed


if __name__ == "__main__":
    print(reap(sys.argv[1:]))
