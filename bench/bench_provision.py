"""Benchmark: what creating the disks adds to a start (issue 14's goal: at most +40 ms), medians.

- created: `reconciler apply --yes` (in this process) of one new instance whose qcow2 overlay on a base
  image is missing and which has a cloud-init seed: the plan checks the base (qemu-img info) and the
  free space, the start creates the overlay (qemu-img create) and its ownership record, writes the seed
  ISO, then launches QEMU until QMP reports running.
- present: the same start with the overlay already there (made beforehand, not timed) and no seed.
- seed: writing a NoCloud seed ISO (reconciler.provision.iso, pycdlib) of a typical user-data, alone.
- steps: the added work alone, through the node interface as the plan and the start do it (the base's
  check with the free space, the overlay's creation with its ownership record, the seed ISO), without
  QEMU: on a loaded machine the whole starts' medians are noisier than the difference they measure.
- base check: the base looked at in this process (provision.baseprobe: its first bytes, QEMU's write
  lock), as the plan and the start now do, beside `qemu-img info` of it, as the plan did before.

Runs alternate between the two kinds so the machine's load hits both alike; the median of each pair's
difference (created minus the present run right after it) is shown too, less swayed by load that
drifts. Every QEMU started here is killed at the end (pinned by a pidfd and verified by its argv).
Usage: python3 bench/bench_provision.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from executor.kit import World, make_world

GUEST = Path("/var/tmp/reconciler-guest")
USER_DATA = "#cloud-config\nusers:\n  - name: ops\n    ssh_authorized_keys: [ssh-ed25519 AAAA... ops]\n" * 4


def _apply(world: World) -> float:
    t0 = time.perf_counter()
    done = world.apply()
    elapsed = time.perf_counter() - t0
    if done.code != 0:
        raise SystemExit(f"apply failed:\n{done.text}")
    return elapsed


def _one(world: World, images: Path, base: Path, name: str, present: bool) -> float:
    overlay = images / f"{name}.qcow2"
    if present:
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)]
        subprocess.run(argv, check=True)
    seed = {} if present else {"cloudInit": {"userData": USER_DATA}}
    world.instance(name, "node-a", disks=[{"path": str(overlay), "baseImage": str(base)}], **seed)
    try:
        return _apply(world)
    finally:
        world.reap()
        world.remove(name)  # its record stays (crashed, no restart: no longer declared)


def _seed_ms(runs: int) -> float:
    from reconciler.provision import iso, seed

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            built = seed.build_seed(f"vm{i}", seed.SeedSpec(user_data=USER_DATA))
            t0 = time.perf_counter()
            iso.write_seed_iso(f"{tmp}/seed{i}.iso", built)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _steps_ms(images: Path, base: Path, runs: int) -> float:
    import asyncio

    from reconciler import model
    from reconciler.node import LocalNode
    from reconciler.provision import iso, seed
    from reconciler.provision.imagecheck import DiskRequest, ImageQuery

    node = LocalNode(model.NodeSpec("bench", str(images / "state")))
    times = []
    for i in range(runs):
        path = str(images / f"steps{i}.qcow2")
        t0 = time.perf_counter()
        asyncio.run(node.check_images([ImageQuery(path, str(base))]))
        asyncio.run(node.create_disk(f"s{i}", DiskRequest(path, "qcow2", str(base))))
        iso.write_seed_iso(str(images / f"seed{i}.iso"), seed.build_seed(f"s{i}", seed.SeedSpec(USER_DATA)))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _base_check_ms(base: Path, runs: int) -> tuple[float, float]:
    from reconciler.provision import baseprobe

    probe, info = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        assert baseprobe.probe(str(base)) is not None
        t1 = time.perf_counter()
        subprocess.run(["qemu-img", "info", "--output=json", str(base)], check=True, capture_output=True)
        t2 = time.perf_counter()
        probe.append(t1 - t0)
        info.append(t2 - t1)
    return statistics.median(probe) * 1000, statistics.median(info) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-prov-") as tmp:
        tmp_path = Path(tmp)
        images = tmp_path / "images"
        images.mkdir()
        base = images / "base.raw"
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(base), "32M"], check=True)
        (tmp_path / "t").mkdir()
        with make_world(tmp_path / "t", str(GUEST / "vmlinuz"), str(GUEST / "initrd.img")) as world:
            _one(world, images, base, "warm", present=False)  # imports (pycdlib), caches, QEMU version
            steps = _steps_ms(images, base, args.runs * 3)
            probe, info = _base_check_ms(base, args.runs * 3)
            created, present = [], []
            for i in range(args.runs):
                created.append(_one(world, images, base, f"c{i}", present=False))
                present.append(_one(world, images, base, f"p{i}", present=True))
    c, p = statistics.median(created) * 1000, statistics.median(present) * 1000
    for label, median, runs in (("created", c, created), ("present", p, present)):
        shown = ", ".join(f"{t * 1000:.0f}" for t in runs)
        print(f"start, overlay {label}:  median {median:7.1f} ms  (runs: {shown})")
    paired = statistics.median(a - b for a, b in zip(created, present, strict=True)) * 1000
    print(f"added by overlay + seed: {c - p:+7.1f} ms  (goal: at most +40 ms); median of the run pairs' "
          f"differences {paired:+.1f} ms")
    print(f"seed ISO written alone:  median {_seed_ms(args.runs * 3):7.1f} ms")
    print(f"the added steps alone:   median {steps:7.1f} ms  (base check + overlay + record + seed, no QEMU)")
    print(f"base check in process:   median {probe:7.3f} ms  (qemu-img info of it: {info:.1f} ms)")


if __name__ == "__main__":
    main()
