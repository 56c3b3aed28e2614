"""Benchmark: `reconciler validate` end to end (a subprocess), on 1,000 and 10,000 generated instances.

Manifests are realistic (about 20 lines per instance: disks, NICs, kernel, migration) and written in two
layouts: many instances per file (multi-document) and one instance per file. Prints the median of 5 runs
(wall clock, and CPU time, which other load on the machine disturbs less).
Goal: 10,000 instances validate in at most 1.5 s on the 2-core development machine.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 5
NODES = 20
PER_FILE = 50

NODE = """apiVersion: reconciler/v1
kind: Node
metadata:
  name: node-{i}
spec:
  address: 127.0.0.{i1}
  stateDir: ../state/node-{i}
  accelerator: tcg
  migrationPorts: {{first: 50000, last: 50063}}
  memory: 64G
"""

DEFAULTS = """apiVersion: reconciler/v1
kind: Defaults
metadata:
  name: defaults
spec:
  prune: false
  vcpus: 1
  shutdownTimeout: 30s
  migration:
    maxBandwidth: 1G
"""

INSTANCE = """apiVersion: reconciler/v1
kind: Instance
metadata:
  name: vm-{i}
  labels:
    tier: web
spec:
  node: node-{node}
  memory: 512M
  vcpus: 2
  runStrategy: Always
  disks:
    - path: /srv/vm/vm-{i}.qcow2
      format: qcow2
      cache: none
  nics:
    - mac: "52:54:00:{m2:02x}:{m1:02x}:{m0:02x}"
      mode: bridge
      bridge: br0
  shutdownTimeout: 1m
  migration:
    maxDowntime: 300ms
"""


def instance(i: int) -> str:
    return INSTANCE.format(i=i, node=i % NODES, m2=(i >> 16) & 255, m1=(i >> 8) & 255, m0=i & 255)


def generate(root: Path, count: int, per_file: int) -> None:
    root.mkdir(parents=True)
    (root / "nodes.yaml").write_text("---\n".join(NODE.format(i=i, i1=i + 1) for i in range(NODES)))
    (root / "defaults.yaml").write_text(DEFAULTS)
    for start in range(0, count, per_file):
        docs = [instance(i) for i in range(start, min(start + per_file, count))]
        sub = root / f"group-{start // 1000:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"vms-{start:06d}.yaml").write_text("---\n".join(docs))


def time_validate(path: Path) -> tuple[float, float]:
    """Median wall-clock seconds and median CPU seconds (user + sys, the process and its fork)."""
    walls, cpus = [], []
    for _ in range(RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler", "validate", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            sys.exit(f"validate failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for count in (1_000, 10_000):
            for per_file, layout in ((PER_FILE, f"{PER_FILE} per file"), (1, "one per file")):
                root = Path(tmp) / f"{count}-{per_file}"
                generate(root, count, per_file)
                wall, cpu = time_validate(root)
                print(
                    f"{count:>6} instances, {layout:>12}: median {wall:.3f} s of {RUNS} (CPU {cpu:.3f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
