"""Process identity: is this PID the QEMU we started, and which QEMU processes are not ours?

PIDs are reused. The seed trusted a pidfile and signalled whatever held the number; here a PID is ours
only if the process is alive, not a zombie (PID 1 here reaps slowly, so exited children linger as
zombies), its start time matches the applied record, and its command line is exactly the recorded argv.
Anything else is never signalled.

The facts come straight from /proc (stat and cmdline, read as psutil reads them, to the same values: the
start time is `starttime / CLK_TCK + btime`, as psutil's `create_time`, which the records of earlier
versions hold). Discovery runs on every `plan` and `status`; psutil's import and its per-process objects
cost more there than the two small reads each check needs.
"""

from __future__ import annotations

import enum
import itertools
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reconciler.values import Value

CREATE_TIME_TOLERANCE = 0.05  # seconds; derived from boot time + clock ticks (1/100 s)

class Identity(enum.StrEnum):
    OURS = "ours"
    GONE = "gone"  # no such process
    ZOMBIE = "zombie"  # exited, not yet reaped: counts as exited
    OTHER_START = "other start time"  # PID reused, or the record is wrong
    OTHER_CMDLINE = "other command line"
    INACCESSIBLE = "inaccessible"  # exists but we may not inspect it: certainly not ours to touch


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Check(Value):
    """Whether a PID is the process we think it is."""

    pid: int
    identity: Identity
    detail: str = ""  # one line for humans

    @property
    def ours(self) -> bool:
        return self.identity is Identity.OURS


class NoSuchProcess(Exception):
    """The PID does not exist (any more)."""


class AccessDenied(Exception):
    """The process exists but /proc does not let us read it."""


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Stat(Value):
    """The fields of /proc/PID/stat identity checks use."""

    name: str  # comm (at most 15 characters)
    zombie: bool
    create_time: float  # epoch seconds, as psutil's create_time


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_boot_time: float | None = None


def boot_time() -> float:
    """The host's boot time (epoch seconds, /proc/stat btime), read once."""
    global _boot_time
    if _boot_time is None:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime"):
                    _boot_time = float(line.split()[1])
                    break
            else:
                raise RuntimeError("no btime line in /proc/stat")
    return _boot_time


def _read(pid: int, what: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{what}", "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise NoSuchProcess(pid) from None
    except PermissionError:
        raise AccessDenied(pid) from None


def stat(pid: int) -> Stat:
    """The process's name, zombie state and start time; NoSuchProcess / AccessDenied."""
    if pid <= 0:
        raise NoSuchProcess(pid)
    data = _read(pid, "stat")
    rpar = data.rfind(b")")
    fields = data[rpar + 2:].split()
    if rpar < 0 or len(fields) < 20:
        raise NoSuchProcess(pid)  # a PID that vanished while being read
    name = data[data.find(b"(") + 1:rpar].decode(_ENCODING, _ERRORS)
    return Stat(name, fields[0] == b"Z", float(fields[19]) / _CLOCK_TICKS + boot_time())


def create_time(pid: int) -> float:
    """When the process started (epoch seconds); NoSuchProcess / AccessDenied."""
    return stat(pid).create_time


_ENCODING, _ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def cmdline(pid: int) -> list[str]:
    """The process's argv ([] for a zombie or a kernel thread), split as psutil splits it."""
    if pid <= 0:
        raise NoSuchProcess(pid)
    return _split_cmdline(_read(pid, "cmdline").decode(_ENCODING, _ERRORS))


def _split_cmdline(data: str) -> list[str]:
    if not data:
        return []
    # Arguments end in NUL; a process that rewrote its title (setproctitle) may use spaces instead.
    sep = "\x00" if data.endswith("\x00") else " "
    if data.endswith(sep):
        data = data[:-1]
    args = data.split(sep)
    if sep == "\x00" and len(args) == 1 and " " in data:
        args = data.split(" ")
    return args


def check(pid: int, create_time: float, argv: Sequence[str]) -> Check:
    """Whether `pid` is the process started with `argv` at `create_time` (see the module docstring)."""
    try:
        st = stat(pid)
        args = cmdline(pid) if not st.zombie else []
    except NoSuchProcess:
        return Check(pid, Identity.GONE, f"pid {pid} is not running")
    except AccessDenied:
        return Check(pid, Identity.INACCESSIBLE, f"pid {pid} cannot be inspected")
    if st.zombie:
        return Check(pid, Identity.ZOMBIE, f"pid {pid} has exited (zombie)")
    name = _full_name(st.name, args)
    if abs(st.create_time - create_time) > CREATE_TIME_TOLERANCE:
        return Check(pid, Identity.OTHER_START,
                     f"pid {pid} ({name}) started at {st.create_time:.2f}, the record says {create_time:.2f}")
    if list(args) != list(argv):
        return Check(pid, Identity.OTHER_CMDLINE, f"pid {pid} ({name}) runs another command line")
    return Check(pid, Identity.OURS)


def _full_name(comm: str, args: Sequence[str]) -> str:
    """comm, which the kernel cuts at 15 characters, completed from argv[0] when that is what it cut."""
    if len(comm) >= 15 and args:
        full = os.path.basename(args[0])
        if full.startswith(comm):
            return full
    return comm


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a process we may not read counts as alive)."""
    try:
        return not stat(pid).zombie
    except NoSuchProcess:
        return False
    except AccessDenied:
        return True


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class QemuProcess(Value):
    """A QEMU process found on this machine."""

    pid: int
    cmdline: tuple[str, ...]

    @property
    def guest_name(self) -> str | None:
        return guest_name(self.cmdline)


def qemu_processes() -> list[QemuProcess]:
    """Every live `qemu-system-*` process on the host (one pass over /proc: each cmdline, and the name
    of those whose argv[0] does not say qemu-system). Zombies and kernel threads have no cmdline."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            args = cmdline(pid)
            if not args:
                continue
            if not os.path.basename(args[0]).startswith("qemu-system") \
                    and not stat(pid).name.startswith("qemu-system"):
                continue
        except (NoSuchProcess, AccessDenied):
            continue
        found.append(QemuProcess(pid, tuple(args)))
    return found


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
