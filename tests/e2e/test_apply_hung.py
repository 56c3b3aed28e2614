"""End-to-end: a QEMU whose monitor does not answer (the process SIGSTOPped: its QMP socket accepts and
nobody speaks), on real QEMU under TCG.

- A Halted instance whose verified process does not answer QMP is stoppable: `plan` says what `--force`
  would do, `apply --force` stops it by signal (SIGTERM through the pidfd; a stopped process is continued
  so that it can act on it), within the stop's deadlines.
- A saved plan is not stale because a monitor was slow: `apply --plan` asks again within its QMP deadline,
  and when the monitor stays silent, the stale message says so instead of reporting a change.

Every test SIGCONTs what it stopped in a `finally` (the world's reaper then SIGKILLs what is left).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from conftest import Guest
from executor.kit import World, make_world, record_of

from reconciler.actual import StopCause
from reconciler.errors import ExitCode
from reconciler.pidfd import ProcessHandle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def _pid(world: World, name: str) -> int:
    (pid,) = world.qemu_pids(name)
    return pid


@contextmanager
def frozen(world: World, pid: int) -> Iterator[ProcessHandle]:
    """SIGSTOP the QEMU this test started, pinned by a pidfd; always SIGCONT it on the way out (a no-op
    once it has exited)."""
    def ours(p: int) -> bool:
        try:
            return f"{world.root}/" in "\0".join(psutil.Process(p).cmdline())
        except psutil.Error:
            return False

    handle = ProcessHandle.open_verified(pid, ours)
    assert handle is not None, f"pid {pid} is gone or not ours"
    with handle:
        handle.send_signal(signal.SIGSTOP)
        try:
            yield handle
        finally:
            handle.send_signal(signal.SIGCONT)


def test_hung_qemu_is_stopped_by_signal_with_force(world: World) -> None:
    world.instance("vm1", "node-a")
    assert world.apply().code == 0
    pid = _pid(world, "vm1")
    world.instance("vm1", "node-a", runStrategy="Halted")
    with frozen(world, pid):
        planned = world.cli("plan")
        assert planned.code == 0, planned.text
        assert ("instance vm1 on node-a: QMP unresponsive; --force would stop it by signal "
                "(SIGTERM, then SIGKILL)") in planned.out, planned.text
        unforced = world.apply()
        assert unforced.code == 0, unforced.text
        assert world.qemu_pids("vm1") == [pid]  # not without --force

        previewed = world.cli("plan", "--force")
        assert previewed.code == 0, previewed.text
        assert "- vm1 on node-a" in previewed.out, previewed.text
        assert "# QMP unresponsive" in previewed.out
        assert "Plan: 0 to start, 0 to restart, 0 to migrate, 1 to stop." in previewed.out

        t0 = time.monotonic()
        forced = world.apply("--force")
        took = time.monotonic() - t0
        assert forced.code == 0, forced.text
        assert "vm1: stopped on node-a (SIGTERM)" in forced.out, forced.text
        # Discovery's second question (5 s) plus SIGTERM's deadline (3 s), with a margin for the load.
        assert took < 5.0 + 3.0 + 4.0, took
        assert world.qemu_pids("vm1") == []
    rec = record_of(world, "node-a", "vm1")
    assert rec is not None and rec.stop_cause is StopCause.RECONCILER
    assert "No changes" in world.apply().out


def test_saved_plan_with_a_forced_stop_of_a_hung_qemu(world: World, tmp_path: Path) -> None:
    world.instance("vm1", "node-a")
    assert world.apply().code == 0
    pid = _pid(world, "vm1")
    world.instance("vm1", "node-a", runStrategy="Halted")
    saved = str(tmp_path / "p.plan")
    with frozen(world, pid):
        assert world.cli("plan", "--force", "--out", saved).code == 0
        done = world.cli("apply", "--plan", saved)
        assert done.code == 0, done.text
        assert "vm1: stopped on node-a (SIGTERM)" in done.out, done.text
        assert world.qemu_pids("vm1") == []


def test_saved_plan_is_not_stale_because_a_monitor_was_slow(world: World, tmp_path: Path) -> None:
    """The issue's reproduction: vm1 runs; vm2 is added; the plan is saved; vm1's QEMU is stopped for
    longer than discovery's 0.5 s QMP deadline (and shorter than the apply's 5 s) while the plan is
    applied. The apply runs in this process, so its discovery starts at once, inside the window."""
    world.instance("vm1", "node-a")
    assert world.apply().code == 0
    pid = _pid(world, "vm1")
    world.instance("vm2", "node-a")
    saved = str(tmp_path / "p.plan")
    assert world.cli("plan", "--out", saved).code == 0
    with frozen(world, pid) as handle:
        timer = threading.Timer(1.5, handle.send_signal, (signal.SIGCONT,))
        timer.start()
        try:
            done = world.cli("apply", "--plan", saved)
        finally:
            timer.cancel()
    assert done.code == 0, done.text
    assert "vm2: started on node-a" in done.out, done.text
    assert world.qemu_pids("vm1") == [pid]


def test_saved_plan_is_not_stale_when_others_fill_the_monitor_backlog(world: World, tmp_path: Path) -> None:
    """QEMU queues two connections and a stopped one accepts none: after a `status` (one pending) and
    the apply's discovery (two), the apply's second question must wait for QEMU to accept, not fail."""
    world.instance("vm1", "node-a")
    assert world.apply().code == 0
    pid = _pid(world, "vm1")
    world.instance("vm2", "node-a")
    saved = str(tmp_path / "p.plan")
    assert world.cli("plan", "--out", saved).code == 0
    with frozen(world, pid) as handle:
        assert "QMP did not answer" in world.cli("status").out  # its connection stays queued
        timer = threading.Timer(1.5, handle.send_signal, (signal.SIGCONT,))
        timer.start()
        try:
            done = world.cli("apply", "--plan", saved)
        finally:
            timer.cancel()
    assert done.code == 0, done.text
    assert "vm2: started on node-a" in done.out, done.text


def test_saved_plan_stale_message_says_the_monitor_did_not_answer(world: World, tmp_path: Path) -> None:
    world.instance("vm1", "node-a")
    assert world.apply().code == 0
    pid = _pid(world, "vm1")
    world.instance("vm2", "node-a")
    saved = str(tmp_path / "p.plan")
    assert world.cli("plan", "--out", saved).code == 0
    with frozen(world, pid):
        stale = world.cli("apply", "--plan", saved)
    assert stale.code == ExitCode.STALE_PLAN, stale.text
    assert (f"instance vm1 on node-a: QMP slow/unresponsive (state running -> unknown; same process, "
            f"pid {pid})") in stale.err, stale.err
    assert world.qemu_pids("vm2") == []
