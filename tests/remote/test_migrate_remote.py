"""Live migration between two remote hosts of the rig, through the executor and RemoteNode.

node-a and node-b are RemoteNodes on two rig hosts (network namespaces, each with its own sshd, mount and
PID namespaces); each node's `address` is its host's rig address. The plan comes from the planner
(discovery of both nodes, merged), the executor runs it: the target QEMU listens on host B's address and
the source streams to it over TCP between the namespaces; QMP of both travels over the SSH links.

Everything is judged from inside the hosts (tests/remote/rig_look.py): serial logs, processes, records.
"""

from __future__ import annotations

import asyncio
import io
import re
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import Guest

from reconciler import model, records
from reconciler.actual import RunState
from reconciler.executor.context import Context
from reconciler.executor.outcome import Summary
from reconciler.executor.progress import LineProgress
from reconciler.executor.schedule import run_plan
from reconciler.fleet import target_of
from reconciler.node import merge_states
from reconciler.planner import make_plan
from reconciler.planner.actions import ActionKind, Plan
from reconciler.remote.node import RemoteNode
from reconciler.remote.ssh import HostLink, open_link
from tests.remote import netns_rig, rig_look
from tests.remote.rig_look import HostLog

pytestmark = [pytest.mark.e2e, pytest.mark.remote, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
AGENT = ("env", f"PYTHONPATH={REPO}", sys.executable, "-m", "reconciler", "agent")
TICK = re.compile(r"reconciler-guest: tick (\d+)")
BOOT_TIMEOUT = 90.0


def node_spec(rig: netns_rig.Rig, host: netns_rig.Host, name: str, state_dir: str) -> model.NodeSpec:
    ssh = model.SshSpec(host=host.address, identity_file=rig.identity_file,
                        known_hosts_file=rig.known_hosts_file, connect_timeout=5.0, agent_command=AGENT)
    return model.NodeSpec(name=name, state_dir=state_dir, address=host.address,
                          accelerator=model.Accelerator.TCG, ssh=ssh)



def guest_spec(guest: Guest, name: str, node: str, **fields: object) -> model.InstanceSpec:
    kernel = model.KernelBoot(kernel=str(guest.kernel), initrd=str(guest.initrd), root="/dev/ram0",
                              cmdline=f"quiet panic=-1 reconciler.tag={name}")
    spec = model.InstanceSpec(name=name, memory_mib=128, node=node, kernel=kernel, shutdown_timeout=10.0)
    return replace(spec, **fields)  # type: ignore[arg-type]


@dataclass
class Pair:
    """Two remote nodes on two rig hosts, with their links open."""

    rig: netns_rig.Rig
    hosts: dict[str, netns_rig.Host]  # node name -> host
    specs: dict[str, model.NodeSpec]
    nodes: dict[str, RemoteNode]
    out: io.StringIO

    @property
    def state_dirs(self) -> list[str]:
        return sorted({s.state_dir for s in self.specs.values()})

    def path(self, node: str, instance: str) -> str:
        return self.nodes[node].paths(instance).serial_log

    async def plan(self, instances: dict[str, model.InstanceSpec]) -> Plan:
        states = await asyncio.gather(*(n.discover() for n in self.nodes.values()))
        desired = model.DesiredState(instances=instances, nodes=self.specs)
        return make_plan(desired, merge_states(states))

    async def apply(self, instances: dict[str, model.InstanceSpec]) -> tuple[Plan, Summary]:
        plan = await self.plan(instances)
        ctx = Context(nodes=self.nodes, specs=instances, progress=LineProgress(self.out))
        return plan, await run_plan(plan, ctx, 4)

    async def boot_on_a(self, spec: model.InstanceSpec, state_dir: str) -> tuple[int, int]:
        """Start `spec` on node-a and wait for its guest's tick: (its PID on A, the last tick seen)."""
        _, done = await self.apply({spec.name: replace(spec, node="node-a")})
        assert done.ok, (done.line(), self.out.getvalue())
        host_a = self.hosts["node-a"]
        with HostLog(self.rig, host_a, self.path("node-a", spec.name)) as log:
            # In a thread: the event loop must go on answering the links' heartbeats meanwhile (a host's
            # agent ends after 30 s without one, and a guest may take longer to boot on a loaded machine).
            await asyncio.to_thread(log.wait_for, TICK, BOOT_TIMEOUT)
        ((pid_a,),) = rig_look.qemus(self.rig, host_a, [state_dir]).values()
        return pid_a, _last_tick(rig_look.read_file(self.rig, host_a, self.path("node-a", spec.name)) or "")

    async def assert_moved_to_b(self, name: str, state_dir: str, tick_before: int) -> int:
        """The guest goes on on B (its tick counter continues there, no second boot), nothing of it is
        left on A, and B's record names B's one QEMU; returns that QEMU's PID."""
        host_a, host_b = self.hosts["node-a"], self.hosts["node-b"]
        with HostLog(self.rig, host_b, self.path("node-b", name)) as log:
            line = await asyncio.to_thread(log.wait_for, TICK, 15)
            tick = TICK.search(line)
            assert tick is not None and int(tick.group(1)) >= tick_before, (line, tick_before)
            assert not any("ready" in ln for ln in log.lines)
        assert rig_look.qemus(self.rig, host_a, [state_dir]) == {}
        ((pid_b,),) = rig_look.qemus(self.rig, host_b, [state_dir]).values()
        rec_b = await self.nodes["node-b"].read_record(name)
        assert rec_b is not None and (rec_b.node, rec_b.pid) == ("node-b", pid_b)
        assert not rig_look.exists(self.rig, host_a, f"{state_dir}/instances/{name}")
        return pid_b


@asynccontextmanager
async def pair(rig: netns_rig.Rig, state_dir: str, **addresses: str) -> AsyncIterator[Pair]:
    """node-a on the rig's first host, node-b on its second; `addresses` (node_a=...) override a node's
    address (its host's rig address by default)."""
    hosts = {"node-a": rig.hosts[0], "node-b": rig.hosts[1]}
    specs = {n: node_spec(rig, h, n, state_dir) for n, h in hosts.items()}
    specs = {n: replace(s, address=addresses.get(n.replace("-", "_"), s.address)) for n, s in specs.items()}
    links: list[HostLink] = []
    try:
        for spec in specs.values():
            links.append(await open_link(target_of(spec)))
        nodes = {s.name: RemoteNode(s, link) for s, link in zip(specs.values(), links, strict=True)}
        yield Pair(rig, hosts, specs, nodes, io.StringIO())
    finally:
        for link in links:
            await link.close()


@pytest.fixture
def state_dir(request: pytest.FixtureRequest, rig: netns_rig.Rig) -> Iterator[str]:
    """A state directory of this test's own on every host, emptied of QEMUs and files afterwards; a decoy
    process in each host that must get no signal. After the test, the invariants hold on the hosts."""
    path = f"{netns_rig.STATE_ROOT}/{re.sub(r'[^a-z0-9]+', '-', request.node.name[5:])[-40:]}"
    hosts = rig.hosts[:2]
    canaries = [rig_look.HostCanary(rig, h) for h in hosts]
    try:
        yield path
        rig_look.assert_single_qemu(rig, hosts, [path])
        rig_look.assert_no_leaks(rig, hosts, [path])
        for canary in canaries:
            canary.check()
    finally:
        for canary in canaries:
            canary.stop()
        _reap(rig, hosts, path)


_REAP = """
import asyncio, signal, sys
import psutil
from reconciler.pidfd import ProcessHandle
from tests.reliability.invariants import qemu_by_instance
def started_at(pid, create_time):
    try:
        return psutil.Process(pid).create_time() == create_time
    except psutil.Error:
        return False
for procs in qemu_by_instance(sys.argv[1:]).values():
    for p in procs:  # pinned by a pidfd, then verified by its start time: never a recycled PID
        handle = ProcessHandle.open_verified(p.pid, lambda pid: started_at(pid, p.create_time))
        if handle is not None:
            handle.send_signal(signal.SIGKILL)
            asyncio.run(handle.wait_exit(10))
            handle.close()
"""


def _reap(rig: netns_rig.Rig, hosts: list[netns_rig.Host], path: str) -> None:
    """Kill this test's QEMUs on the hosts (those whose pidfile is in its state dir) and its files."""
    for host in hosts:
        rig_look.python_in(rig, host, _REAP, path)
        rig_look.run_in(rig, host, "rm", "-rf", "--", path)
        assert rig_look.qemus(rig, host, [path]) == {}, f"a QEMU of this test survived on {host.name}"


def _last_tick(text: str) -> int:
    return max(int(m.group(1)) for m in TICK.finditer(text))


@pytest.mark.parametrize("mode", [model.MigrationMode.LIVE, model.MigrationMode.OFFLINE])
def test_migration_between_two_hosts(rig: netns_rig.Rig, guest: Guest, state_dir: str,
                                     mode: model.MigrationMode) -> None:
    host_b = rig.hosts[1]
    settings = model.Migration(mode=mode)

    async def go() -> None:
        async with pair(rig, state_dir) as p:
            vm1 = guest_spec(guest, "vm1", "node-a", migration=settings)
            pid_a, before = await p.boot_on_a(vm1, state_dir)
            on_b = {"vm1": replace(vm1, node="node-b")}
            plan, done = await p.apply(on_b)
            assert [(a.kind, a.source_node, a.node) for a in plan.actions] == \
                [(ActionKind.MIGRATE, "node-a", "node-b")]
            assert done.ok, (done.line(), p.out.getvalue())
            assert re.search(r"vm1: migrated node-a -> node-b in [\d.]+s", p.out.getvalue()), p.out.getvalue()
            assert f"vm1: migrating node-a -> node-b ({mode.value})" in p.out.getvalue()
            pid_b = await p.assert_moved_to_b("vm1", state_dir, before)
            rec_b = await p.nodes["node-b"].read_record("vm1")
            assert rec_b is not None
            incoming = rec_b.argv[rec_b.argv.index("-incoming") + 1]
            assert re.fullmatch(rf"tcp:{re.escape(host_b.address)}:\d+", incoming), incoming
            assert await p.nodes["node-a"].read_record("vm1") is None
            text = rig_look.read_file(rig, host_b, f"{state_dir}/instances/vm1/record.json")
            assert text is not None and records.from_json(text).node == "node-b"
            states = [await n.discover() for n in p.nodes.values()]
            (inst,) = merge_states(states).find("vm1")
            assert (inst.node, inst.state, inst.pid) == ("node-b", RunState.RUNNING, pid_b)
            assert pid_a  # (A's PID namespace is not B's: the numbers may even coincide)
            assert (await p.plan(on_b)).empty

    asyncio.run(go())


def test_a_migration_past_its_timeout_stays_on_the_source_host(rig: netns_rig.Rig, guest: Guest,
                                                               state_dir: str) -> None:
    host_a, host_b = rig.hosts[0], rig.hosts[1]
    slow = model.Migration(max_bandwidth=1024 * 1024, completion_timeout_per_gib=1.0)

    async def go() -> None:
        async with pair(rig, state_dir) as p:
            on_a = {"vm2": guest_spec(guest, "vm2", "node-a", migration=slow)}
            pid_a, _ = await p.boot_on_a(on_a["vm2"], state_dir)
            on_b = {"vm2": guest_spec(guest, "vm2", "node-b", migration=slow)}
            plan, done = await p.apply(on_b)
            assert [a.kind for a in plan.actions] == [ActionKind.MIGRATE]
            assert not done.ok
            (failed,) = done.failed
            assert "migration cancelled: not completed within 1s" in failed.detail, failed.detail
            assert "stays on node-a" in failed.detail, failed.detail
            assert "not completed within 1s: cancelling the migration" in p.out.getvalue()
            # Still on A, the same process, running; nothing of it on B.
            assert rig_look.qemus(rig, host_a, [state_dir]) == {"vm2": [pid_a]}
            assert rig_look.qemus(rig, host_b, [state_dir]) == {}
            assert not rig_look.exists(rig, host_b, f"{state_dir}/instances/vm2")
            assert await p.nodes["node-b"].read_record("vm2") is None
            rec_a = await p.nodes["node-a"].read_record("vm2")
            assert rec_a is not None and rec_a.node == "node-a"
            states = [await n.discover() for n in p.nodes.values()]
            (inst,) = merge_states(states).find("vm2")
            assert (inst.node, inst.state) == ("node-a", RunState.RUNNING)
            before = _last_tick(rig_look.read_file(rig, host_a, p.path("node-a", "vm2")) or "")
            with HostLog(rig, host_a, p.path("node-a", "vm2")) as log:
                await asyncio.to_thread(log.wait_for, f"tick {before + 1}", 15)  # the guest still runs there
            assert (await p.plan(on_a)).empty

    asyncio.run(go())


def test_post_copy_between_two_hosts(rig: netns_rig.Rig, guest: Guest, state_dir: str) -> None:
    """A capped pre-copy cannot finish in time, so the executor switches to post-copy (uncapped), which
    completes: the guest runs on B from then on."""
    settings = model.Migration(max_bandwidth=1024 * 1024, completion_timeout_per_gib=6.0, post_copy=True)

    async def go() -> None:
        async with pair(rig, state_dir) as p:
            vm3 = guest_spec(guest, "vm3", "node-a", migration=settings)
            _, before = await p.boot_on_a(vm3, state_dir)
            on_b = {"vm3": replace(vm3, node="node-b")}
            _, done = await p.apply(on_b)
            out = p.out.getvalue()
            assert done.ok, (done.line(), out)
            assert "not completed within 6s: switching to post-copy" in out, out
            assert "vm3: migrated node-a -> node-b" in out, out
            await p.assert_moved_to_b("vm3", state_dir, before)
            assert (await p.plan(on_b)).empty

    asyncio.run(go())


_SINK = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(4)
print("listening", flush=True)
while True:
    conn, _ = s.accept()
    while conn.recv(1 << 20):
        pass
    conn.close()
"""


def test_a_loopback_target_address_on_another_host_is_refused(rig: netns_rig.Rig, guest: Guest,
                                                              state_dir: str) -> None:
    """node-b's address left at 127.0.0.1: from host A that is A itself, where anything may listen on
    the port (here a sink that swallows the stream). The migration is refused before anything starts on
    B; the guest runs on A as before (without the check, A streamed its memory into the sink, took it
    for a completed migration, and the guest stayed paused on A while B's target waited forever)."""
    host_a, host_b = rig.hosts[0], rig.hosts[1]

    async def go() -> None:
        async with pair(rig, state_dir, node_b="127.0.0.1") as p:
            b = p.specs["node-b"]
            pid_a, _ = await p.boot_on_a(guest_spec(guest, "vm4", "node-a"), state_dir)
            sink = rig_look.popen_in(rig, host_a, sys.executable, "-c", _SINK, str(b.migration_ports.first))
            try:
                assert sink.stdout is not None and sink.stdout.readline() == b"listening\n"
                plan, done = await p.apply({"vm4": guest_spec(guest, "vm4", "node-b")})
            finally:
                sink.kill()
                sink.wait()
                assert sink.stdout is not None
                sink.stdout.close()
            assert [a.kind for a in plan.actions] == [ActionKind.MIGRATE]
            (failed,) = done.failed
            assert failed.detail == (
                "node node-b's address 127.0.0.1 is a loopback address, which node node-a (on another "
                "machine) cannot migrate to; set node node-b's address to one that node-a's host reaches")
            assert rig_look.qemus(rig, host_a, [state_dir]) == {"vm4": [pid_a]}
            assert rig_look.qemus(rig, host_b, [state_dir]) == {}
            assert not rig_look.exists(rig, host_b, f"{state_dir}/instances/vm4")
            session = await p.nodes["node-a"].qmp("vm4", 10)
            try:
                assert (await session.execute("query-status"))["status"] == "running"
            finally:
                await session.close()

    asyncio.run(go())


class Watching(LineProgress):
    """Progress lines, and an event set once a migration reports its first percentage."""

    def __init__(self, stream: io.StringIO) -> None:
        super().__init__(stream)
        self.migrating = asyncio.Event()

    def percent(self, instance: str, text: str, percent: float) -> None:
        super().percent(instance, text, percent)
        self.migrating.set()


def test_a_cross_host_migration_interrupted_mid_way_stays_on_the_source(rig: netns_rig.Rig, guest: Guest,
                                                                      state_dir: str) -> None:
    """The run is cancelled (Ctrl-C in apply) while the guest streams to B: the migration is cancelled
    on A, the target killed on B through B's pidfd, and the guest goes on on A."""
    host_a, host_b = rig.hosts[0], rig.hosts[1]
    slow = model.Migration(max_bandwidth=1024 * 1024)  # minutes for 128 MiB: far longer than the test

    async def go() -> None:
        async with pair(rig, state_dir) as p:
            on_a = {"vm5": guest_spec(guest, "vm5", "node-a", migration=slow)}
            pid_a, _ = await p.boot_on_a(on_a["vm5"], state_dir)
            on_b = {"vm5": guest_spec(guest, "vm5", "node-b", migration=slow)}
            plan = await p.plan(on_b)
            assert [a.kind for a in plan.actions] == [ActionKind.MIGRATE]
            progress = Watching(p.out)
            run = asyncio.create_task(run_plan(plan, Context(nodes=p.nodes, specs=on_b, progress=progress)))
            async with asyncio.timeout(60):
                await progress.migrating.wait()
            assert len(rig_look.qemus(rig, host_b, [state_dir])) == 1  # the target, listening on B
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            assert "vm5: interrupted: cancelling the migration" in p.out.getvalue(), p.out.getvalue()
            assert rig_look.qemus(rig, host_a, [state_dir]) == {"vm5": [pid_a]}
            assert rig_look.qemus(rig, host_b, [state_dir]) == {}
            assert not rig_look.exists(rig, host_b, f"{state_dir}/instances/vm5")
            assert await p.nodes["node-a"].read_intent("vm5") is None
            session = await p.nodes["node-a"].qmp("vm5", 10)
            try:
                assert (await session.execute("query-status"))["status"] == "running"
            finally:
                await session.close()
            assert (await p.plan(on_a)).empty

    asyncio.run(go())
