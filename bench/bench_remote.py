"""Benchmark: the cost of a remote node's SSH link, side by side with the same work done locally.

Builds the test rig (tests/remote/netns_rig.py: hosts as network namespaces with Debian's sshd), then
measures, each as a median of R runs in one process:
- opening a link: TCP + SSH handshake + key auth + starting `reconciler agent` + its hello;
- one agent call's round trip (ping), and 20 concurrent ones (one connection, multiplexed);
- discovery of a remote node with N paused QEMUs, against discovery of a local node with as many;
- launching one paused QEMU (-S, 16 MiB, no guest) until QMP answers: on the remote host, and locally.
Tears the rig and every QEMU down on every exit path. Needs root and openssh-server.

Usage: python3 bench/bench_remote.py [--runs R] [--instances N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reconciler import argv, launch, model, node  # noqa: E402
from reconciler.remote.node import RemoteNode  # noqa: E402
from reconciler.remote.ssh import SshTarget, open_link  # noqa: E402
from tests.remote import netns_rig  # noqa: E402

AGENT = ("env", f"PYTHONPATH={REPO}", sys.executable, "-m", "reconciler", "agent")


def paused(i: int) -> model.InstanceSpec:
    return model.InstanceSpec(name=f"b{i:03d}", memory_mib=16, serial_console=False, extra_args=("-S",))


async def median_ms(runs: int, fn: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


async def bench(rig: netns_rig.Rig, runs: int, count: int, local_dir: str) -> list[tuple[str, float, float]]:
    host = rig.hosts[0]
    target = SshTarget("r1", host.address, identity_file=rig.identity_file,
                       known_hosts_file=rig.known_hosts_file, agent_command=AGENT)
    remote_spec = model.NodeSpec(name="r1", state_dir=f"{netns_rig.STATE_ROOT}/bench", address=host.address,
                                 accelerator=model.Accelerator.TCG)
    local_spec = model.NodeSpec(name="l1", state_dir=local_dir, accelerator=model.Accelerator.TCG)
    rows: list[tuple[str, float, float]] = []

    async def open_close() -> None:
        await (await open_link(target)).close()

    rows.append(("open a link (connect, auth, agent hello)", await median_ms(runs, open_close), float("nan")))
    link = await open_link(target)
    remote = RemoteNode(remote_spec, link)
    local = node.LocalNode(local_spec)
    try:
        rows.append(("one agent call (ping)", await median_ms(runs * 5, lambda: link.call("ping", timeout=5)),
                     float("nan")))
        rows.append(("20 concurrent agent calls", await median_ms(
            runs, lambda: asyncio.gather(*(link.call("ping", timeout=5) for _ in range(20)))), float("nan")))
        launches: list[tuple[node.LocalNode | RemoteNode, launch.Launched]] = []
        for i in range(count):
            for n in (remote, local):
                ld = argv.build_launch(paused(i), n.spec)
                launches.append((n, await n.launch(paused(i).name, ld, 30)))
        rows.append((f"discovery, {count} paused QEMUs", await median_ms(runs, remote.discover),
                     await median_ms(runs, local.discover)))
        timings: dict[str, list[float]] = {"r": [], "l": []}
        for k in range(runs):
            for key, n in (("r", remote), ("l", local)):
                spec = paused(900 + k)
                ld = argv.build_launch(spec, n.spec)
                began = time.perf_counter()
                launches.append((n, await n.launch(spec.name, ld, 30)))
                timings[key].append((time.perf_counter() - began) * 1000)
        rows.append(("launch one paused QEMU until QMP answers", statistics.median(timings["r"]),
                     statistics.median(timings["l"])))
    finally:
        await link.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--instances", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which(netns_rig.SSHD) is None:
        print("needs root and openssh-server", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="bench-remote-")
    local_dir = tempfile.mkdtemp(prefix="br-", dir="/tmp")
    rig = netns_rig.Rig.up(1, work)
    try:
        rows = asyncio.run(bench(rig, args.runs, args.instances, local_dir))
    finally:
        rig.down()  # the host's init dies: every remote QEMU with it
        _kill_local(local_dir)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(local_dir, ignore_errors=True)
    print(f"{'what':48} {'remote ms':>10} {'local ms':>10}")
    for what, r, loc in rows:
        print(f"{what:48} {r:10.1f} {loc:10.1f}")
    return 0


def _kill_local(state_dir: str) -> None:
    """Every local QEMU this run started: their -pidfile lies under our private state dir."""
    import signal

    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if any(a.startswith(state_dir + "/") for a in cmd) and "-pidfile" in cmd:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
