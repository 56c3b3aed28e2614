"""Benchmark: `reconciler apply` side by side with bare QEMU doing the same thing (medians).

- start: `reconciler apply --yes` of one new instance as a CLI process, until it returns (QMP reported
  running and the record is written), vs a bare `-daemonize` launch until QMP answers (launch.launch).
- stop: from the guest's power-off line on the serial console (read from the serial socket as it comes)
  to `apply` returning, for a Halted instance stopped through ACPI.
- migration: the migrate action's wall time (as apply reports it) over a bare script on the same guest
  that launches the destination with -incoming, runs QMP migrate and waits for completion, with the
  same capabilities and parameters as the action (no bandwidth cap) and waiting on the MIGRATION event;
  and, when libvirt is installed, `virsh migrate --live` of the same guest to a second libvirtd
  (bench/libvirt_peer.py).
- 20 instances from nothing with --parallel 4 vs 20 bare `-daemonize` launches in sequence, each until
  QMP answers.

Every QEMU started here is killed at the end (pinned by a pidfd and verified by its argv).
Usage: python3 bench/bench_apply.py [--runs N] [--fleet 20]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import libvirt_peer
from bench_cli import cli_argv, cli_env
from executor.kit import World, make_world

from reconciler import argv, launch, model, qmp
from reconciler.argv import IncomingSpec

GUEST = Path("/var/tmp/reconciler-guest")
POWER_OFF = b"reconciler-guest: power button, powering off"
READY = b"reconciler-guest: ready"
BARE_CAPABILITIES = [{"capability": "events", "state": True}, {"capability": "auto-converge", "state": False},
                     {"capability": "postcopy-ram", "state": False}]
BARE_PARAMETERS = {"max-bandwidth": (1 << 63) - 1, "downtime-limit": 300}  # INT64_MAX: no cap


def cli(world: World, *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run([*cli_argv(), *args, str(world.manifests)],
                          capture_output=True, text=True, env=cli_env(), timeout=300, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"reconciler {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return elapsed, done.stdout


class Serial:
    """A client of an instance's serial socket, timestamping each line as it arrives."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.seen: dict[bytes, float] = {}
        self.events: dict[bytes, threading.Event] = {POWER_OFF: threading.Event(), READY: threading.Event()}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while data := self.sock.recv(65536):
            now = time.perf_counter()
            buf += data
            for needle, ev in self.events.items():
                if needle in buf and not ev.is_set():
                    self.seen[needle] = now
                    ev.set()
            buf = buf[-200:]

    def wait(self, needle: bytes, timeout: float) -> float:
        if not self.events[needle].wait(timeout):
            raise SystemExit(f"no {needle!r} on the serial console within {timeout}s")
        return self.seen[needle]


def wait_settled(world: World, node: str, name: str) -> None:
    """The guest has loaded its device modules (its first `report` line, after `ready`): migrating it
    before then copies memory the module loads are still writing, and the figure varies by a factor of
    two from one run to the next."""
    from conftest import SerialLog

    SerialLog(world.serial_log(node, name)).wait_for("reconciler-guest: report", 60)


def wait_ready(world: World, node: str, name: str) -> None:
    from conftest import SerialLog

    SerialLog(world.serial_log(node, name)).wait_for("reconciler-guest: ready", 60)


def bench_start(world: World, runs: int) -> tuple[float, float]:
    ours, bare = [], []
    node = world.node("node-a")
    for i in range(runs):
        world.instance(f"s{i}", "node-a")
        ours.append(cli(world, "apply", "--yes")[0])  # exactly one start: the world is empty again
        spec = model.InstanceSpec(name=f"bare{i}", memory_mib=128, kernel=model.KernelBoot(
            str(GUEST / "vmlinuz"), "/dev/ram0", str(GUEST / "initrd.img")))
        built = argv.build_launch(spec, node)
        t0 = time.perf_counter()
        asyncio.run(launch.launch(spec.name, built.argv, built.paths, 30.0))
        bare.append(time.perf_counter() - t0)
        world.reap()
        world.remove(f"s{i}")  # else the next apply restarts every earlier (killed) instance too
        for name in (f"s{i}", f"bare{i}"):
            shutil.rmtree(world.paths("node-a", name).dir, ignore_errors=True)
    return statistics.median(ours), statistics.median(bare)


def bench_stop(world: World, runs: int) -> float:
    gaps = []
    for i in range(runs):
        name = f"p{i}"
        world.instance(name, "node-a")
        cli(world, "apply", "--yes", "--target", name)
        wait_ready(world, "node-a", name)
        serial = Serial(world.paths("node-a", name).serial)
        world.instance(name, "node-a", runStrategy="Halted")
        proc = subprocess.Popen([*cli_argv(), "apply", "--yes", "--target", name,
                                 str(world.manifests)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=cli_env())
        out, _ = proc.communicate(timeout=60)
        returned = time.perf_counter()
        if proc.returncode != 0 or b"ACPI power-off" not in out:
            raise SystemExit(f"stop failed:\n{out.decode()}")
        gaps.append(returned - serial.wait(POWER_OFF, 1.0))
    return statistics.median(gaps)


async def _bare_migrate(source_qmp: str, target: model.InstanceSpec, node: model.NodeSpec,
                        port: int) -> float:
    built = argv.build_launch(target, node, incoming=IncomingSpec("127.0.0.1", port))
    t0 = time.perf_counter()
    await launch.launch(target.name, built.argv, built.paths, 30.0)
    async with qmp.session(source_qmp) as src:
        # The same QEMU operation as the migrate action, the fastest way QMP allows: its capabilities
        # and parameters (no bandwidth cap, QEMU's own downtime limit), waiting on events.
        await src.execute("migrate-set-capabilities", {"capabilities": BARE_CAPABILITIES})
        await src.execute("migrate-set-parameters", BARE_PARAMETERS)
        await src.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        while True:
            ev = await src.wait_event(["MIGRATION"], 60)
            if ev.data.get("status") in ("completed", "failed", "cancelled"):
                break
    elapsed = time.perf_counter() - t0
    if ev.data.get("status") != "completed":
        raise SystemExit(f"bare migration {ev.data}")
    return elapsed


def bench_migrate(world: World, runs: int) -> tuple[float, float]:
    ours, bare = [], []
    for i in range(runs):
        name = f"m{i}"
        world.instance(name, "node-a")
        cli(world, "apply", "--yes", "--target", name)
        wait_settled(world, "node-a", name)
        world.instance(name, "node-b")
        _, out = cli(world, "apply", "--yes", "--target", name)
        found = re.search(rf"{name}: migrated node-a -> node-b in ([\d.]+)s", out)
        assert found, out
        ours.append(float(found.group(1)))
        world.reap()  # the bare run gets the same machine: no guest of ours left running beside it
        world.remove(name)
        # bare: the same guest, launched on node-a without us, migrated by hand to a plain target
        bname = f"bm{i}"
        world.instance(bname, "node-a")
        cli(world, "apply", "--yes", "--target", bname)
        wait_settled(world, "node-a", bname)
        from executor.kit import record_of

        spec = record_of(world, "node-a", bname).spec
        target = model.InstanceSpec(**{**{f: getattr(spec, f) for f in spec.__slots__}, "name": bname})
        port = world.node("node-b").migration_ports.first + i
        bare.append(asyncio.run(_bare_migrate(world.paths("node-a", bname).qmp, target,
                                              world.node("node-b"), port)))
        world.remove(bname)
        world.reap()
    return statistics.median(ours), statistics.median(bare)


def bench_fleet(world: World, count: int) -> tuple[float, float]:
    for i in range(count):
        world.instance(f"f{i:02d}", None)
    ours, _ = cli(world, "apply", "--yes", "--parallel", "4")
    world.reap()
    node = world.node("node-b")
    t0 = time.perf_counter()
    for i in range(count):
        spec = model.InstanceSpec(name=f"g{i:02d}", memory_mib=128, kernel=model.KernelBoot(
            str(GUEST / "vmlinuz"), "/dev/ram0", str(GUEST / "initrd.img")))
        built = argv.build_launch(spec, node)
        asyncio.run(launch.launch(spec.name, built.argv, built.paths, 60.0))
    bare = time.perf_counter() - t0
    world.reap()
    return ours, bare


def _section(title: str, fn: Callable[[World], str]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp, \
            make_world(Path(tmp), str(GUEST / "vmlinuz"), str(GUEST / "initrd.img")) as world:
        print(f"{title}: {fn(world)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fleet", type=int, default=20)
    parser.add_argument("--no-libvirt", action="store_true", help="skip the libvirt migration baseline")
    parser.add_argument("--only", default="start,stop,migration,fleet",
                        help="comma-separated sections to run (default: all)")
    args = parser.parse_args()
    runs = args.runs

    def start(w: World) -> str:
        ours, bare = bench_start(w, runs)
        return f"apply (CLI) {ours * 1000:.0f} ms vs bare launch+QMP {bare * 1000:.0f} ms (goal <= 213 ms)"

    def stop(w: World) -> str:
        gap = bench_stop(w, runs)
        return f"power-off line -> apply returned {gap * 1000:.0f} ms (goal <= 30 ms)"

    def migrate(w: World) -> str:
        ours, bare = bench_migrate(w, runs)
        line = (f"migrate action {ours * 1000:.0f} ms vs bare {bare * 1000:.0f} ms: "
                f"ratio {ours / bare:.2f} (goal <= 1.2)")
        if not args.no_libvirt and libvirt_peer.available():
            times = libvirt_peer.migrations(str(GUEST / "vmlinuz"), str(GUEST / "initrd.img"), runs)
            virt = statistics.median(times)
            line += f" | virsh migrate --live {virt * 1000:.0f} ms (ours / libvirt {ours / virt:.2f})"
        return line

    def fleet(w: World) -> str:
        ours, bare = bench_fleet(w, args.fleet)
        return (f"{args.fleet} instances: apply --parallel 4 {ours:.2f} s vs sequential bare "
                f"{bare:.2f} s (goal: no slower)")

    print(f"medians of {runs} runs (fleet: one run each)")
    wanted = set(args.only.split(","))
    for title, fn in (("start", start), ("stop", stop), ("migration", migrate), ("fleet", fleet)):
        if title in wanted:
            _section(title, fn)


if __name__ == "__main__":
    main()
