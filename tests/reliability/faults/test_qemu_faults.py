"""QEMU misbehaves at each stage: dies before its monitor answers, hangs (a monitor that accepts and never
answers, at launch and while running), dies during a graceful stop; and the state directory's disk fills
up while the record is written. Each must end in a clear one-line error or a clean success, with the
invariants intact and a converging next reconcile."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from executor.kit import kill_verified

from ..invariants import qemu_by_instance
from .kit import Rig, cli_argv, deadline_run
from .wrapper import Wrapper

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _one_error_line(stderr: str, needle: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], stderr


def _pid(rig: Rig, name: str) -> int:
    (p,) = qemu_by_instance(rig.state_dirs)[name]
    return p.pid


def test_qemu_dies_before_qmp_answers(rig: Rig, wrapper: Wrapper) -> None:
    wrapper.set("kill")
    rig.declare("web1", "node-b")
    failed = rig.world.apply()
    assert failed.code == 1
    _one_error_line(failed.err, "QMP did not answer")
    rig.check_fault()
    assert qemu_by_instance(rig.state_dirs).get("web1") is None
    assert not Path(rig.world.paths("node-b", "web1").dir).exists()  # no record, no intent, no socket
    wrapper.set("pass")
    rig.converge({"web1": "node-b", "keep": "node-a"})


def test_launch_with_a_hung_monitor_is_killed_at_the_deadline(rig: Rig, wrapper: Wrapper) -> None:
    wrapper.set("stop")  # QEMU is stopped right after daemonizing: its socket accepts, nothing answers
    rig.declare("web1", "node-b")
    t0 = time.monotonic()
    failed = deadline_run(cli_argv(rig.world, "apply", "--yes"), 90)
    assert failed.returncode == 1 and time.monotonic() - t0 < 60, failed
    _one_error_line(failed.stderr, "QMP did not answer")
    rig.check_fault()
    assert qemu_by_instance(rig.state_dirs).get("web1") is None  # the stopped QEMU was killed
    wrapper.set("pass")
    rig.converge({"web1": "node-b", "keep": "node-a"})


def test_hung_monitor_does_not_hang_plan_or_apply(rig: Rig) -> None:
    rig.declare("web1", "node-a")
    rig.apply_ok()
    pid = _pid(rig, "web1")
    os.kill(pid, signal.SIGSTOP)  # the QEMU started for this test: its monitor accepts, never answers
    try:
        planned = deadline_run(cli_argv(rig.world, "plan"), 30)
        assert planned.returncode == 0, planned
        assert "state unknown" in planned.stdout + planned.stderr
        applied = deadline_run(cli_argv(rig.world, "apply", "--yes"), 30)
        assert applied.returncode == 0, applied
        assert _pid(rig, "web1") == pid  # unknown is left alone, not restarted
        rig.declare("web1", "node-a", runStrategy="Halted")  # a change it cannot ask QEMU about
        t0 = time.monotonic()
        halted = deadline_run(cli_argv(rig.world, "apply", "--yes"), 60)
        assert time.monotonic() - t0 < 45, halted
        assert halted.returncode == 0 and "Traceback" not in halted.stderr, halted
    finally:
        if qemu_by_instance(rig.state_dirs).get("web1"):
            os.kill(pid, signal.SIGCONT)
    rig.check_fault()
    rig.converge({"keep": "node-a"})


def test_qemu_dies_during_a_graceful_stop(rig: Rig) -> None:
    rig.declare("web1", "node-a", ignore_acpi=True, shutdownTimeout="20s")
    rig.apply_ok()
    rig.wait_ready("node-a", "web1")
    pid = _pid(rig, "web1")
    rig.declare("web1", "node-a", ignore_acpi=True, shutdownTimeout="20s", runStrategy="Halted")
    lines = rig.spawn("apply", "--yes")
    lines.wait_for("web1: stopping on node-a", 30)
    t0 = time.monotonic()
    kill_verified(pid, "/instances/web1/")  # dies while the reconciler waits for the ACPI power-off
    code, out = lines.finish(30)
    assert time.monotonic() - t0 < 10, out  # the exit is an event, not the end of the 20 s timeout
    assert code == 0 and "web1: stopped on node-a" in out, out
    rig.check_fault()
    rig.converge({"web1": None, "keep": "node-a"})


def test_disk_full_while_writing_the_record(rig: Rig, wrapper: Wrapper, tmp_path: Path) -> None:
    """node-b's state dir is a small tmpfs; the wrapper fills it once QEMU is up, so the record cannot be
    written: one clear error, no QEMU left without a record, and a clean start once there is room."""
    state = Path(rig.node("node-b").state_dir)
    state.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(state)], check=True)
    filler = state / "filler"
    try:
        wrapper.set(f"fill:{filler}")
        rig.declare("web1", "node-b")
        failed = rig.world.apply()
        assert failed.code == 1, failed.text
        _one_error_line(failed.err, "No space left on device")
        rig.check_fault()
        assert qemu_by_instance(rig.state_dirs).get("web1") is None, "QEMU left running without a record"
        filler.unlink()
        wrapper.set("pass")
        assert not any(p.name.endswith(".tmp") for p in state.rglob("*")), list(state.rglob("*"))
        rig.converge({"web1": "node-b", "keep": "node-a"})
    finally:
        rig.world.reap()
        subprocess.run(["umount", "-l", str(state)], check=False)
