"""Benchmark: a live memory change through `reconciler apply` vs the same change as a restart (medians).

- live: an instance with `maxMemory` has its `memory` changed (128M <-> 96M, the balloon); from the CLI
  starting (`reconciler apply --yes` as a child process) until the guest reports its new MemTotal on
  its serial console (asked for with "report" the moment apply returns; its own 1 s tick may come first).
- restart: the same change to an instance without `maxMemory`, which restarts it (stop, start); from
  the CLI starting until the new guest's ready line.
- vcpus: the same for vCPUs 1 -> 2 (CPU hotplug; one run per instance, as vCPUs do not go down live),
  until the guest reports 2 online CPUs.

The goal (issue 15): live at most 1/4 of restart. A live memory change is confirmed by the first
BALLOON_CHANGE on the way to the target (QEMU holds the next one for a second), so most of it is the
CLI's own start (imports, discovery, plan) and the guest's report. Every QEMU started here is killed at
the end (pinned by a pidfd and verified by its argv). Usage: python3 bench/bench_live_update.py [--runs N]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import MEMORY_HOTPLUG_CMDLINE, SerialConsole, SerialLog, wait_for_report
from executor.kit import World, make_world

GUEST = Path("/var/tmp/reconciler-guest")
TIMEOUT = 120.0


def declare(world: World, name: str, node: str = "node-a", **spec: Any) -> None:
    words = ["quiet", "panic=-1", f"reconciler.tag={name}", MEMORY_HOTPLUG_CMDLINE]
    kernel = {"path": world.kernel, "initrd": world.initrd, "root": "/dev/ram0", "cmdline": " ".join(words)}
    world.instance(name, node, kernel=kernel, **spec)


def apply(world: World) -> None:
    done = subprocess.run([sys.executable, "-m", "reconciler", "apply", "--yes", str(world.manifests)],
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise SystemExit(f"apply failed:\n{done.stdout}{done.stderr}")


def console(world: World, name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(world.paths("node-a", name).serial)
    return sock


def boot(world: World, name: str, **spec: Any) -> tuple[SerialLog, int]:
    """Start `name`, wait for its first report: the serial log and the guest's MemTotal (KiB)."""
    declare(world, name, **spec)
    apply(world)
    log = SerialLog(world.serial_log("node-a", name))
    log.wait_for(f"reconciler-guest: ready {name}", TIMEOUT)
    return log, wait_for_report(log, lambda r: True, TIMEOUT).mem_kib


def bench_live(world: World, runs: int) -> list[float]:
    _, kib = boot(world, "live", memory="128M", maxMemory="384M")
    tty = SerialConsole(console(world, "live"))  # read as it goes: an unread socket would stall the guest
    times = []
    memory = 128
    for i in range(runs):
        target = 96 if i % 2 == 0 else 128
        want = kib + (target - memory) * 1024  # the guest keeps some memory for itself: relative to the last
        declare(world, "live", memory=f"{target}M", maxMemory="384M")
        t0 = time.perf_counter()
        apply(world)
        tty.send("report\n")
        report = wait_for_report(tty, lambda r, w=want: abs(r.mem_kib - w) <= 4096, TIMEOUT)
        times.append(time.perf_counter() - t0)
        memory, kib = target, report.mem_kib
    tty.close()
    return times


def bench_restart(world: World, runs: int) -> list[float]:
    boot(world, "restart", memory="128M")
    times = []
    for i in range(runs):
        memory = 96 if i % 2 == 0 else 128
        declare(world, "restart", memory=f"{memory}M")
        t0 = time.perf_counter()
        apply(world)
        SerialLog(world.serial_log("node-a", "restart")).wait_for("reconciler-guest: ready restart", TIMEOUT)
        times.append(time.perf_counter() - t0)
    return times


def bench_vcpus(world: World, runs: int) -> tuple[list[float], list[float]]:
    live, restart = [], []
    for i in range(runs):
        name = f"cpu{i}"
        log, _ = boot(world, name, vcpus=1, maxVcpus=2)
        declare(world, name, vcpus=2, maxVcpus=2)
        t0 = time.perf_counter()
        apply(world)
        wait_for_report(log, lambda r: r.cpus == 2, TIMEOUT)
        live.append(time.perf_counter() - t0)
        name = f"cpr{i}"
        boot(world, name, vcpus=1)
        declare(world, name, vcpus=2)
        t0 = time.perf_counter()
        apply(world)
        SerialLog(world.serial_log("node-a", name)).wait_for(f"reconciler-guest: ready {name}", TIMEOUT)
        restart.append(time.perf_counter() - t0)
        declare(world, f"cpu{i}", vcpus=2, maxVcpus=2, runStrategy="Halted")  # one pair at a time
        declare(world, name, vcpus=2, runStrategy="Halted")
        apply(world)
    return live, restart


def line(title: str, live: list[float], restart: list[float]) -> str:
    lm, rm = statistics.median(live), statistics.median(restart)
    verdict = "ok" if lm <= rm / 4 else "MISSED"
    return (f"{title:<28} live {lm * 1000:8.0f} ms   restart {rm * 1000:8.0f} ms   "
            f"live/restart {lm / rm:5.3f} (goal <= 0.25: {verdict})   n={len(live)}/{len(restart)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vcpu-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp, \
            make_world(Path(tmp), str(GUEST / "vmlinuz"), str(GUEST / "initrd.img")) as world:
        live = bench_live(world, args.runs)
        restart = bench_restart(world, args.runs)
        print(line("memory 128M <-> 96M", live, restart), flush=True)
        cpu_live, cpu_restart = bench_vcpus(world, args.vcpu_runs)
        print(line("vcpus 1 -> 2", cpu_live, cpu_restart), flush=True)


if __name__ == "__main__":
    main()
