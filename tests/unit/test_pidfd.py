"""pidfd handles against real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

from reconciler.pidfd import ProcessHandle


def test_wait_exit_returns_the_moment_the_process_exits() -> None:
    with subprocess.Popen(["sleep", "0.2"]) as proc:
        handle = ProcessHandle.open_verified(proc.pid, lambda pid: True)
        assert handle is not None
        started = time.monotonic()
        assert asyncio.run(handle.wait_exit(5)) is True
        assert time.monotonic() - started < 1.0
        handle.close()


def test_wait_exit_times_out_on_a_live_process() -> None:
    with subprocess.Popen(["sleep", "30"]) as proc:
        handle = ProcessHandle.open_verified(proc.pid, lambda pid: True)
        assert handle is not None
        assert asyncio.run(handle.wait_exit(0.1)) is False
        assert handle.send_signal(signal.SIGKILL)
        assert asyncio.run(handle.wait_exit(5)) is True
        handle.close()
        proc.wait()


def test_a_process_that_fails_verification_is_never_kept() -> None:
    with subprocess.Popen(["sleep", "30"]) as proc:
        assert ProcessHandle.open_verified(proc.pid, lambda pid: False) is None
        assert proc.poll() is None  # untouched
        proc.kill()


def test_an_exited_zombie_counts_as_exited() -> None:
    with subprocess.Popen(["true"]) as proc:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # a zombie now: exited, not reaped
        handle = ProcessHandle.open_verified(proc.pid, lambda pid: True)
        assert handle is None  # exited already: nothing to hold
        proc.wait()
