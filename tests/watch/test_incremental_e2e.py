"""End-to-end: the real daemon's discovery is incremental (reconciler.watch.known), against real QEMU.

A pass after an edit looks only at the instances touched since the last pass, not at every running one;
a QEMU exit and a QMP event each make the next pass look at their instance (so what it knows follows
the QEMUs); another run holding a node lock between passes, and SIGHUP, make the next discovery full.
Counted with the daemon's own figures: the `discovery` field of each pass's log line and the
reconciler_discoveries_total metric. The guests have nothing to boot (no kernel, no disk): the
firmware idles, so five of them cost little CPU.
"""

from __future__ import annotations

import asyncio
import signal

import pytest
import yaml
from executor.kit import World, kill_verified, record_of

from reconciler import qmp

from .daemon_kit import Daemon, Event, metric

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def bare(world: World, name: str, **spec: object) -> None:
    """An instance with nothing to boot on node-a."""
    body = {"node": "node-a", "memory": "32M", "serialConsole": False, **spec}
    doc = {"apiVersion": "reconciler/v1", "kind": "Instance", "metadata": {"name": name}, "spec": body}
    (world.manifests / f"{name}.yaml").write_text(yaml.safe_dump(doc))


def full_scans(d: Daemon) -> float:
    return metric(d.metrics(), "reconciler_discoveries_total", kind="full")


def looked(ev: Event) -> int:
    """How many instances a pass's partial discovery looked at (the pass must not have been full)."""
    word = str(ev["discovery"])
    assert word.isdigit(), ev
    return int(word)


def qmp_command(world: World, name: str, command: str) -> None:
    async def go() -> None:
        async with qmp.session(world.paths("node-a", name).qmp, 10.0) as s:
            await s.execute(command, timeout=10.0)

    asyncio.run(go())


def test_passes_look_only_at_touched_instances_and_doubts_make_them_full(
        world: World, daemons: list[Daemon]) -> None:
    names = [f"vm{i}" for i in range(1, 5)]
    for name in names:
        bare(world, name)
    d = Daemon(world.manifests, "--resync", "600")  # no periodic resync during the test
    daemons.append(d)
    d.ready()
    d.actions("start", names)
    first = d.wait("reconcile")
    assert first["discovery"] == "full (startup)", first
    d.wait("reconcile", where=lambda e: e["actions"] == 0)
    fulls = full_scans(d)
    assert fulls == 1

    # Two edits: each pass looks at what it acted on or heard of, never at the four that run.
    bare(world, "new")
    d.action("new", "start")
    bare(world, "off", runStrategy="Halted")  # declared, nothing to do
    ev = d.wait("reconcile", where=lambda e: e["reparsed"] == 1 and e["actions"] == 0)
    assert looked(ev) <= 1, ev  # at most `new`, once its watcher connects (events before were not heard)
    bare(world, "off", runStrategy="Halted", memory="48M")
    ev = d.wait("reconcile", where=lambda e: e["reparsed"] == 1)
    assert looked(ev) <= 1 and ev["actions"] == 0, ev
    assert full_scans(d) == fulls

    # A QEMU killed: its exit (pidfd) makes the next pass look at it, which restarts it.
    mark = d.mark()
    kill_verified(record_of(world, "node-a", "vm2").pid, "/instances/vm2/")
    d.action("vm2", "start", reason="crashed")
    passes = [e for e in d.since(mark) if e.get("event") == "reconcile"]
    ev = d.wait("reconcile") if not passes else passes[-1]
    assert 1 <= looked(ev) <= 2, ev

    # A QMP event (a stop asked over the control socket): the next pass knows the guest is paused.
    qmp_command(world, "vm3", "stop")
    ev = d.wait("reconcile", where=lambda e: "qemu" in e["triggers"])
    assert looked(ev) >= 1, ev
    assert metric(d.metrics(), "reconciler_instances", state="paused") == 1
    qmp_command(world, "vm3", "cont")  # RESUME wakes no pass, but the next one looks at vm3 again
    bare(world, "off", runStrategy="Halted", memory="40M")
    ev = d.wait("reconcile", where=lambda e: e["reparsed"] == 1)
    assert 1 <= looked(ev) <= 2, ev  # vm3 (and vm2, if its new watcher connected only since)
    assert metric(d.metrics(), "reconciler_instances", state="paused") == 0
    assert full_scans(d) == fulls

    # Another run took the node locks between passes (an apply with nothing to do): the next pass is full
    # (whatever wakes it: the edit, or a crash-loop hold of vm2 running out meanwhile).
    assert world.apply().code == 0
    bare(world, "off", runStrategy="Halted", memory="36M")
    ev = d.wait("reconcile",
                where=lambda e: e["discovery"] == "full (another run held the lock of node node-a)")
    if ev["reparsed"] != 1:
        d.wait("reconcile", where=lambda e: e["reparsed"] == 1)  # then the edit's own pass
    bare(world, "off", runStrategy="Halted", memory="44M")
    ev = d.wait("reconcile", where=lambda e: e["reparsed"] == 1)
    assert looked(ev) == 0, ev  # and the one after is partial again

    d.send(signal.SIGHUP)
    ev = d.wait("reconcile", where=lambda e: "sighup" in e["triggers"])
    assert ev["discovery"] == "full (sighup)", ev
    assert full_scans(d) == fulls + 2
    assert d.stop() == 0
