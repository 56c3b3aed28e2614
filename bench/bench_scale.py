"""Benchmark: cold `validate` and `plan` of large manifest trees: wall time and peak RSS, per tree size.

Trees of N instances (100 per file; bench_validate's realistic 20-line instances, 20 nodes) for N in
1k, 10k, 50k and 100k. Each figure is a fresh CLI process (`python -m reconciler ...`: nothing cached in
memory, no parsed-file cache), median of RUNS; the peak RSS is the largest of the process and the child it
forks to parse on two cores (os.wait4's rusage), median too. Goals (issue 13): 50k instances, validate
<= 1.5 s, plan <= 2.0 s, <= 150 MiB.

Plans:
- `plan (nothing to do)`: every instance `runStrategy: Halted`, nothing running, empty state dirs: the
  whole manifest and planning path, a one-line plan.
- `plan (all start)` (with --starts, root only): every instance plans as a start, so the node checks run
  (disk files exist, bridge br0 in a private network namespace, as bench_plan_cli does) and the largest
  plan is rendered.

Usage: python3 bench/bench_scale.py [--quick] [--sizes 1000,10000] [--runs N] [--starts]
Run it from outside the checkout (or with the package installed): `python -m reconciler` takes the
package from the current directory first, so PYTHONPATH alone does not pick the tree under test.

Figures (issue 13, 2026-12-02, the 2-core machine at load average 9-14, so the wall times say little;
CPU and RSS are steadier), before the fast reader (base 9bc262b) / after, median of 3:
  10,000: validate 2.50 / 1.94 s CPU, 80 / 58 MiB; plan (nothing to do) 3.10 / 2.22 s CPU, 82 / 60 MiB
  50,000: validate 11.5 / 7.9 s CPU, 311 / 208 MiB; plan (nothing to do) 16.5 / 8.4 s CPU, 312 / 208 MiB
(the base ran without byte code cached, which costs it a few tenths of a second of CPU here). The goals
(50,000: validate 1.5 s, plan 2.0 s wall, 150 MiB) are not met yet.

Round two (h/scale: reading by shape in yamlfast, schemacheck, memoized conversions, Instances built in
the parse workers), 2026-12-02, load average 6-12 again, median of 3; main (4b1e130) / h/scale:
  10,000: validate 2.29 / 1.72 s CPU, 58 / 44 MiB; plan 2.18 / 1.66 s CPU, 63 / 49 MiB
  50,000: validate 10.4 / 6.8 s CPU, 208 / 133 MiB; plan 10.4 / 8.5 s CPU, 213 / 137 MiB
  side by side at 50,000 (/usr/bin/time, two rounds): validate 7.6-8.4 / 6.3-7.0 s CPU, wall 16.6-20.5 /
  12.3-15.1 s; plan 8.7-9.9 / 6.3-7.1 s CPU
  curve (h/scale): 1k 0.33 s CPU 23 MiB, 10k 1.72 s 44 MiB, 50k 6.8 s 133 MiB, 100k 16.3 s 244 MiB
The memory goal holds at 50,000; the wall-time goals could not be judged on a machine this loaded (wall
was 2-4x CPU), and CPU says they are still about 2x away.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_validate import generate

PER_FILE = 100
SIZES = (1_000, 10_000, 50_000, 100_000)
QUICK_SIZES = (1_000, 10_000)


def run_once(args: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak RSS in MiB, CPU seconds (user + system, with the forked child) of one
    `python -m reconciler <args>`."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 2):
        sys.exit(f"reconciler {' '.join(args)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def measure(args: list[str], runs: int) -> str:
    """`wall s (CPU s) RSS MiB`, medians of `runs`."""
    results = [run_once(args) for _ in range(runs)]
    wall, rss, cpu = (statistics.median(r[i] for r in results) for i in range(3))
    return f"{wall:6.2f} s ({cpu:5.2f} CPU) {rss:4.0f} MiB"


def make_tree(root: Path, count: int, halted: bool) -> None:
    generate(root, count, PER_FILE)
    nodes = root / "nodes.yaml"  # room for every instance: a plan without capacity errors
    nodes.write_text(nodes.read_text().replace("memory: 64G", "memory: 8192G"))
    state = root.parent / "state"
    for i in range(20):
        (state / f"node-{i}").mkdir(parents=True, exist_ok=True)
    if halted:
        for manifest in root.rglob("vms-*.yaml"):
            manifest.write_text(manifest.read_text().replace("runStrategy: Always", "runStrategy: Halted"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1k and 10k instances, 3 runs")
    parser.add_argument("--sizes", help="comma-separated instance counts")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--starts", action="store_true", help="also plan every instance as a start (root)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (QUICK_SIZES if args.quick else SIZES)
    runs = args.runs or (3 if args.quick else 5)
    if args.starts:
        from bench_plan_cli import create_disks, enter_namespace

        enter_namespace()
    print(f"load average {os.getloadavg()[0]:.2f}; median of {runs} cold runs, {PER_FILE} instances per "
          "file; wall (CPU: user + system, the forked parser included) and peak RSS")
    print(f"{'instances':>9} | {'validate':>27} | {'plan (nothing to do)':>27}" + (
        f" | {'plan (all start)':>27}" if args.starts else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for count in sizes:
            halted = Path(tmp) / f"h{count}" / "manifests"
            make_tree(halted, count, halted=True)
            validate, plan = measure(["validate", str(halted)], runs), measure(["plan", str(halted)], runs)
            line = f"{count:>9} | {validate} | {plan}"
            if args.starts:
                starting = Path(tmp) / f"s{count}" / "manifests"
                make_tree(starting, count, halted=False)
                create_disks(starting, Path(tmp) / f"disks{count}")
                line += f" | {measure(['plan', str(starting)], runs)}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
