"""End-to-end: the real daemon (`reconciler watch`, a subprocess) against real QEMU (TCG) and the test guest.

Manifests live in a temp dir, state dirs are short temp dirs; every QEMU is reaped afterwards (verified
by its command line naming our state dirs, pinned by a pidfd). Waits are on the daemon's JSON log events,
serial log lines and process exits, each under a deadline.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import SerialLog
from executor.kit import BOOT_TIMEOUT, World, kill_verified, record_of

from reconciler import qmp
from reconciler.actual import RunState

from .daemon_kit import Daemon, events_named, metric

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def start(daemons: list[Daemon], world: World, *extra: str) -> Daemon:
    d = Daemon(world.manifests, "--backoff-base", "2", "--backoff-max", "8", *extra)
    daemons.append(d)
    d.ready()
    return d


def wait_ready(world: World, node: str, name: str) -> None:
    SerialLog(world.serial_log(node, name)).wait_for(f"reconciler-guest: ready {name}", BOOT_TIMEOUT)


def defaults(world: World, **spec: object) -> None:
    doc = {"apiVersion": "reconciler/v1", "kind": "Defaults", "metadata": {"name": "defaults"}, "spec": spec}
    (world.manifests / "defaults.yaml").write_text(yaml.safe_dump(doc))


def live_nodes(world: World, name: str) -> list[str]:
    return sorted(i.node for i in world.live(name))


def powerdown(world: World, node: str, name: str) -> None:
    """Press the ACPI power button (system_powerdown) over the instance's control socket."""
    async def go() -> None:
        async with qmp.session(world.paths(node, name).qmp, 5.0) as s:
            await s.execute("system_powerdown", timeout=5.0)

    asyncio.run(go())


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=30,
                          check=True)
    return done.stdout.strip()


def test_lifecycle_start_restart_migrate_halt_prune_and_metrics(world: World, daemons: list[Daemon]) -> None:
    defaults(world, prune=True)
    world.instance("keep", "node-a", runStrategy="Halted")  # never runs; keeps the tree non-empty
    git(world.manifests, "init", "-q")
    git(world.manifests, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
        "-m", "base")
    head = git(world.manifests, "rev-parse", "HEAD")
    d = start(daemons, world)

    world.instance("vm1", "node-a", memory="128M")  # a new manifest: it starts
    ev = d.action("vm1", "start", reason="new", node="node-a")
    assert live_nodes(world, "vm1") == ["node-a"]
    first_pid = record_of(world, "node-a", "vm1").pid
    assert f"pid {first_pid}" in ev["detail"]
    wait_ready(world, "node-a", "vm1")

    world.instance("vm1", "node-a", memory="160M")  # a restart-forcing change: it restarts
    d.action("vm1", "restart", reason="spec_changed")
    rec = record_of(world, "node-a", "vm1")
    assert rec.spec.memory_mib == 160 and rec.pid != first_pid
    wait_ready(world, "node-a", "vm1")

    world.instance("vm1", "node-b", memory="160M")  # a node change: it migrates
    d.action("vm1", "migrate", reason="node_changed", node="node-b")
    assert live_nodes(world, "vm1") == ["node-b"]

    world.instance("vm1", "node-b", memory="160M", runStrategy="Halted")  # stopped: gracefully
    ev = d.action("vm1", "stop", reason="wanted_stopped")
    assert "acpi" in ev["detail"].lower(), ev
    assert live_nodes(world, "vm1") == []

    world.instance("vm1", "node-b", memory="160M")
    d.action("vm1", "start")
    wait_ready(world, "node-b", "vm1")
    world.remove("vm1")  # deleted, pruning on: it stops
    d.action("vm1", "stop", reason="pruned")
    assert world.qemu_pids("vm1") == []
    d.wait("reconcile", where=lambda e: e["actions"] == 0)

    m = d.metrics()
    for kind, n in (("start", 2), ("restart", 1), ("migrate", 1), ("stop", 2)):
        assert metric(m, "reconciler_actions_total", kind=kind, outcome="done") == n, kind
    assert metric(m, "reconciler_actions_total", kind="stop", outcome="failed") == 0
    passes = events_named(d.events, "reconcile")
    assert metric(m, "reconciler_reconcile_total", result="ok") == sum(1 for p in passes if p["ok"])
    assert metric(m, "reconciler_reconcile_duration_seconds_count") == len(passes)
    assert metric(m, "reconciler_manifest_errors") == 0
    assert metric(m, "reconciler_instances", state="running") == 0
    assert metric(m, "reconciler_instances", state="stopped") == 0  # pruned: record removed
    assert time.time() - 60 < metric(m, "reconciler_last_success_timestamp_seconds") <= time.time()
    assert metric(m, "reconciler_applied_revision_info", revision=f"{head}-dirty") == 1
    assert metric(m, "reconciler_triggers_total", source="file") >= 5
    assert d.stop() == 0


def test_broken_manifests_hold_last_good_and_suspend_pruning(world: World, daemons: list[Daemon]) -> None:
    defaults(world, prune=True)
    world.instance("vm1", "node-a", memory="128M")
    world.instance("vm2", "node-a", memory="128M")
    d = start(daemons, world)
    d.actions("start", ["vm1", "vm2"])
    pids = {n: record_of(world, "node-a", n).pid for n in ("vm1", "vm2")}

    vm1 = world.manifests / "vm1.yaml"
    vm1.write_text(vm1.read_text().replace("memory: 128M", "memory: lots"))  # invalid
    err = d.wait("manifest-error", path=str(vm1))
    assert err["held"] is True and "lots" in err["problem"]
    vm2 = world.manifests / "vm2.yaml"
    text = vm2.read_text()
    vm2.write_text(text[: len(text) // 2])  # truncated mid-way (a half-written file)
    d.wait("manifest-error", path=str(vm2))
    d.wait("reconcile", where=lambda e: e["manifest_errors"] == 2)

    world.instance("vm3", "node-a", memory="128M")  # the rest of the tree keeps reconciling
    d.action("vm3", "start")
    assert {n: record_of(world, "node-a", n).pid for n in ("vm1", "vm2")} == pids  # nothing stopped
    assert all(live_nodes(world, n) == ["node-a"] for n in ("vm1", "vm2"))

    status = world.cli("status")
    assert "2 broken manifest files; pruning suspended" in status.out, status.text
    assert f"{vm1}: last good version in use" in status.out and "lots" in status.out
    m = d.metrics()
    assert (metric(m, "reconciler_manifest_errors"), metric(m, "reconciler_pruning_suspended")) == (2, 1)

    world.instance("vm1", "node-a", memory="144M")  # fixed (with a change): reconciling resumes
    d.wait("manifest-fixed", path=str(vm1))
    d.action("vm1", "restart")
    vm2.write_text(text)
    d.wait("manifest-fixed", path=str(vm2))
    d.wait("reconcile", where=lambda e: e["manifest_errors"] == 0)
    assert record_of(world, "node-a", "vm2").pid == pids["vm2"]
    assert "broken manifest" not in world.cli("status").out
    assert metric(d.metrics(), "reconciler_manifest_errors") == 0
    assert d.stop() == 0

    # A new daemon picks everything up without touching the healthy VMs.
    pids = {n: record_of(world, "node-a", n).pid for n in ("vm1", "vm2", "vm3")}
    again = start(daemons, world)
    first = again.wait("reconcile")
    assert first["actions"] == 0 and first["ok"], first
    assert {n: record_of(world, "node-a", n).pid for n in pids} == pids
    assert all(live_nodes(world, n) == ["node-a"] for n in pids)
    assert again.stop() == 0


def test_exits_restart_policies_and_crash_loop_backoff(world: World, daemons: list[Daemon]) -> None:
    for name, strategy in (("alw", "Always"), ("rer", "RerunOnFailure"), ("onc", "Once")):
        world.instance(name, "node-a", memory="128M", runStrategy=strategy)
    d = start(daemons, world)
    d.actions("start", ["alw", "rer", "onc"])
    for name in ("alw", "rer", "onc"):
        wait_ready(world, "node-a", name)

    # SIGKILL: a crash. Always and RerunOnFailure restart it; Once does not.
    for name in ("alw", "rer", "onc"):
        mark = d.mark()
        kill_verified(record_of(world, "node-a", name).pid, f"/instances/{name}/")
        exit_ev = d.wait("qemu-exit", instance=name)
        assert exit_ev["kind"] == "crash", exit_ev
        if name == "onc":
            done = d.wait("reconcile", where=lambda e: "qemu" in e["triggers"])
            assert not events_named(d.since(mark), "action", instance="onc"), d.since(mark)
            assert done["actions"] == 0
        else:
            ev = d.action(name, "start")
            assert ev["reason"] == "crashed", ev  # a SIGKILL is a crash, not a stale pidfile
    assert live_nodes(world, "onc") == []
    for name in ("alw", "rer"):
        wait_ready(world, "node-a", name)

    # A guest power-off (ACPI, from inside): Always restarts it in place; RerunOnFailure leaves it off.
    mark = d.mark()
    powerdown(world, "node-a", "rer")
    stop_ev = d.wait("guest-stop", instance="rer")
    assert stop_ev["kind"] == "guest-poweroff", stop_ev
    d.wait("reconcile", where=lambda e: "qemu" in e["triggers"])
    assert not events_named(d.since(mark), "action", instance="rer")
    [rer] = world.live("rer")
    assert rer.state is RunState.SHUTDOWN

    powerdown(world, "node-a", "alw")
    assert d.wait("guest-stop", instance="alw")["kind"] == "guest-poweroff"
    d.action("alw", "restart", reason="guest_powered_off")
    d.wait("reconcile")  # the pass that restarted it is over
    # That was alw's second automatic restart: the next waits 2*base = 4 s. A crash now is held back.
    kill_verified(record_of(world, "node-a", "alw").pid, "/instances/alw/")
    held = d.wait("restart-held", instance="alw")
    assert held["restarts"] == 2 and 0 < held["seconds_left"] <= 4.0, held
    held_at = time.monotonic()
    status = world.cli("status")
    alw_row = next(line for line in status.out.splitlines() if line.startswith("alw "))
    assert "crash loop: backing off after 2 restarts" in alw_row, status.out
    assert metric(d.metrics(), "reconciler_crash_loop_backoff_instances") == 1
    ev = d.action("alw", "start", timeout=30)
    assert time.monotonic() - held_at >= held["seconds_left"] - 0.5
    assert live_nodes(world, "alw") == ["node-a"]
    m = d.metrics()
    assert metric(m, "reconciler_qemu_exits_total", kind="crash") == 4
    assert metric(m, "reconciler_qemu_exits_total", kind="guest-poweroff") == 2
    assert d.stop() == 0


def test_sigterm_during_migration_then_restart_leaves_one_copy(world: World, daemons: list[Daemon]) -> None:
    world.instance("mig", "node-a", memory="128M", migration={"maxBandwidth": "4M"})
    d = start(daemons, world, "--shutdown-grace", "0")
    d.action("mig", "start")
    wait_ready(world, "node-a", "mig")
    world.instance("mig", "node-b", memory="128M", migration={"maxBandwidth": "4M"})
    d.wait("action-progress", instance="mig", where=lambda e: e["text"].startswith("migrating node-a"))
    assert d.stop() == 0  # abandons the migration at once (grace 0)
    assert events_named(d.events, "abandoning-pass"), d.transcript()
    assert world.qemu_pids("mig"), "the VM must survive the daemon"

    world.instance("mig", "node-b", memory="128M")  # no bandwidth cap: the redo is quick
    again = start(daemons, world)
    again.wait("reconcile", timeout=120, where=lambda e: e["actions"] == 0 and e["ok"])
    assert len(live_nodes(world, "mig")) == 1
    assert len(world.qemu_pids("mig")) == 1
    assert again.stop() == 0
    assert len(world.qemu_pids("mig")) == 1  # stopping the daemon leaves the VM running
