"""The node lock, with real processes holding it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.errors import ExitCode
from reconciler.lock import LockTimeout, NodeLock, hold_all, read_holder

HOLDER = """
import sys, time
from reconciler.lock import NodeLock
lock = NodeLock(sys.argv[1], "apply")
lock.acquire(timeout=5)
print("held", flush=True)
sys.stdin.readline()   # hold until told (or killed)
lock.release()
"""


def _finish(proc: subprocess.Popen[str], *, kill: bool = False) -> None:
    if kill:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def _start_holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_locker_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "node.lock"
    proc = _start_holder(path)
    try:
        started = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            NodeLock(str(path), "apply").acquire(timeout=0)
        assert time.monotonic() - started < 0.5
        assert info.value.holder is not None and info.value.holder.pid == proc.pid
        assert f"PID {proc.pid}" in str(info.value) and "(apply)" in str(info.value)
        assert info.value.exit_code == ExitCode.LOCKED
    finally:
        _finish(proc, kill=True)


def test_waiter_gets_the_lock_when_the_holder_releases(tmp_path: Path) -> None:
    path = tmp_path / "node.lock"
    proc = _start_holder(path)
    waited: list[object] = []
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    lock = NodeLock(str(path), "watch")
    lock.acquire(timeout=5, on_wait=waited.append)
    try:
        holder = read_holder(str(path))
        assert holder is not None and holder.pid == os.getpid() and holder.operation == "watch"
    finally:
        lock.release()
        _finish(proc)


def test_lock_of_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "node.lock"
    proc = _start_holder(path)
    os.kill(proc.pid, signal.SIGKILL)
    _finish(proc)
    lock = NodeLock(str(path), "apply")
    lock.acquire(timeout=0)  # the kernel dropped the dead holder's flock
    lock.release()


def test_timeout_gives_up_and_never_keeps_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "node.lock"
    proc = _start_holder(path)
    try:
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            NodeLock(str(path), "apply").acquire(timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 1.5
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        _finish(proc)
    # the abandoned waiter thread must not hold the lock after the holder left
    final = NodeLock(str(path), "apply")
    final.acquire(timeout=2)
    final.release()


def test_hold_all_takes_locks_in_sorted_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.lock", tmp_path / "b.lock"
    with hold_all([str(b), str(a)], "apply", timeout=1):
        with pytest.raises(LockTimeout):
            NodeLock(str(a), "x").acquire(timeout=0)
        with pytest.raises(LockTimeout):
            NodeLock(str(b), "x").acquire(timeout=0)
    NodeLock(str(a), "x").acquire(timeout=0)


def test_a_node_lock_wait_cancelled_lets_go_of_the_lock_it_gets_later(tmp_path: Path) -> None:
    """A daemon shutting down while it waits for a node lock must not take the lock for ever after."""
    import asyncio

    from reconciler.model import NodeSpec
    from reconciler.node import LocalNode

    node = LocalNode(NodeSpec(name="n", state_dir=str(tmp_path / "state")))
    other = NodeLock(node.lock_path, "apply")
    other.acquire(0)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        blocked = asyncio.Event()
        waiter = asyncio.create_task(node.lock("watch", None,
                                               lambda path, holder: loop.call_soon_threadsafe(blocked.set)))
        await blocked.wait()  # told who holds it: the thread waits in flock next
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter

    asyncio.run(go())
    other.release()  # the abandoned waiter gets it now, and lets go
    again = NodeLock(node.lock_path, "apply")
    again.acquire(5.0)  # held for ever by the abandoned thread before the fix: LockTimeout
    again.release()


@pytest.mark.parametrize("take", ["acquire", "try_acquire"])
def test_undisturbed_says_whether_another_run_held_the_lock_since_our_release(tmp_path: Path,
                                                                             take: str) -> None:
    """Both ways of taking the lock compare the file with how this process's last release left it (the
    free-lock shortcut once skipped it, so every watch pass after the first looked disturbed)."""
    path = str(tmp_path / "node.lock")

    def taken() -> NodeLock:
        lock = NodeLock(path, "test")
        if take == "acquire":
            lock.acquire(0)
        else:
            assert lock.try_acquire()
        return lock

    first = taken()
    assert not first.undisturbed  # never released by this process before
    first.release()
    second = taken()
    assert second.undisturbed
    second.release()
    other = subprocess.run([sys.executable, "-c", "import sys; from reconciler.lock import NodeLock\n"
                            "l = NodeLock(sys.argv[1], 'other'); l.acquire(5); l.release()", path],
                           check=True, timeout=30)
    assert other.returncode == 0
    third = taken()
    assert not third.undisturbed  # another process held it in between
    third.release()
