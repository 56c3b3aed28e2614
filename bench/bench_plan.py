"""Benchmark: plan 10,000 instances in memory (goal: median <= 100 ms). Prints medians.

The world: 20 nodes without memory limits, 10,000 declared instances. Most run unchanged; 5% have a
restart-forcing change, 2% moved node, 1% are new, 1% crashed, plus 100 orphans. Also times the
text and JSON renders of the resulting plan.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace

from reconciler.actual import ActualInstance, ActualState, RunState, StopCause
from reconciler.model import DesiredState, Disk, InstanceSpec, Nic, NodeSpec
from reconciler.planner import Plan, make_plan
from reconciler.render.json import render_json
from reconciler.render.text import render_text

N, NODES, RUNS = 10_000, 20, 15


def world() -> tuple[DesiredState, ActualState]:
    nodes = {f"node-{i:02d}": NodeSpec(name=f"node-{i:02d}", state_dir=f"/srv/{i}") for i in range(NODES)}
    specs: dict[str, InstanceSpec] = {}
    recs: list[ActualInstance] = []
    for i in range(N):
        name = f"vm-{i:05d}"
        s = InstanceSpec(
            name=name, memory_mib=512, vcpus=2, node=f"node-{i % NODES:02d}",
            disks=(Disk(f"/img/{name}.qcow2", boot=True),),
            nics=(Nic(f"52:54:00:00:{i // 256:02x}:{i % 256:02x}"),),
            labels=(("app", "bench"),),
        )
        specs[name] = s
        recorded = s
        if i % 20 == 1:
            recorded = replace(s, memory_mib=256)  # restart-forcing change
        where = s.node or ""
        if i % 50 == 2:
            where = f"node-{(i + 1) % NODES:02d}"  # node changed: migrate
        if i % 100 == 3:
            continue  # new
        state, cause = (RunState.CRASHED, StopCause.CRASH) if i % 100 == 4 else (RunState.RUNNING, None)
        pid = 10_000 + i if state.has_process else None
        recs.append(ActualInstance(name, where, state, recorded, pid=pid, stop_cause=cause))
    for j in range(100):
        orphan = InstanceSpec(name=f"old-{j:03d}", memory_mib=256)
        where = f"node-{j % NODES:02d}"
        recs.append(ActualInstance(orphan.name, where, RunState.RUNNING, orphan, pid=90_000 + j))
    return DesiredState(instances=specs, nodes=nodes, prune=False), ActualState(instances=tuple(recs))


def median_ms(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    desired, actual = world()
    plan: Plan = make_plan(desired, actual)
    kinds = sorted({a.kind for a in plan.actions})
    counts = ", ".join(f"{k.value}={plan.count(k)}" for k in kinds)
    print(f"plan of {N} instances: {len(plan.actions)} actions ({counts}), {len(plan.orphans)} orphans")
    print(f"make_plan     median {median_ms(lambda: make_plan(desired, actual)):8.1f} ms  (goal <= 100 ms)")
    print(f"render_text   median {median_ms(lambda: render_text(plan)):8.1f} ms")
    print(f"render_json   median {median_ms(lambda: render_json(plan)):8.1f} ms")


if __name__ == "__main__":
    main()
