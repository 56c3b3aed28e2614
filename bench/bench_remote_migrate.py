"""Benchmark: the cross-host migrate action against a bare QMP migration on the same link (medians).

Builds the test rig (tests/remote/netns_rig.py) with two hosts, A and B: network namespaces on one
bridge, each with Debian's sshd and its own mount and PID namespaces. Per run, one after the other so
that only one guest runs at a time (and in alternating order, so that a drifting load hits both alike):

- ours: the tiny guest (128 MiB, TCG) started on node-a (a RemoteNode on A) by the executor and booted;
  then the plan that moves it to node-b (on B) is run by `run_plan`. Measured: the migrate action's wall
  time (ActionResult.seconds): the target launched on B through B's agent, capabilities and
  parameters, `migrate` to B's address, the events followed, B recorded, the source quit on A.
- bare: the same guest with the same argv, started by hand on A (nsenter into the host, no agent) and
  booted; then, timed, the target started by hand on B with `-incoming tcp:<B>:<port>` until its QMP
  answers, and on the source `migrate-set-capabilities` (events), `migrate-set-parameters` (no cap,
  300 ms downtime), `migrate`, until the MIGRATION event says completed.

Both streams go between the same two namespaces over the same bridge; both QMPs travel over the same
SSH links (sockets forwarded by asyncssh), so the difference is the executor's own work. Every QEMU dies
with its host when the rig is torn down (the host's init is killed), on every exit path.

Usage: python3 bench/bench_remote_migrate.py [--runs N]   (needs root and openssh-server)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reconciler import argv, model, qmp  # noqa: E402
from reconciler.argv import IncomingSpec  # noqa: E402
from reconciler.executor.context import Context  # noqa: E402
from reconciler.executor.progress import LineProgress  # noqa: E402
from reconciler.executor.schedule import run_plan  # noqa: E402
from reconciler.node import merge_states  # noqa: E402
from reconciler.planner import make_plan  # noqa: E402
from reconciler.planner.actions import ActionKind  # noqa: E402
from reconciler.remote.node import RemoteNode  # noqa: E402
from reconciler.remote.ssh import HostLink, SshTarget, open_link  # noqa: E402
from tests.remote import netns_rig, rig_look  # noqa: E402

AGENT = ("env", f"PYTHONPATH={REPO}", sys.executable, "-m", "reconciler", "agent")
GUEST = Path("/var/tmp/reconciler-guest")
TICK = re.compile(r"reconciler-guest: tick (\d+)")
BOOT_TIMEOUT = 120.0
OURS_DIR = f"{netns_rig.STATE_ROOT}/ours"
BARE_DIR = f"{netns_rig.STATE_ROOT}/bare"
BARE_CAPABILITIES = [{"capability": "events", "state": True}, {"capability": "auto-converge", "state": False},
                     {"capability": "postcopy-ram", "state": False}]
BARE_PARAMETERS = {"max-bandwidth": (1 << 63) - 1, "downtime-limit": 300}  # as the executor's defaults


def guest(name: str, node: str | None) -> model.InstanceSpec:
    kernel = model.KernelBoot(str(GUEST / "vmlinuz"), "/dev/ram0", str(GUEST / "initrd.img"),
                              f"quiet panic=-1 reconciler.tag={name}")
    return model.InstanceSpec(name=name, memory_mib=128, node=node, kernel=kernel, shutdown_timeout=10.0)


def node_spec(rig: netns_rig.Rig, host: netns_rig.Host, name: str, state_dir: str) -> model.NodeSpec:
    ssh = model.SshSpec(host=host.address, identity_file=rig.identity_file,
                        known_hosts_file=rig.known_hosts_file, connect_timeout=5.0, agent_command=AGENT)
    return model.NodeSpec(name=name, state_dir=state_dir, address=host.address,
                          accelerator=model.Accelerator.TCG, ssh=ssh)


def wait_booted(rig: netns_rig.Rig, host: netns_rig.Host, serial_log: str) -> None:
    with rig_look.HostLog(rig, host, serial_log) as log:
        log.wait_for(TICK, BOOT_TIMEOUT)


class Bench:
    def __init__(self, rig: netns_rig.Rig, links: dict[str, HostLink]) -> None:
        self.rig = rig
        self.a, self.b = rig.hosts[0], rig.hosts[1]
        self.links = links
        self.specs = {"node-a": node_spec(rig, self.a, "node-a", OURS_DIR),
                      "node-b": node_spec(rig, self.b, "node-b", OURS_DIR)}
        self.nodes = {n: RemoteNode(s, links[n]) for n, s in self.specs.items()}
        self.bare_specs = {"a": node_spec(rig, self.a, "bare-a", BARE_DIR),
                           "b": node_spec(rig, self.b, "bare-b", BARE_DIR)}
        self.out = io.StringIO()

    async def _apply(self, instances: dict[str, model.InstanceSpec]) -> float:
        states = await asyncio.gather(*(n.discover() for n in self.nodes.values()))
        plan = make_plan(model.DesiredState(instances=instances, nodes=self.specs, prune=True),
                         merge_states(states), allow_empty=True)
        ctx = Context(nodes=self.nodes, specs=instances, progress=LineProgress(self.out))
        done = await run_plan(plan, ctx)
        if not done.ok:
            raise SystemExit(f"{done.line()}\n{self.out.getvalue()}")
        return sum(r.seconds for r in done.results if r.action.kind is ActionKind.MIGRATE)

    async def ours(self, i: int) -> float:
        name = f"m{i}"
        await self._apply({name: guest(name, "node-a")})
        wait_booted(self.rig, self.a, self.nodes["node-a"].paths(name).serial_log)
        seconds = await self._apply({name: guest(name, "node-b")})
        await self._apply({})  # pruned: its QEMU on B stops before the bare run
        return seconds

    async def bare(self, i: int) -> float:
        name = f"b{i}"
        spec = guest(name, None)
        src = argv.build_launch(spec, self.bare_specs["a"])
        port = self.bare_specs["b"].migration_ports.first + i
        tgt = argv.build_launch(spec, self.bare_specs["b"], incoming=IncomingSpec(self.b.address, port))
        for host, built in ((self.a, src), (self.b, tgt)):
            rig_look.run_in(self.rig, host, "mkdir", "-p", built.paths.dir)
        rig_look.run_in(self.rig, self.a, *src.argv)  # -daemonize: returns once QEMU is set up
        wait_booted(self.rig, self.a, src.paths.serial_log)
        src_qmp = await self.links["node-a"].forward_unix(src.paths.qmp)
        tgt_qmp = await self.links["node-b"].forward_unix(tgt.paths.qmp)
        began = time.perf_counter()
        await asyncio.to_thread(rig_look.run_in, self.rig, self.b, *tgt.argv)
        async with qmp.session(tgt_qmp) as target:  # until the target's QMP answers, as ours waits
            await target.execute("query-status")
            async with qmp.session(src_qmp) as source:
                await source.execute("migrate-set-capabilities", {"capabilities": BARE_CAPABILITIES})
                await source.execute("migrate-set-parameters", BARE_PARAMETERS)
                await source.execute("migrate", {"uri": f"tcp:{self.b.address}:{port}"})
                while True:
                    ev = await source.wait_event(["MIGRATION"], 120)
                    if ev.data.get("status") in ("completed", "failed", "cancelled"):
                        break
                elapsed = time.perf_counter() - began
                if ev.data.get("status") != "completed":
                    raise SystemExit(f"bare migration {ev.data}")
                await source.execute("quit")
            await target.execute("quit")
        return elapsed


async def bench(rig: netns_rig.Rig, runs: int) -> tuple[list[float], list[float]]:
    links: dict[str, HostLink] = {}
    try:
        for name, host in (("node-a", rig.hosts[0]), ("node-b", rig.hosts[1])):
            links[name] = await open_link(SshTarget(name, host.address, identity_file=rig.identity_file,
                                                    known_hosts_file=rig.known_hosts_file,
                                                    agent_command=AGENT))
        b = Bench(rig, links)
        ours, bare = [], []
        for i in range(runs):  # alternating which goes first, so a load that drifts hits both alike
            if i % 2:
                bare.append(await b.bare(i))
                ours.append(await b.ours(i))
            else:
                ours.append(await b.ours(i))
                bare.append(await b.bare(i))
            print(f"run {i + 1}/{runs}: ours {ours[-1] * 1000:.0f} ms, bare {bare[-1] * 1000:.0f} ms",
                  file=sys.stderr)
        return ours, bare
    finally:
        for link in links.values():
            await link.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which(netns_rig.SSHD) is None:
        print("needs root and openssh-server", file=sys.stderr)
        return 1
    if not (GUEST / "vmlinuz").exists():
        print(f"no test guest in {GUEST} (python3 tests/guest/build.py builds it)", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="bench-rmig-")
    rig = netns_rig.Rig.up(2, work)
    try:
        ours, bare = asyncio.run(bench(rig, args.runs))
    finally:
        rig.down()  # each host's init dies, and every QEMU of the host with it
        shutil.rmtree(work, ignore_errors=True)
    mo, mb = statistics.median(ours), statistics.median(bare)
    print(f"cross-host live migration, 128 MiB TCG guest, {args.runs} runs (medians)")
    print(f"{'what':52} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    print(f"{'migrate action (executor, RemoteNode A -> B)':52} {mo * 1000:10.0f} {min(ours) * 1000:8.0f} "
          f"{max(ours) * 1000:8.0f}")
    print(f"{'bare QMP migration (by hand, same hosts and link)':52} {mb * 1000:10.0f} "
          f"{min(bare) * 1000:8.0f} {max(bare) * 1000:8.0f}")
    print(f"{'ratio ours / bare (goal <= 1.2)':52} {mo / mb:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

