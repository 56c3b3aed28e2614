"""The node lock: one writer per node at a time.

`apply` and the watch daemon both change a node's processes and records; two of them interleaving could
start one instance twice. Each node has a lock file in its state directory, held with `flock(2)` for the
whole run. The kernel releases a flock when its holder dies, so a lock left by a killed run is never stale
in the kernel's eyes; the holder description written into the file is only for the message a waiter
prints ("held by PID 123 on host h, apply, since ...").

Each process remembers how it left a lock file (`_LEFT`: inode, size, mtime and ctime after its release
truncated it), and the next time it takes that lock it compares: `NodeLock.undisturbed` says nobody else
has held the lock in between (whoever takes it writes its holder, and truncates again on release). The
watch daemon uses that to know that no other run acted on the node between its passes.

Waiting never sleep-polls: a helper thread blocks in `flock` and the caller waits on an event with a
deadline. If the deadline passes first, the thread is told to release the lock the moment it gets it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from reconciler.errors import ExitCode, ReconcilerError
from reconciler.values import Value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Holder(Value):
    """Who holds a node lock: process, host, operation and since when."""

    pid: int
    host: str
    operation: str
    since: float  # epoch seconds

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"PID {self.pid} on {self.host} ({self.operation}) since {when}"


@dataclass(eq=False, repr=False)  # the repr is ReconcilerError's
class LockTimeout(ReconcilerError):
    """A node lock stayed held by another run for the whole wait."""

    path: str
    holder: Holder | None
    waited: float
    exit_code = ExitCode.LOCKED

    @property
    def message(self) -> str:
        who = self.holder.describe() if self.holder else "another process"
        return f"node lock {self.path} is held by {who}; gave up after {self.waited:.1f}s"


def read_holder(path: str) -> Holder | None:
    """The holder recorded in a lock file, if any (best effort: the file may be mid-write)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        return Holder(int(raw["pid"]), str(raw["host"]), str(raw["operation"]), float(raw["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


_Stamp = tuple[int, int, int, int, int]
_LEFT: dict[str, _Stamp] = {}  # lock path -> the file as this process's last release left it


def _stamp(fd: int) -> _Stamp:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class NodeLock:
    """An exclusive flock on one lock file, held until `release()`."""

    def __init__(self, path: str, operation: str) -> None:
        self.path = path
        self.operation = operation
        self._fd: int | None = None
        # Once acquired: True when the file is exactly as this process's last release left it, so no
        # other run has held the lock since (False the first time this process takes it).
        self.undisturbed = False

    def acquire(self, timeout: float | None, on_wait: Callable[[Holder | None], None] | None = None) -> None:
        """Take the lock; wait up to `timeout` seconds (None: forever, 0: fail at once)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not _try_lock(fd):
                holder = read_holder(self.path)
                if on_wait is not None and timeout != 0:
                    on_wait(holder)
                started = time.monotonic()
                if not _wait_lock(fd, timeout):
                    raise LockTimeout(self.path, read_holder(self.path) or holder, time.monotonic() - started)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.undisturbed = _LEFT.get(self.path) == _stamp(fd)
        self._write_holder(fd)

    def try_acquire(self) -> bool:
        """Take the lock if it is free right now, without waiting (so without a helper thread); False
        when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not _try_lock(fd):
                os.close(fd)
                return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.undisturbed = _LEFT.get(self.path) == _stamp(fd)
        self._write_holder(fd)
        return True

    def _write_holder(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "operation": self.operation,
                "since": time.time()}
        data = json.dumps(info).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _LEFT.pop(self.path, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            _LEFT[self.path] = _stamp(fd)  # still held: nobody else can have written it yet
        os.close(fd)  # closing drops the flock

    def __enter__(self) -> NodeLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_lock(fd: int, timeout: float | None) -> bool:
    """Block in flock on a helper thread; give up after `timeout` seconds."""
    if timeout == 0:
        return False
    got = threading.Event()
    abandoned = threading.Event()
    guard = threading.Lock()
    # The blocker locks through its own descriptor (same open file description, so the same lock) and
    # closes it itself: the caller may close `fd` while the blocker still waits.
    dup = os.dup(fd)

    def blocker() -> None:
        try:
            fcntl.flock(dup, fcntl.LOCK_EX)
        except OSError:
            os.close(dup)
            return
        with guard:
            if abandoned.is_set():
                fcntl.flock(dup, fcntl.LOCK_UN)
            else:
                got.set()
        os.close(dup)

    threading.Thread(target=blocker, name="node-lock-wait", daemon=True).start()
    if got.wait(timeout):
        return True
    with guard:
        if got.is_set():
            return True
        abandoned.set()
    return False


@contextlib.contextmanager
def hold_all(paths: Sequence[str], operation: str, timeout: float | None,
             on_wait: Callable[[str, Holder | None], None] | None = None) -> Iterator[None]:
    """Hold several node locks, taken in sorted order so two runs can never deadlock."""
    held: list[NodeLock] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for path in sorted(set(paths)):
            lock = NodeLock(path, operation)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if timeout == 0:
                remaining = 0.0

            def notify(holder: Holder | None, p: str = path) -> None:
                if on_wait is not None:
                    on_wait(p, holder)

            lock.acquire(remaining, notify)
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()
