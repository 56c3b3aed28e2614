"""Benchmark: `reconciler plan` end to end (a fresh CLI process) over 10,000 manifest instances.

Reuses the validate benchmark's generator (20 nodes, realistic 20-line instances, 50 per file). The
nodes' state directories are empty, so every instance plans as a start: the largest plan to render.
Goal: median at most 2 s on the 2-core development machine. Prints the median of 5 runs (BENCH_RUNS),
wall and CPU time. Usage: bench_plan_cli.py [COUNT ...] (default 1000 10000).
Side by side in one run (issue 14), the same tree three ways, their runs interleaved:
- plain: the disks exist;
- provisioned: every disk also names a base image (one qcow2 shared by all) and every instance has a
  cloud-init seed (inline user-data); the disks exist, so no image is opened at plan time;
- to create: the same, but no disk exists yet: every disk is about to be created, so the plan looks at the
  base (once: every disk shares it) and at the free space of the disks' directory.

The plan checks on the node what each start needs (docs/manifests.md, "Checks before apply"), so the
instances' disk files are created (empty) and the script runs in a private network and mount namespace
with the bridge `br0` the manifests name (root only; nothing appears on the host). Without root it says so
and exits.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_validate import PER_FILE, generate

RUNS = 5
_INSIDE = "RECONCILER_BENCH_NETNS"
SEED = """  shutdownTimeout: 1m
  cloudInit:
    userData: |
      #cloud-config
      users: [{name: ops, ssh_authorized_keys: [ssh-ed25519 AAAA]}]
"""


def enter_namespace() -> None:
    """Re-run this script in a private network + mount namespace that has a bridge br0 (and its own /sys,
    where /sys/class/net shows that namespace's interfaces). The namespace ends with the script."""
    if os.environ.get(_INSIDE) == "1":
        subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
        subprocess.run(["ip", "link", "add", "br0", "type", "bridge"], check=True)
        return
    if os.geteuid() != 0:
        sys.exit("bench_plan_cli needs root: it creates the bridge br0 in a private network namespace")
    os.environ[_INSIDE] = "1"
    os.execvp("unshare", ["unshare", "--net", "--mount", "--", sys.executable, *sys.argv])


def create_disks(root: Path, disks: Path, provisioned: bool = False, touch: bool = True) -> None:
    """Point the generated disk paths (/srv/vm/...) at files under `disks` (empty ones, with `touch`)."""
    disks.mkdir()
    if provisioned:
        base = ["qemu-img", "create", "-q", "-f", "qcow2", str(disks / "base.qcow2"), "1M"]  # room for all
        subprocess.run(base, check=True)
    for manifest in root.rglob("vms-*.yaml"):
        text = manifest.read_text().replace("/srv/vm/", f"{disks}/")
        if provisioned:
            base = f"      format: qcow2\n      baseImage: {disks}/base.qcow2\n"
            text = text.replace("      format: qcow2\n", base)
            text = text.replace("  shutdownTimeout: 1m\n", SEED)
        manifest.write_text(text)
        for line in text.splitlines():
            if touch and line.strip().startswith("- path: "):
                Path(line.split(": ", 1)[1]).touch()


def plan_once(path: Path, *extra: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one `plan` process; CPU (user + system) sways less with the machine's load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "reconciler", "plan", *extra, str(path)],
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 2):
        sys.exit(f"plan failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu


KINDS = (("plain", False, True), ("provisioned", True, True), ("to create", True, False))


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1_000, 10_000]
    runs = int(os.environ.get("BENCH_RUNS", RUNS))
    enter_namespace()
    with tempfile.TemporaryDirectory() as tmp:
        for count in sizes:
            trees = {}
            for kind, provisioned, touch in KINDS:
                where = Path(tmp) / f"{kind.replace(' ', '-')}{count}"
                root = where / "manifests"
                generate(root, count, PER_FILE)
                nodes = root / "nodes.yaml"  # room for every instance: a plan without capacity errors
                nodes.write_text(nodes.read_text().replace("memory: 64G", "memory: 1024G"))
                create_disks(root, where / "disks", provisioned, touch)
                trees[kind] = root
            times: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for _ in range(runs):  # interleaved: the machine's load hits every kind alike
                for kind, root in trees.items():
                    for fmt in ("text", "json"):
                        extra = ("--json",) if fmt == "json" else ()
                        times.setdefault((kind, fmt), []).append(plan_once(root, *extra))
            for kind in trees:
                shown = []
                for fmt in ("text", "json"):
                    wall = statistics.median(t[0] for t in times[(kind, fmt)])
                    cpu = statistics.median(t[1] for t in times[(kind, fmt)])
                    shown.append(f"{fmt} {wall:.3f} s (CPU {cpu:.3f} s)")
                print(f"{count:>6} instances, {kind:<11}: plan medians of {runs}: {', '.join(shown)}; "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)

if __name__ == "__main__":
    main()
