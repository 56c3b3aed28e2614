"""pidfd handles against real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
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


# With no descriptor left, pidfd_open fails with EMFILE: the process lives, it just cannot be pinned.
# Run in a child interpreter whose descriptor limit is spent, so this process keeps its own.
_NO_FDS = """
import asyncio, concurrent.futures.thread, os, resource, subprocess, sys  # apply has them loaded
from reconciler import launch
from reconciler.errors import ProcessPinError
from reconciler.pidfd import ProcessHandle

sleeper = subprocess.Popen(["sleep", "30"])
child = subprocess.Popen(["sleep", "0.2"])
loop = asyncio.new_event_loop()  # its selector and wakeup pipe need descriptors too
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
try:
    ProcessHandle.open_verified(sleeper.pid, lambda pid: True)
    print("not raised")
except ProcessPinError as err:
    print("raised:", err)
print("alive:", sleeper.poll() is None)
print("waited:", loop.run_until_complete(launch._wait_child(child, 5)), child.returncode)
for fd in held:
    os.close(fd)
sleeper.kill()
sleeper.wait()
"""


def test_a_process_that_cannot_be_pinned_is_neither_gone_nor_touched() -> None:
    done = subprocess.run([sys.executable, "-c", _NO_FDS], capture_output=True, text=True, timeout=60,
                          check=True)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("raised: pid ")
    assert "cannot be pinned (pidfd_open: Too many open files); not touching it" in lines[0]
    assert lines[1] == "alive: True"
    assert lines[2] == "waited: True 0"  # launch still waits for its own foreground child, in a thread
