"""Benchmark: a disk hot-added through `reconciler apply` vs the bare QMP way, until the guest sees it.

One running test guest (TCG). Each run, interleaved so that load hits both alike:
- apply (CLI): the manifest gains a disk; from `reconciler apply --yes` starting as a child process
  (interpreter, imports, discovery, plan, the live update) until the guest's report lists the disk
  (the guest reports at once on the block uevent). The disk is then removed with apply (not timed).
- apply (in process): the same through `reconciler.cli.main` in this process (no interpreter start and
  no imports: what apply itself costs).
- bare QMP: `blockdev-add` + `device_add virtio-blk-pci` by hand on the instance's QMP socket, until the
  guest lists the disk; then removed by hand (`device_del`, DEVICE_DELETED, `blockdev-del`; not timed).

The goal (issue 15): apply at most 300 ms. Every QEMU started here is killed at the end (the world's
teardown, verified by argv). Usage: python3 bench/bench_live_devices.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import SerialConsole, SerialLog, wait_for_report
from executor.kit import World, make_world

from reconciler import cli, qmp

GUEST = Path("/var/tmp/reconciler-guest")
TIMEOUT = 120.0
MAC = "52:54:00:bb:00:01"
MIB = 1024 * 1024


def declare(world: World, disks: list[str]) -> None:
    world.instance("dev", "node-a", disks=[{"path": p} for p in disks], nics=[{"mode": "user", "mac": MAC}])


PHASES: dict[str, list[float]] = {}  # where the timed CLI applies spent their time (RECONCILER_PHASES)


def apply_child(world: World, timed: bool = False) -> None:
    env = dict(os.environ, RECONCILER_PHASES="1", RECONCILER_PHASES_T0=repr(time.time())) if timed else None
    done = subprocess.run([sys.executable, "-m", "reconciler", "apply", "--yes", str(world.manifests)],
                          capture_output=True, text=True, timeout=300, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"apply failed:\n{done.stdout}{done.stderr}")
    for line in done.stderr.splitlines() if timed else ():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] == "phase":
            PHASES.setdefault(parts[1].strip(), []).append(float(parts[2]))


def apply_child_timed(world: World) -> None:
    apply_child(world, timed=True)


def apply_here(world: World) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(["apply", "--yes", str(world.manifests)])
    if code != 0:
        raise SystemExit(f"apply failed:\n{out.getvalue()}")


def console(world: World) -> SerialConsole:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(world.paths("node-a", "dev").serial)
    return SerialConsole(sock)


def sees(tty: SerialConsole, want: bool) -> None:
    wait_for_report(tty, lambda r: ("vda" in r.blk) is want, TIMEOUT)


async def bare_add(sock: str, path: str) -> None:
    s = await qmp.connect(sock, 5.0)
    try:
        file = {"driver": "file", "node-name": "bare-file", "filename": path}
        await s.execute("blockdev-add", {"driver": "raw", "node-name": "bare-format", "file": file})
        await s.execute("device_add", {"driver": "virtio-blk-pci", "id": "bare", "drive": "bare-format"})
    finally:
        await s.close()


async def bare_remove(sock: str) -> None:
    s = await qmp.connect(sock, 5.0)
    try:
        await s.execute("device_del", {"id": "bare"})
        while True:
            event = await s.wait_event(["DEVICE_DELETED"], 30.0)
            if isinstance(event.data, dict) and event.data.get("device") == "bare":
                break
        await s.execute("blockdev-del", {"node-name": "bare-format"})
    finally:
        await s.close()


def run(world: World, runs: int) -> dict[str, list[float]]:
    data = Path(world.root) / "data.img"
    bare = Path(world.root) / "bare.img"
    for p in (data, bare):
        with open(p, "wb") as f:
            f.truncate(8 * MIB)
    declare(world, [])
    apply_child(world)
    SerialLog(world.serial_log("node-a", "dev")).wait_for("reconciler-guest: ready dev", TIMEOUT)
    tty = console(world)  # read as it goes: an unread socket would stall the guest
    tty.send("report\n")
    sees(tty, False)
    times: dict[str, list[float]] = {"apply (CLI child)": [], "apply (in process)": [], "bare QMP": []}
    qmp_sock = world.paths("node-a", "dev").qmp
    for _ in range(runs):
        for how, applier in (("apply (CLI child)", apply_child_timed), ("apply (in process)", apply_here)):
            declare(world, [str(data)])
            t0 = time.perf_counter()
            applier(world)
            sees(tty, True)
            times[how].append(time.perf_counter() - t0)
            declare(world, [])
            apply_child(world)
            sees(tty, False)
        t0 = time.perf_counter()
        asyncio.run(bare_add(qmp_sock, str(bare)))
        sees(tty, True)
        times["bare QMP"].append(time.perf_counter() - t0)
        asyncio.run(bare_remove(qmp_sock))
        sees(tty, False)
    tty.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-devices-") as tmp, \
            make_world(Path(tmp), str(GUEST / "vmlinuz"), str(GUEST / "initrd.img")) as world:
        times = run(world, args.runs)
    bare = statistics.median(times["bare QMP"])
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for how, values in times.items():
        med = statistics.median(values)
        goal = "" if how == "bare QMP" else f"   (goal <= 300 ms: {'ok' if med <= 0.3 else 'MISSED'})"
        print(f"disk hot-add, {how:<20} median {med * 1000:6.0f} ms   x{med / bare:5.2f} of bare   "
              f"min {min(values) * 1000:6.0f}   n={len(values)}{goal}", flush=True)
    print("apply (CLI child), median ms per phase: " + ", ".join(
        f"{name} {statistics.median(ms):.0f}" for name, ms in PHASES.items()))


if __name__ == "__main__":
    main()
