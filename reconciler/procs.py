"""Process identity: is this PID the QEMU we started, and which QEMU processes are not ours?

PIDs are reused. The seed trusted a pidfile and signalled whatever held the number; here a PID is ours
only if the process is alive, not a zombie (PID 1 here reaps slowly, so exited children linger as
zombies), its start time matches the applied record, and its command line is exactly the recorded argv.
Anything else is never signalled.
"""

from __future__ import annotations

import enum
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psutil

CREATE_TIME_TOLERANCE = 0.05  # seconds; psutil derives it from boot time + clock ticks (1/100 s)


class Identity(enum.StrEnum):
    OURS = "ours"
    GONE = "gone"  # no such process
    ZOMBIE = "zombie"  # exited, not yet reaped: counts as exited
    OTHER_START = "other start time"  # PID reused, or the record is wrong
    OTHER_CMDLINE = "other command line"
    INACCESSIBLE = "inaccessible"  # exists but we may not inspect it: certainly not ours to touch


@dataclass(frozen=True, slots=True)
class Check:
    pid: int
    identity: Identity
    detail: str = ""  # one line for humans

    @property
    def ours(self) -> bool:
        return self.identity is Identity.OURS


def check(pid: int, create_time: float, argv: Sequence[str]) -> Check:
    """Whether `pid` is the process started with `argv` at `create_time` (see the module docstring)."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            status = proc.status()
            started = proc.create_time()
            name = proc.name()
            cmdline = proc.cmdline() if status != psutil.STATUS_ZOMBIE else []
    except psutil.NoSuchProcess:
        return Check(pid, Identity.GONE, f"pid {pid} is not running")
    except psutil.AccessDenied:
        return Check(pid, Identity.INACCESSIBLE, f"pid {pid} cannot be inspected")
    if status == psutil.STATUS_ZOMBIE:
        return Check(pid, Identity.ZOMBIE, f"pid {pid} has exited (zombie)")
    if abs(started - create_time) > CREATE_TIME_TOLERANCE:
        return Check(pid, Identity.OTHER_START,
                     f"pid {pid} ({name}) started at {started:.2f}, the record says {create_time:.2f}")
    if list(cmdline) != list(argv):
        return Check(pid, Identity.OTHER_CMDLINE, f"pid {pid} ({name}) runs another command line")
    return Check(pid, Identity.OURS)


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass(frozen=True, slots=True)
class QemuProcess:
    pid: int
    cmdline: tuple[str, ...]

    @property
    def guest_name(self) -> str | None:
        return guest_name(self.cmdline)


def qemu_processes() -> list[QemuProcess]:
    """Every live `qemu-system-*` process on the host: one pass over /proc reading each cmdline (and the
    name, only of a process whose argv[0] does not say). Read directly rather than through psutil's
    process objects, which cost about six times as much: this runs before every start (no second QEMU)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        cmdline = _cmdline(entry)
        if not cmdline:  # a zombie or a kernel thread
            continue
        if os.path.basename(cmdline[0]).startswith("qemu-system") or _comm(entry).startswith("qemu-system"):
            found.append(QemuProcess(int(entry), cmdline))
    return found


def _cmdline(pid: str) -> tuple[str, ...]:
    """/proc/PID/cmdline split as psutil splits it (empty when gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = f.read()
    except OSError:
        return ()
    if data.endswith(b"\0"):
        data = data[:-1]
    if not data:
        return ()
    sep = b"\0" if b"\0" in data or b" " not in data else b" "  # a process that rewrote its argv
    return tuple(os.fsdecode(a) for a in data.split(sep))


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return os.fsdecode(f.read().rstrip(b"\n"))
    except OSError:
        return ""


def unmanaged(processes: Iterable[QemuProcess], ours: Iterable[int]) -> list[QemuProcess]:
    mine = set(ours)
    return [p for p in processes if p.pid not in mine]


def guest_name(cmdline: Sequence[str]) -> str | None:
    """The value of `-name` (`-name foo`, `-name guest=foo,...` or `-name foo,process=...`)."""
    for flag, value in itertools.pairwise(cmdline):
        if flag in ("-name", "--name"):
            first = value.split(",")[0]
            for part in value.split(","):
                if part.startswith("guest="):
                    return part[len("guest="):]
            return first or None
    return None
