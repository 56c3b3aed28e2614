"""Race-free handles on processes we did not fork: Linux pidfds.

A daemonized QEMU is not our child, so we cannot `waitpid` it, and a bare PID can be reused between the
moment we check a process's identity and the moment we signal it. A pidfd pins one process: opened first
and verified second, every later signal goes to exactly the process that was verified, and the descriptor
becomes readable the instant that process exits (a zombie counts as exited), so waiting is an event with a
deadline, not a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import signal
from collections.abc import Callable

from reconciler.errors import ProcessPinError


class ProcessHandle:
    """An open pidfd on a process whose identity was verified after opening."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self._fd: int | None = fd

    @classmethod
    def open_verified(cls, pid: int, verify: Callable[[int], bool]) -> ProcessHandle | None:
        """Open `pid` and keep it only if `verify(pid)` holds *after* the pidfd pins it.

        Returns None when the process is gone or is not the one we expect. ProcessPinError when it cannot
        be pinned at all (EMFILE, ENOSYS...): that says nothing of whether it lives, so it is never None.
        """
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        except OSError as err:
            if err.errno == errno.EINVAL and pid <= 0:
                return None  # no such process can exist
            raise ProcessPinError(pid, os.strerror(err.errno) if err.errno else str(err)) from None
        handle = cls(pid, fd)
        if handle.exited() or not verify(pid):
            handle.close()
            return None
        return handle

    def exited(self) -> bool:
        if self._fd is None:
            return True
        ready, _, _ = select.select([self._fd], [], [], 0)
        return bool(ready)

    def send_signal(self, sig: signal.Signals) -> bool:
        """Signal the pinned process; False if it has already exited."""
        if self._fd is None:
            return False
        try:
            signal.pidfd_send_signal(self._fd, sig)
        except ProcessLookupError:
            return False
        return True

    async def wait_exit(self, timeout: float) -> bool:
        """Wait until the process exits; True if it did within `timeout` seconds."""
        if self._fd is None or self.exited():
            return True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        fd = self._fd

        def on_readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, on_readable)
        try:
            async with asyncio.timeout(timeout):
                await done
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)
        return True

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
