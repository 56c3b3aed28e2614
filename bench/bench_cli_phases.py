"""Benchmark: where a CLI run's time goes (medians over runs).

For each scenario, the CLI runs as a fresh process with RECONCILER_PHASES=1 (reconciler.phases): the
interpreter's start up to our first import, our imports and argument parsing, manifest load, lock,
discovery, git, plan, render, the action, and within it the state-file writes, QEMU's launch and
`qemu --version` (absent when its cache answers). Then one run under `python -X importtime` gives the
slowest imports (cumulative, per import at the top), and a bare `python -c pass` the interpreter's
floor.

The CLI runs with a private bytecode cache (bench_cli.cli_env); the first run of each scenario fills it.
Scenarios: `plan` with nothing to change (one running instance), `status` of the same, `apply` of one
new instance (started, then killed and forgotten between runs, so every run is a first start) and a hard
stop (`apply --force` of that instance made Halted, with the action's QEMU `quit` inside it).
Every QEMU started here is killed at the end (pinned by a pidfd and verified by its argv).
Usage: python3 bench/bench_cli_phases.py [--runs N] [--top 12]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_cli import cli_argv, cli_env
from executor.kit import World, make_world

GUEST = Path("/var/tmp/reconciler-guest")


def run_cli(world: World, *args: str, extra_env: dict[str, str] | None = None,
            python_flags: tuple[str, ...] = ()) -> tuple[float, str]:
    env = cli_env(extra_env)  # with a bytecode cache, as an installed package runs
    t0 = time.time()
    env["RECONCILER_PHASES_T0"] = repr(t0)
    start = time.perf_counter()
    done = subprocess.run([*cli_argv(*python_flags), *args, str(world.manifests)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"reconciler {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return elapsed, done.stderr


def phases_of(stderr: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] == "phase":
            out[parts[1]] = out.get(parts[1], 0.0) + float(parts[2])
    return out


def importtime(stderr: str, top: int) -> list[tuple[str, float]]:
    """Cumulative import time of each import done at the top (not as a child of another), in ms, slowest
    first: the command's own lazy imports show up one by one (reconciler.manifest, asyncio, ...)."""
    per: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) == 1:  # a top-level import (its cumulative figure includes children)
            per[m.group(4)] += int(m.group(2)) / 1000
    return sorted(per.items(), key=lambda kv: -kv[1])[:top]


def interpreter_floor(runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=cli_env())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def scenario(name: str, samples: list[tuple[float, dict[str, float]]]) -> None:
    names: list[str] = []
    for _, ph in samples:
        names += [n for n in ph if n not in names]
    names.sort(key=lambda n: n == "total")  # last, though a later sample may add a phase ("rest")
    wall = statistics.median(s[0] for s in samples) * 1000
    print(f"\n{name}: wall {wall:.0f} ms (median of {len(samples)})")
    for n in names:
        values = [ph.get(n, 0.0) for _, ph in samples]
        print(f"  {n:34} {statistics.median(values):7.1f} ms")


def bench_plan(world: World, runs: int) -> list[tuple[float, dict[str, float]]]:
    world.instance("p0", "node-a")
    run_cli(world, "apply", "--yes")
    samples = []
    for _ in range(runs):
        elapsed, err = run_cli(world, "plan", extra_env={"RECONCILER_PHASES": "1"})
        samples.append((elapsed, phases_of(err)))
    return samples


def bench_status(world: World, runs: int) -> list[tuple[float, dict[str, float]]]:
    """`status` of the world `bench_plan` left (one running instance)."""
    samples = []
    for _ in range(runs):
        elapsed, err = run_cli(world, "status", extra_env={"RECONCILER_PHASES": "1"})
        samples.append((elapsed, phases_of(err)))
    return samples


def bench_apply(world: World, runs: int) -> tuple[list[tuple[float, dict[str, float]]],
                                                  list[tuple[float, dict[str, float]]]]:
    """The phases of each first start, and of the hard stop that follows it."""
    starts, stops = [], []
    for i in range(runs):
        world.instance(f"s{i}", "node-a")
        elapsed, err = run_cli(world, "apply", "--yes", "--target", f"s{i}",
                               extra_env={"RECONCILER_PHASES": "1"})
        starts.append((elapsed, phases_of(err)))
        world.instance(f"s{i}", "node-a", runStrategy="Halted")
        elapsed, err = run_cli(world, "apply", "--yes", "--force", "--target", f"s{i}",
                               extra_env={"RECONCILER_PHASES": "1"})
        stops.append((elapsed, phases_of(err)))
        world.reap()
        world.remove(f"s{i}")
        shutil.rmtree(world.paths("node-a", f"s{i}").dir, ignore_errors=True)
    return starts, stops


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} CPUs)")
    print(f"python -c pass: {interpreter_floor(args.runs) * 1000:.0f} ms (median of {args.runs})")
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as tmp, \
            make_world(Path(tmp), str(GUEST / "vmlinuz"), str(GUEST / "initrd.img")) as world:
        scenario("plan, nothing to change", bench_plan(world, args.runs))
        scenario("status, one running", bench_status(world, args.runs))
        _, err = run_cli(world, "plan", python_flags=("-X", "importtime"))
        world.reap()
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as tmp, \
            make_world(Path(tmp), str(GUEST / "vmlinuz"), str(GUEST / "initrd.img")) as world:
        starts, stops = bench_apply(world, args.runs)
        scenario("apply of one new instance", starts)
        scenario("hard stop (apply --force, Halted)", stops)
        world.instance("imp", "node-a")
        _, apply_err = run_cli(world, "apply", "--yes", python_flags=("-X", "importtime"))
    for title, text in (("plan", err), ("apply", apply_err)):
        print(f"\nslowest imports of `{title}` (python -X importtime, cumulative per import at the top):")
        for pkg, ms in importtime(text, args.top):
            print(f"  {pkg:34} {ms:7.1f} ms")


if __name__ == "__main__":
    main()
