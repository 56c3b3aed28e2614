"""A RemoteNode on the rig: the tiny guest launched on a remote host, found, driven over forwarded QMP,
stopped by a signal sent through the host's pidfd; its files live on the host only."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Guest

from reconciler import intent, model, records
from reconciler.actual import RunState
from reconciler.argv import build_launch
from reconciler.errors import RemoteCallError
from reconciler.fleet import target_of
from reconciler.remote.node import RemoteNode
from reconciler.remote.ssh import open_link
from tests.remote import netns_rig

pytestmark = [pytest.mark.e2e, pytest.mark.remote, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
AGENT = ("env", f"PYTHONPATH={REPO}", sys.executable, "-m", "reconciler", "agent")


def node_spec(rig: netns_rig.Rig, host: netns_rig.Host) -> model.NodeSpec:
    ssh = model.SshSpec(host=host.address, identity_file=rig.identity_file,
                        known_hosts_file=rig.known_hosts_file, connect_timeout=5.0, agent_command=AGENT)
    return model.NodeSpec(name=f"node-{host.name}", state_dir=f"{netns_rig.STATE_ROOT}/node",
                          address=host.address, accelerator=model.Accelerator.TCG, ssh=ssh)



def guest_spec(guest: Guest, name: str) -> model.InstanceSpec:
    kernel = model.KernelBoot(kernel=str(guest.kernel), initrd=str(guest.initrd), root="/dev/ram0",
                              cmdline="quiet panic=-1")
    return model.InstanceSpec(name=name, memory_mib=128, kernel=kernel)


def test_launch_discover_qmp_and_signal_on_a_remote_host(rig: netns_rig.Rig, guest: Guest) -> None:
    spec = node_spec(rig, rig.hosts[0])
    inst = guest_spec(guest, "vm1")
    launch = build_launch(inst, spec)

    async def go() -> dict[str, Any]:
        link = await open_link(target_of(spec))
        node = RemoteNode(spec, link)
        seen: dict[str, Any] = {}
        try:
            began = time.monotonic()
            launched = await node.launch("vm1", launch, timeout=60)
            seen["launch_s"] = time.monotonic() - began
            version = await node.qemu_version()
            checked = await node.check_paths([str(guest.kernel), "/nonexistent", "qemu-system-x86_64"])
            seen["checked"] = {p: (i.kind.value, i.executable) for p, i in checked.items()}
            await node.write_record(records.AppliedRecord.create(
                inst, spec.name, launched.argv, version, launched.pid, launched.create_time,
                launched.started_at))
            state = await node.discover()
            seen["states"] = [(i.name, i.node, i.state, i.pid) for i in state.instances]
            seen["launched_pid"] = launched.pid
            session = await node.qmp("vm1", timeout=10)
            try:
                seen["status"] = (await session.execute("query-status"))["status"]
            finally:
                await session.close()
            assert await node.process(launched.pid, launched.create_time + 50, launched.argv) is None
            proc = await node.process(launched.pid, launched.create_time, launched.argv)
            assert proc is not None
            assert await proc.send_signal(signal.SIGKILL)
            seen["exited"] = await proc.wait_exit(10)
            await proc.close()
            state = await node.discover()
            seen["after"] = [(i.name, i.state.has_process) for i in state.instances]
            rec = await node.read_record("vm1")
            seen["record_pid"] = rec.pid if rec else None
            await node.remove_instance("vm1")
            seen["removed"] = await node.read_record("vm1")
        finally:
            await link.close()
        return seen

    seen = asyncio.run(go())
    pid = seen["launched_pid"]
    assert seen["states"] == [("vm1", "node-h1", RunState.RUNNING, pid)]
    assert seen["status"] == "running"
    assert seen["checked"] == {str(guest.kernel): ("file", False), "/nonexistent": ("missing", False),
                               "qemu-system-x86_64": ("file", True)}
    assert seen["exited"] is True
    assert seen["after"] == [("vm1", False)]  # gone (its pidfile left: crash or stale, see issue 11)
    assert seen["record_pid"] == pid
    assert seen["removed"] is None
    # The state directory is on the host: the controller has no such files.
    assert not Path(f"{netns_rig.STATE_ROOT}/node").exists()


def test_the_node_lock_is_taken_on_the_host_and_dies_with_the_connection(rig: netns_rig.Rig) -> None:
    spec = node_spec(rig, rig.hosts[1])

    async def go() -> None:
        first = await open_link(target_of(spec))
        second = await open_link(target_of(spec))
        try:
            await RemoteNode(spec, first).lock("apply", 0)
            with pytest.raises(RemoteCallError, match=r"lock_acquire: node lock .* is held by PID \d+"):
                await RemoteNode(spec, second).lock("apply", 0)
            await first.close()  # the agent ends, the kernel drops its flock
            await RemoteNode(spec, second).lock("apply", 10)
        finally:
            await first.close()
            await second.close()

    asyncio.run(go())


def test_an_intent_written_over_a_link_is_in_flight_exactly_while_that_link_lives(rig: netns_rig.Rig) -> None:
    """The host judges an intent's writer by a PID of its own (the agent's), never the controller's PID,
    which means nothing there: in flight while the controller is connected, left behind once it is gone."""
    host = rig.hosts[2]
    spec = node_spec(rig, host)
    mine = intent.Intent(intent.IntentKind.STOP, "vm9", spec.name, time.time(), *intent.owner_identity())

    async def go() -> tuple[list[str], list[str], object, int]:
        writer = await open_link(target_of(spec))
        other = await open_link(target_of(spec))
        try:
            agent_pid = int((await writer.call("ping", {}, timeout=10))["pid"])
            await RemoteNode(spec, writer).write_intent("vm9", intent.to_jsonable(mine))
            during = [f.name for f in (await RemoteNode(spec, other).discover()).in_flight]
            await writer.close()
            subprocess.run(rig.exec_argv(host, sys.executable, "-c", WAIT_EXIT, str(agent_pid)), check=True,
                           timeout=30)
            after = [f.name for f in (await RemoteNode(spec, other).discover()).in_flight]
            left = await RemoteNode(spec, other).read_intent("vm9")
            return during, after, left, agent_pid
        finally:
            await writer.close()
            await other.close()

    during, after, left, _ = asyncio.run(go())
    assert during == ["vm9"]  # the controller's own PID is not alive on the host: this failed before
    assert after == [] and left is None  # the writer is gone: a stale intent, cleaned by discovery


WAIT_EXIT = """
import os, select, sys
try:
    fd = os.pidfd_open(int(sys.argv[1]))
except ProcessLookupError:
    sys.exit(0)
sys.exit(0 if select.select([fd], [], [], 20)[0] else 1)
"""
