"""Benchmark: discovery and `status --json` with 100 paused QEMU processes on one node.

Discovery runs before every status, plan and apply; the goal is <= 200 ms for 100 instances. This starts
100 real QEMUs (TCG, -S, -m 16, no guest) through the real launch path in parallel batches, writes their
applied records, then times `discovery.discover` and `reconciler status --json` (median of 10 each), and
kills every QEMU it started (verified by create_time + cmdline) on every exit path.

Usage: python3 bench/bench_discovery.py [--count N] [--runs R] [--batch B]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from reconciler import argv, cli, discovery, launch, model, procs, records, statedir
from reconciler.actual import RunState
from reconciler.pidfd import ProcessHandle


def _spec(i: int, node: str) -> model.InstanceSpec:
    return model.InstanceSpec(name=f"b{i:03d}", memory_mib=16, node=node, serial_console=False,
                              extra_args=("-S",))


async def _start_all(specs: list[model.InstanceSpec], node: model.NodeSpec, batch: int,
                     started: list[launch.Launched]) -> None:
    version = launch.qemu_version(node.qemu_binary)

    async def one(spec: model.InstanceSpec) -> None:
        built = argv.build_launch(spec, node)
        got = await launch.launch(spec.name, built.argv, built.paths, 60.0)
        started.append(got)
        statedir.write_record(built.paths, records.AppliedRecord.create(
            spec, node.name, got.argv, version, got.pid, got.create_time, got.started_at))

    for i in range(0, len(specs), batch):
        await asyncio.gather(*(one(s) for s in specs[i:i + batch]))


async def _kill_all(started: list[launch.Launched]) -> None:
    handles = []
    for item in started:
        h = ProcessHandle.open_verified(
            item.pid, lambda pid, it=item: procs.check(pid, it.create_time, it.argv).ours)  # type: ignore[misc]
        if h is not None:
            h.send_signal(signal.SIGKILL)
            handles.append(h)
    await asyncio.gather(*(h.wait_exit(10.0) for h in handles))
    for h in handles:
        h.close()


def _manifests(directory: str, node: model.NodeSpec, specs: list[model.InstanceSpec]) -> None:
    docs = [f"apiVersion: reconciler/v1\nkind: Node\nmetadata: {{name: {node.name}}}\n"
            f"spec: {{stateDir: {node.state_dir}, accelerator: tcg}}\n"]
    docs += [f"apiVersion: reconciler/v1\nkind: Instance\nmetadata: {{name: {s.name}}}\n"
             f"spec: {{node: {node.name}, memory: 16M, serialConsole: false, qemuExtraArgs: ['-S']}}\n"
             for s in specs]
    with open(os.path.join(directory, "bench.yaml"), "w") as f:
        f.write("---\n".join(docs))


def _median_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), min(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--batch", type=int, default=10)
    opts = p.parse_args()
    state_dir = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    node = model.NodeSpec(name="bench", state_dir=state_dir, accelerator=model.Accelerator.TCG)
    specs = [_spec(i, node.name) for i in range(opts.count)]
    started: list[launch.Launched] = []
    try:
        t = time.perf_counter()
        asyncio.run(_start_all(specs, node, opts.batch, started))
        print(f"started {len(started)} paused QEMUs in {time.perf_counter() - t:.1f} s "
              f"(batches of {opts.batch})")
        state = discovery.discover([node])
        states = {i.state for i in state.instances}
        assert len(state.instances) == opts.count and states == {RunState.PAUSED}, states
        med, best = _median_ms(lambda: discovery.discover([node]), opts.runs)
        print(f"discovery: median {med:.1f} ms, best {best:.1f} ms over {opts.runs} runs "
              f"({opts.count} instances, goal <= 200 ms)")
        manifest_dir = os.path.join(state_dir, "manifests")
        os.mkdir(manifest_dir)
        _manifests(manifest_dir, node, specs)

        def status() -> None:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                rc = cli.main(["status", "--json", manifest_dir])
            assert rc == 0 and out.getvalue().count('"paused"') == opts.count, rc

        med, best = _median_ms(status, opts.runs)
        print(f"status --json (in-process, manifests + discovery + render): median {med:.1f} ms, "
              f"best {best:.1f} ms")
    finally:
        asyncio.run(_kill_all(started))
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
