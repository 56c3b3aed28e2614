"""One contract, two nodes: a LocalNode and a RemoteNode (over SSH, on the rig) answer alike.

Each test runs once per kind with the same body, through the `Node` protocol only: records and intents
round-trip, removal keeps nothing, paths are probed, a launched QEMU is found, verified and pinned (a wrong
start time is refused), and a signal through its handle ends it."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from reconciler import model
from reconciler.argv import build_launch
from reconciler.node import LocalNode, Node
from reconciler.pathinfo import PathKind
from reconciler.records import AppliedRecord
from reconciler.remote.node import RemoteNode
from reconciler.remote.ssh import SshTarget, open_link
from tests.remote import netns_rig

pytestmark = [pytest.mark.e2e, pytest.mark.remote, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
AGENT = ("env", f"PYTHONPATH={REPO}", sys.executable, "-m", "reconciler", "agent")
NodeFactory = Callable[[], Any]


@pytest.fixture
def local_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="nc-", dir="/tmp")  # short: unix socket paths
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=["local", "remote"])
def node_of(request: pytest.FixtureRequest, rig: netns_rig.Rig, local_dir: str) -> NodeFactory:
    if request.param == "local":
        spec = model.NodeSpec(name="n1", state_dir=local_dir, accelerator=model.Accelerator.TCG)

        @asynccontextmanager
        async def local() -> AsyncIterator[Node]:
            yield LocalNode(spec)
        return local
    host = rig.hosts[0]
    ssh = model.SshSpec(host=host.address, identity_file=rig.identity_file,
                        known_hosts_file=rig.known_hosts_file, connect_timeout=5.0, agent_command=AGENT)
    spec = model.NodeSpec(name="n1", state_dir=f"{netns_rig.STATE_ROOT}/contract", address=host.address,
                          accelerator=model.Accelerator.TCG, ssh=ssh)

    @asynccontextmanager
    async def remote() -> AsyncIterator[Node]:
        link = await open_link(SshTarget(spec.name, host.address, identity_file=rig.identity_file,
                                         known_hosts_file=rig.known_hosts_file, agent_command=AGENT))
        try:
            yield RemoteNode(spec, link)  # type: ignore[misc]
        finally:
            await link.close()
    return remote


def run(node_of: NodeFactory, body: Callable[[Node], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        async with node_of() as node:
            return await body(node)
    return asyncio.run(go())


def paused(name: str) -> model.InstanceSpec:
    return model.InstanceSpec(name=name, memory_mib=16, serial_console=False, extra_args=("-S",))


def test_records_and_intents_round_trip_and_removal_keeps_nothing(node_of: NodeFactory) -> None:
    spec = paused("c1")
    record = AppliedRecord.create(spec, "n1", ("qemu-system-x86_64",), "7.2", 1, 2.0, 3.0, "rev")

    async def body(node: Node) -> list[object]:
        seen: list[object] = [await node.read_record("c1"), await node.read_intent("c1")]
        await node.write_record(record)
        await node.write_intent("c1", {"kind": "start", "n": 1})
        seen += [await node.read_record("c1"), await node.read_intent("c1")]
        await node.remove_intent("c1")
        seen.append(await node.read_intent("c1"))
        await node.remove_instance("c1")
        seen.append(await node.read_record("c1"))
        return seen

    assert run(node_of, body) == [None, None, record, {"kind": "start", "n": 1}, None, None]


def test_paths_ports_and_version(node_of: NodeFactory) -> None:
    async def body(node: Node) -> tuple[Any, ...]:
        found = await node.check_paths(["/bin/sh", "/nonexistent", "qemu-system-x86_64"])
        return ({p: i.kind for p, i in found.items()}, found["qemu-system-x86_64"].executable,
                await node.port_free(_unused_port()), await node.qemu_version())

    kinds, executable, free, version = run(node_of, body)
    assert kinds == {"/bin/sh": PathKind.FILE, "/nonexistent": PathKind.MISSING,
                     "qemu-system-x86_64": PathKind.FILE}
    assert executable and free and version.startswith("7.")


def _unused_port() -> int:
    return 49999  # in the migration range; nothing listens there in the rig or in this test


def test_a_launched_qemu_is_found_pinned_and_signalled(node_of: NodeFactory) -> None:
    spec = paused("c2")

    async def body(node: Node) -> dict[str, Any]:
        built = build_launch(spec, node.spec)
        launched = await node.launch("c2", built, 30)
        seen: dict[str, Any] = {"pids": await node.live_pids("c2"), "pid": launched.pid}
        try:
            seen["wrong"] = await node.process(launched.pid, launched.create_time + 60, launched.argv)
            proc = await node.process(launched.pid, launched.create_time, launched.argv)
            assert proc is not None
            async with proc:
                seen["exited_before"] = await proc.exited()
                seen["signalled"] = await proc.send_signal(signal.SIGKILL)
                seen["exited"] = await proc.wait_exit(10)
            seen["after"] = await node.live_pids("c2")
        finally:
            await node.remove_instance("c2")
        return seen

    seen = run(node_of, body)
    assert seen["pids"] == (seen["pid"],)
    assert seen["wrong"] is None
    assert (seen["exited_before"], seen["signalled"], seen["exited"]) == (False, True, True)
    assert seen["after"] == ()


def test_disks_are_checked_created_owned_and_deleted_alike(node_of: NodeFactory) -> None:
    """Issue 14's node operations: the plan's question about disks to create, the creation recorded as
    owned, and a deletion that removes only what the reconciler created."""
    from reconciler.provision.imagecheck import DiskRequest, ImageQuery

    async def body(node: Node) -> dict[str, Any]:
        await node.write_intent("c3", {"kind": "start"})  # makes the instance's directory
        where = node.paths("c3").dir
        disk = DiskRequest(f"{where}/d,x=y.raw", "raw", size=1024 * 1024)
        seen: dict[str, Any] = {}
        try:
            checks = await node.check_images([ImageQuery(disk.path, size=disk.size),
                                              ImageQuery(f"{where}/o.qcow2", base=f"{where}/nope.raw")])
            seen["free"] = checks[disk.path].free > 0 and not checks[disk.path].error
            seen["no_base"] = checks[f"{where}/o.qcow2"].error
            seen["created"] = [await node.create_disk("c3", disk), await node.create_disk("c3", disk)]
            owned = await node.owned_images([disk.path, f"{where}/other.raw"])
            seen["owned"] = {p: (o.instance, o.size) for p, o in owned.items()}
            seen["deleted"] = [await node.delete_disk(disk.path), await node.delete_disk(disk.path)]
            seen["after"] = (await node.check_paths([disk.path]))[disk.path].kind
        finally:
            await node.delete_disk(disk.path)
            await node.remove_instance("c3")
        return seen

    seen = run(node_of, body)
    assert seen["free"] is True
    assert seen["no_base"].startswith("base image: disk image ") and "No such file" in seen["no_base"]
    assert seen["created"] == [True, False]  # the second time, the file is there: used, not recreated
    assert list(seen["owned"].values()) == [("c3", 1024 * 1024)]
    assert seen["deleted"] == [True, False]  # then no longer ours: nothing to delete
    assert seen["after"] is PathKind.MISSING


def test_a_tap_hook_file_is_written_in_the_instance_directory_and_removed_with_it(
        node_of: NodeFactory) -> None:
    """Issue 15's bridge NIC added live: the ifup hook's file is written on the host that runs QEMU."""
    async def body(node: Node) -> list[PathKind]:
        await node.write_intent("c4", {"kind": "update"})  # makes the instance's directory
        path = node.paths("c4").nic_file("rc0123abcdn1")
        try:
            await node.write_nic_file("c4", "rc0123abcdn1", '{"instance": "c4"}')
            kinds = [(await node.check_paths([path]))[path].kind]
        finally:
            await node.remove_instance("c4")
        return [*kinds, (await node.check_paths([path]))[path].kind]

    assert run(node_of, body) == [PathKind.FILE, PathKind.MISSING]


def test_the_agent_refuses_a_tap_name_that_is_not_one(rig: netns_rig.Rig) -> None:
    """A name with a '/' or a leading '.' would put the hook file outside the instance directory."""
    from reconciler.errors import ReconcilerError

    host = rig.hosts[0]
    spec = model.NodeSpec(name="n1", state_dir=f"{netns_rig.STATE_ROOT}/contract", address=host.address,
                          accelerator=model.Accelerator.TCG)

    async def go() -> list[str]:
        link = await open_link(SshTarget(spec.name, host.address, identity_file=rig.identity_file,
                                         known_hosts_file=rig.known_hosts_file, agent_command=AGENT))
        node = RemoteNode(spec, link)
        errors = []
        try:
            for bad in ("../../etc/x", ".hidden", "a" * 16):
                try:
                    await node.write_nic_file("c5", bad, "{}")
                except ReconcilerError as err:
                    errors.append(str(err))
        finally:
            await link.close()
        return errors

    errors = asyncio.run(go())
    assert len(errors) == 3 and all("is not an interface name" in e for e in errors), errors
