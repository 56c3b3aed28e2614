"""End-to-end: `reconciler apply` against real QEMU (TCG) and the test guest: start from nothing, no-op
re-apply, the three kinds of stop (ACPI power-off, forced/ACPI-off quit, escalation past a guest that
ignores the button), restart on a restart-forcing change and only a record update on one that needs
no restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest, SerialLog
from executor.kit import BOOT_TIMEOUT, World, make_world, record_of

from reconciler.actual import RunState, StopCause

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

POWER_OFF_LINE = "reconciler-guest: power button, powering off"


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def wait_ready(world: World, node: str, name: str) -> SerialLog:
    log = SerialLog(world.serial_log(node, name))
    log.wait_for(f"reconciler-guest: ready {name}", BOOT_TIMEOUT)
    return log


def test_apply_from_nothing_boots_instances_then_no_changes(world: World) -> None:
    world.instance("web1", "node-a")
    world.instance("db1", "node-b")
    first = world.apply()
    assert first.code == 0, first.text
    assert "Apply complete: 2 started, 0 stopped, 0 restarted, 0 migrated." in first.out
    assert "web1: started on node-a (pid" in first.out and "db1: started on node-b (pid" in first.out
    wait_ready(world, "node-a", "web1")
    wait_ready(world, "node-b", "db1")
    status = world.cli("status")
    # The host may run other QEMUs with the same names (listed as unmanaged): ours come first.
    rows: dict[str, list[str]] = {}
    for line in status.out.splitlines()[1:]:
        if line.strip():
            rows.setdefault(line.split()[0], line.split())
    assert rows["web1"][1:4] == ["node-a", "running", "running"], status.out
    assert rows["db1"][1:4] == ["node-b", "running", "running"], status.out
    again = world.apply()
    assert again.code == 0, again.text
    assert "No changes" in again.out
    assert [len(world.qemu_pids(n)) for n in ("web1", "db1")] == [1, 1]


def test_stops_acpi_forced_and_escalated(world: World) -> None:
    world.instance("grace", "node-a")
    world.instance("noacpi", "node-a", acpi=False)
    world.instance("deaf", "node-b", ignore_acpi=True, shutdownTimeout="2s")
    world.instance("forced", "node-b")
    assert world.apply().code == 0
    logs = {n: wait_ready(world, node, n) for n, node in
            (("grace", "node-a"), ("noacpi", "node-a"), ("deaf", "node-b"), ("forced", "node-b"))}

    world.instance("grace", "node-a", runStrategy="Halted")
    world.instance("noacpi", "node-a", acpi=False, runStrategy="Halted")
    world.instance("deaf", "node-b", ignore_acpi=True, shutdownTimeout="2s", runStrategy="Halted")
    t0 = time.monotonic()
    done = world.apply("--target", "grace", "--target", "noacpi", "--target", "deaf")
    elapsed = time.monotonic() - t0
    assert done.code == 0, done.text
    assert "grace: stopped on node-a (ACPI power-off)" in done.out
    assert "noacpi: stopped on node-a (quit)" in done.out
    assert "deaf: stopped on node-b (quit)" in done.out  # escalated after its 2 s
    assert elapsed < 2.0 + 3.0, elapsed  # the shutdown timeout plus a small margin
    assert any(POWER_OFF_LINE in ln for ln in (*logs["grace"].lines, *_read(world, "node-a", "grace")))
    assert not any(POWER_OFF_LINE in ln for ln in _read(world, "node-a", "noacpi"))
    for name, node in (("grace", "node-a"), ("noacpi", "node-a"), ("deaf", "node-b")):
        assert world.qemu_pids(name) == []
        rec = record_of(world, node, name)
        assert rec is not None and rec.stop_cause is StopCause.RECONCILER
        assert not Path(world.paths(node, name).pidfile).exists()
        assert not Path(world.paths(node, name).qmp).exists()
    states = {i.name: i.state for i in world.actual()}
    assert states["grace"] is RunState.STOPPED and states["forced"] is RunState.RUNNING
    assert "No changes" in world.apply().out  # Halted and stopped: nothing to do

    world.instance("forced", "node-b", runStrategy="Halted")
    forced = world.apply("--force")
    assert forced.code == 0, forced.text
    assert "forced: stopped on node-b (quit)" in forced.out
    assert not any(POWER_OFF_LINE in ln for ln in _read(world, "node-b", "forced"))


def test_restart_on_forcing_change_and_nothing_on_ignored(world: World) -> None:
    world.instance("web1", "node-a")
    assert world.apply().code == 0
    wait_ready(world, "node-a", "web1")
    (pid,) = world.qemu_pids("web1")

    world.instance("web1", "node-a", shutdownTimeout="5s")  # read by the reconciler only: no restart
    ignored = world.apply()
    assert ignored.code == 0 and "~ web1 on node-a (record updated in place)" in ignored.out, ignored.text
    assert "0 restarted, 0 migrated, 1 record updated." in ignored.out
    assert world.qemu_pids("web1") == [pid]
    assert record_of(world, "node-a", "web1").spec.shutdown_timeout == 5.0
    again = world.apply()
    assert again.code == 0 and "No changes" in again.out, again.text

    world.instance("web1", "node-a", memory="160M")  # forces a new QEMU process
    changed = world.apply()
    assert changed.code == 0, changed.text
    assert "Apply complete: 0 started, 0 stopped, 1 restarted, 0 migrated." in changed.out
    (new_pid,) = world.qemu_pids("web1")
    assert new_pid != pid
    wait_ready(world, "node-a", "web1")
    rec = record_of(world, "node-a", "web1")
    assert rec.pid == new_pid and rec.spec.memory_mib == 160 and rec.stop_cause is None


def _read(world: World, node: str, name: str) -> list[str]:
    path = world.serial_log(node, name)
    return path.read_text(errors="replace").splitlines() if path.exists() else []
