"""End-to-end: discovery against real processes (QEMU under TCG, `sleep`, zombies, a hung QMP socket).

Each test proves one rule of discovery: a live QEMU we launched is found with QEMU's own run state; a
pidfile or record that does not prove identity is never trusted (and its process never signalled); a
zombie counts as exited; a QEMU we did not start is listed as unmanaged; a QMP socket that never answers
yields UNKNOWN within the deadline.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Guest

from reconciler import discovery, launch, layout, model, procs, qmp, records, statedir
from reconciler.actual import RunState, StopCause
from reconciler.errors import LaunchError

from .helpers import Reaper, create_time, short_state_dir, start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

BOOT_TIMEOUT = 60.0


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    try:
        yield r
    finally:
        r.reap()


@pytest.fixture
def node() -> Iterator[model.NodeSpec]:
    for d in short_state_dir():
        yield model.NodeSpec(name="n1", state_dir=d, accelerator=model.Accelerator.TCG)


def paused_spec(name: str) -> model.InstanceSpec:
    """A QEMU that needs no guest: -S keeps it in 'prelaunch' forever."""
    return model.InstanceSpec(name=name, memory_mib=16, serial_console=False, extra_args=("-S",))


def guest_spec(guest: Guest, name: str, *extra: str) -> model.InstanceSpec:
    kernel = model.KernelBoot(kernel=str(guest.kernel), initrd=str(guest.initrd), root="/dev/ram0",
                              cmdline="quiet panic=-1")
    return model.InstanceSpec(name=name, memory_mib=128, kernel=kernel, extra_args=tuple(extra))


def fake_record(node: model.NodeSpec, name: str, pid: int, started: float, argv: tuple[str, ...],
                cause: StopCause | None = None) -> layout.InstancePaths:
    """An applied record (and no pidfile) for an arbitrary process."""
    spec = model.InstanceSpec(name=name, memory_mib=16)
    rec = records.AppliedRecord.create(spec, node.name, argv, "7.2", pid, started, started)
    paths = layout.instance_paths(node, name)
    statedir.write_record(paths, rec.stopped(cause, time.time()) if cause else rec)
    return paths


def test_running_guest_is_discovered_with_qmp_state(
    guest: Guest, node: model.NodeSpec, reaper: Reaper
) -> None:
    rec, paths = start(reaper, guest_spec(guest, "vm1"), node, revision="r1")
    state = discovery.discover([node])
    (inst,) = state.instances
    assert (inst.name, inst.node, inst.state, inst.pid) == ("vm1", "n1", RunState.RUNNING, rec.pid)
    assert inst.qmp_status == "running"
    assert inst.spec == rec.spec
    assert inst.spec_hash == model.spec_hash(rec.spec)
    assert inst.revision == "r1"
    assert rec.pid not in {u.pid for u in state.unmanaged}

    async def pause() -> None:
        async with qmp.session(paths.qmp) as s:
            await s.execute("stop")
            await s.wait_event(["STOP"], 10)

    asyncio.run(pause())
    assert discovery.discover([node]).instances[0].state is RunState.PAUSED


def test_stale_pidfile_of_another_live_process(node: model.NodeSpec, reaper: Reaper) -> None:
    sleeper = reaper.child(["sleep", "60"])
    # The record is of a QEMU long gone; its PID has been reused by `sleep`, which the pidfile now names.
    paths = fake_record(node, "vm1", sleeper.pid, create_time(sleeper.pid) - 1000, ("qemu-system-x86_64",))
    Path(paths.pidfile).write_text(f"{sleeper.pid}\n")
    (inst,) = discovery.discover([node]).instances
    assert inst.state is RunState.STALE
    assert inst.pid == sleeper.pid
    assert f"pid {sleeper.pid} (sleep) started at" in inst.detail
    assert sleeper.poll() is None  # untouched
    assert sleeper.pid not in {u.pid for u in discovery.discover([node]).unmanaged}  # not a QEMU


def test_record_with_wrong_start_time_is_not_trusted(node: model.NodeSpec, reaper: Reaper) -> None:
    rec, paths = start(reaper, paused_spec("vm1"), node)
    statedir.write_record(paths, replace(rec, create_time=rec.create_time - 10))
    state = discovery.discover([node])
    (inst,) = state.instances
    assert inst.state is RunState.STALE
    assert "the record says" in inst.detail
    assert rec.pid in {u.pid for u in state.unmanaged}  # not provably ours: listed, never touched
    assert procs.is_alive(rec.pid)


def test_record_with_other_cmdline_is_not_trusted(node: model.NodeSpec, reaper: Reaper) -> None:
    rec, paths = start(reaper, paused_spec("vm1"), node)
    statedir.write_record(paths, replace(rec, argv=(*rec.argv, "-m", "32")))
    (inst,) = discovery.discover([node]).instances
    assert inst.state is RunState.STALE
    assert "runs another command line" in inst.detail


def test_zombie_counts_as_exited(node: model.NodeSpec, reaper: Reaper) -> None:
    child = reaper.child(["true"])
    started = create_time(child.pid)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, deliberately not reaped
    assert procs.check(child.pid, started, ["true"]).identity is procs.Identity.ZOMBIE
    paths = fake_record(node, "vm1", child.pid, started, ("true",))
    (inst,) = discovery.discover([node]).instances
    # No pidfile: it exited cleanly, and not by us.
    assert (inst.state, inst.stop_cause, inst.pid) == (RunState.STOPPED, StopCause.KILLED, None)
    Path(paths.pidfile).write_text(f"{child.pid}\n")  # a pidfile left behind does not revive it...
    (inst,) = discovery.discover([node]).instances
    assert (inst.state, inst.stop_cause) == (RunState.CRASHED, StopCause.CRASH)  # ...it says "no clean exit"
    assert "without removing its pidfile" in inst.detail


def test_gone_process_with_recorded_cause_is_stopped(node: model.NodeSpec, reaper: Reaper) -> None:
    child = reaper.child(["true"])
    started = create_time(child.pid)
    child.wait(10)
    fake_record(node, "off", child.pid, started, ("true",), cause=StopCause.GUEST)
    fake_record(node, "gone", child.pid, started, ("true",))
    by_name = {i.name: i for i in discovery.discover([node]).instances}
    assert (by_name["off"].state, by_name["off"].stop_cause) == (RunState.STOPPED, StopCause.GUEST)
    assert (by_name["gone"].state, by_name["gone"].stop_cause) == (RunState.STOPPED, StopCause.KILLED)


def test_unmanaged_qemu_is_listed(node: model.NodeSpec, reaper: Reaper, qemu_binary: str) -> None:
    by_hand = reaper.qemu_by_hand([qemu_binary, "-name", "guest=handmade,debug-threads=on", "-S", "-m", "16",
                                   "-nodefaults", "-display", "none", "-accel", "tcg"])
    state = discovery.discover([node])
    assert state.instances == ()
    (found,) = [u for u in state.unmanaged if u.pid == by_hand.pid]
    assert found.name == "handmade"
    assert found.cmdline[0] == qemu_binary


def test_hung_qmp_socket_yields_unknown_within_deadline(node: model.NodeSpec, reaper: Reaper) -> None:
    sleeper = reaper.child(["sleep", "60"])
    paths = fake_record(node, "vm1", sleeper.pid, create_time(sleeper.pid), ("sleep", "60"))
    Path(paths.pidfile).write_text(f"{sleeper.pid}\n")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(paths.qmp)
    server.listen(8)  # the kernel accepts connections; nobody ever says a word
    try:
        began = time.monotonic()
        (inst,) = discovery.discover([node], qmp_timeout=0.5).instances
        took = time.monotonic() - began
    finally:
        server.close()
    assert inst.state is RunState.UNKNOWN
    assert inst.detail == "QMP did not answer in time"
    assert took < 1.5, took
    assert sleeper.poll() is None


def test_launch_failure_reports_qemu_stderr(node: model.NodeSpec) -> None:
    spec = replace(paused_spec("bad"), extra_args=("-no-such-option",))
    with pytest.raises(LaunchError, match="invalid option") as err:
        start(Reaper(), spec, node)
    assert "-no-such-option" in str(err.value)
    assert launch.qemu_version("qemu-system-x86_64").startswith("7.")
