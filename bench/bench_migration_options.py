"""Benchmark: the migration defaults, each choice against its alternatives, with bare QMP (medians).

One fresh test guest (128 MiB, idle) is migrated in a chain over loopback, each hop to a newly launched
target, the variants taking turns (each round in a new random order) so a loaded machine weighs on all
of them alike:

- `ours`: what `reconciler apply` sends (executor.migrate): capabilities `events` on, `auto-converge` and
  `postcopy-ram` off; `max-bandwidth` uncapped (INT64_MAX), `downtime-limit` 300 ms.
- `qemu-default-cap`: no `migrate-set-parameters` at all: QEMU's default 128 MiB/s cap (the old default).
- `bandwidth-0`: `max-bandwidth` 0 (what "0 means no cap" would send if passed through as it is).
- `downtime-100` / `downtime-1000`: ours with another downtime limit.
- `multifd-2` / `multifd-4`: ours plus the `multifd` capability and that many channels on both sides
  (the target starts with `-incoming defer` to get its capabilities before `migrate-incoming`).
- `no-events-poll`: the `events` capability off, completion found by polling `query-migrate` every 5 ms.

Per hop: `total` from the target's launch to the completed status (as bench_apply's bare baseline),
`migrate` from the `migrate` command to completion, and QEMU's reported downtime.
Every QEMU started here is killed at the end (pinned by a pidfd and verified by its argv).
Usage: python3 bench/bench_migration_options.py [--runs N] [--only ours,multifd-2,...]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from executor.kit import World, make_world

from reconciler import argv, launch, model, procs, qmp
from reconciler.argv import IncomingSpec
from reconciler.executor.migrate import UNCAPPED
from reconciler.pidfd import ProcessHandle

GUEST = Path("/var/tmp/reconciler-guest")
OURS_CAPS = {"events": True, "auto-converge": False, "postcopy-ram": False}


@dataclass(frozen=True)
class Variant:
    caps: dict[str, bool]
    params: dict[str, int] | None  # None: send no migrate-set-parameters (QEMU's defaults)
    multifd: int = 0  # channels; 0 = off
    events: bool = True


def ours(**params: int) -> dict[str, int]:
    return {"downtime-limit": 300, "max-bandwidth": UNCAPPED, **params}


VARIANTS = {
    "ours": Variant(OURS_CAPS, ours()),
    "qemu-default-cap": Variant(OURS_CAPS, None),
    "bandwidth-0": Variant(OURS_CAPS, ours(**{"max-bandwidth": 0})),
    "downtime-100": Variant(OURS_CAPS, ours(**{"downtime-limit": 100})),
    "downtime-1000": Variant(OURS_CAPS, ours(**{"downtime-limit": 1000})),
    "multifd-2": Variant({**OURS_CAPS, "multifd": True}, ours(**{"multifd-channels": 2}), multifd=2),
    "multifd-4": Variant({**OURS_CAPS, "multifd": True}, ours(**{"multifd-channels": 4}), multifd=4),
    "no-events-poll": Variant({**OURS_CAPS, "events": False}, ours(), events=False),
}


def capabilities(caps: dict[str, bool]) -> dict[str, Any]:
    return {"capabilities": [{"capability": c, "state": s} for c, s in caps.items()]}


@dataclass
class Hop:
    total: float
    migrate: float
    downtime: float
    sent_mib: float


class Chain:
    def __init__(self, world: World) -> None:
        self.world = world
        self.count = itertools.count()
        self.ports = itertools.cycle(range(world.ports, world.ports + 32))
        self.current: tuple[model.InstanceSpec, model.NodeSpec, launch.Launched] | None = None

    def spec(self) -> tuple[model.InstanceSpec, model.NodeSpec]:
        k = next(self.count)
        node = self.world.node("node-a" if k % 2 == 0 else "node-b")
        spec = model.InstanceSpec(name=f"h{k}", memory_mib=128, kernel=model.KernelBoot(
            str(GUEST / "vmlinuz"), "/dev/ram0", str(GUEST / "initrd.img"), "quiet panic=-1"))
        return spec, node

    async def boot(self) -> None:
        from conftest import SerialLog

        spec, node = self.spec()
        built = argv.build_launch(spec, node)
        launched = await launch.launch(spec.name, built.argv, built.paths, 60.0)
        await asyncio.to_thread(SerialLog(Path(built.paths.serial_log)).wait_for,
                                "reconciler-guest: ready", 60)
        self.current = (spec, node, launched)

    async def hop(self, v: Variant) -> Hop:
        assert self.current is not None
        old_spec, old_node, old = self.current
        source_qmp = self.world.paths(old_node.name, old_spec.name).qmp
        spec, node = self.spec()
        port = next(self.ports)
        uri = f"tcp:127.0.0.1:{port}"
        defer = v.multifd > 0
        built = argv.build_launch(spec, node, incoming=IncomingSpec(None if defer else "127.0.0.1", port))
        t0 = time.perf_counter()
        launched = await launch.launch(spec.name, built.argv, built.paths, 30.0)
        if defer:
            async with qmp.session(built.paths.qmp) as tgt:
                await tgt.execute("migrate-set-capabilities", capabilities({"multifd": True}))
                await tgt.execute("migrate-set-parameters", {"multifd-channels": v.multifd})
                await tgt.execute("migrate-incoming", {"uri": uri})
        async with qmp.session(source_qmp) as src:
            # multifd stated either way: a source that was a multifd target keeps the capability on
            await src.execute("migrate-set-capabilities", capabilities({"multifd": False, **v.caps}))
            if v.params is not None:
                await src.execute("migrate-set-parameters", v.params)
            t1 = time.perf_counter()
            await src.execute("migrate", {"uri": uri})
            info = await (_events(src) if v.events else _poll(src))
            t2 = time.perf_counter()
            if info.get("status") != "completed":
                raise SystemExit(f"migration {spec.name} ({v}): {info}")
            await src.execute("quit")
        await _wait_gone(old)
        shutil.rmtree(self.world.paths(old_node.name, old_spec.name).dir, ignore_errors=True)
        self.current = (spec, node, launched)
        sent = info.get("ram", {}).get("transferred", 0) / (1 << 20)
        return Hop(t2 - t0, t2 - t1, float(info.get("downtime", 0)), sent)


async def _events(src: qmp.QmpSession) -> dict[str, Any]:
    while True:
        ev = await src.wait_event(["MIGRATION"], 120)
        if ev.data.get("status") in ("completed", "failed", "cancelled"):
            info: dict[str, Any] = await src.execute("query-migrate")
            return info


async def _poll(src: qmp.QmpSession) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info: dict[str, Any] = await src.execute("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            return info
        await asyncio.sleep(0.005)  # the alternative being measured: polling instead of events
    raise SystemExit("no completion within 120 s")


async def _wait_gone(old: launch.Launched) -> None:
    handle = ProcessHandle.open_verified(old.pid, lambda p: procs.check(p, old.create_time, old.argv).ours)
    if handle is None:
        return
    with handle:
        await handle.wait_exit(30.0)


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:6.0f}"


async def run(world: World, names: list[str], runs: int) -> dict[str, list[Hop]]:
    chain = Chain(world)
    await chain.boot()
    results: dict[str, list[Hop]] = {n: [] for n in names}
    rng = random.Random(13)
    for _ in range(runs):
        for name in rng.sample(names, len(names)):
            results[name].append(await chain.hop(VARIANTS[name]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    args = parser.parse_args()
    names = args.only.split(",")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-migopts-") as tmp, \
            make_world(Path(tmp), str(GUEST / "vmlinuz"), str(GUEST / "initrd.img")) as world:
        results = asyncio.run(run(world, names, args.runs))
    print(f"medians of {args.runs} hops each, 128 MiB idle guest, loopback, TCG; "
          f"load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} CPUs)")
    print(f"{'variant':18} {'total ms':>8} {'migrate ms':>10} {'downtime ms':>11} {'MiB sent':>8}")
    for name in names:
        hops = results[name]
        print(f"{name:18} {ms([h.total for h in hops]):>8} {ms([h.migrate for h in hops]):>10} "
              f"{statistics.median(h.downtime for h in hops):>11.0f} "
              f"{statistics.median(h.sent_mib for h in hops):>8.1f}")


if __name__ == "__main__":
    main()
