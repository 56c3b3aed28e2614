"""Run the benchmarks behind the README's table in one go, one after another, on one machine.

Each benchmark runs as its own process (so none inherits another's imports, caches or children) with its
output streamed here and into a log file; a header names the commit, the interpreter, the machine's load
and its floor (`python -c pass`), and each part says how long it took and the load average after it. The
README's table is written from one such log (issue 13: "regenerated from one run of bench/ on a quiet
machine"). Parts that need what is not here (libvirt) skip themselves, as the benchmarks do alone.

Usage: python3 bench/run_all.py [--log FILE] [--only cli,migration,...] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, script, arguments, arguments with --quick)
PARTS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("cli", "bench_cli.py", ("--runs", "9"), ("--runs", "3")),
    ("phases", "bench_cli_phases.py", ("--runs", "7"), ("--runs", "3")),
    ("migration", "bench_apply.py", ("--only", "migration", "--runs", "7"),
     ("--only", "migration", "--runs", "3")),
    ("migration-options", "bench_migration_options.py", ("--runs", "5"), ("--runs", "2")),
    ("watch", "bench_watch.py", (), ("--running", "1,20")),
    ("discovery", "bench_discovery.py", (), ("--runs", "3")),
    ("scale", "bench_scale.py", ("--runs", "3"), ("--quick",)),
)


def floor_ms(runs: int = 9) -> float:
    """The interpreter's floor here: `python -c pass`, median wall ms."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def revision() -> str:
    done = subprocess.run(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", default="/tmp/reconciler-bench.log")
    parser.add_argument("--only", help="comma-separated parts: " + ",".join(p[0] for p in PARTS))
    parser.add_argument("--quick", action="store_true", help="fewer runs and sizes (a smoke run)")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else {p[0] for p in PARTS}
    unknown = wanted - {p[0] for p in PARTS}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    failed = []
    empty = tempfile.mkdtemp(prefix="bench-cwd-")
    with open(args.log, "w", encoding="utf-8") as log:
        def say(line: str) -> None:
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()

        now = datetime.datetime.now(datetime.UTC)
        say(f"# bench/run_all.py {now:%Y-%m-%d %H:%M} UTC, commit {revision()}, {sys.executable} "
            f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f}, python -c pass {floor_ms():.0f} ms")
        for name, script, full, quick in PARTS:
            if name not in wanted:
                continue
            say(f"\n## {name}: {script} {' '.join(quick if args.quick else full)}")
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, str(HERE / script), *(quick if args.quick else full)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    cwd=empty)  # not a checkout: `-m reconciler` must find the install
            assert proc.stdout is not None
            for line in proc.stdout:
                say(line.rstrip("\n"))
            rc = proc.wait()
            took = time.perf_counter() - t0
            say(f"## {name}: exit {rc}, {took:.0f} s, load average {os.getloadavg()[0]:.2f}")
            if rc != 0:
                failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)} (see {args.log})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
