"""End-to-end regressions of issue 11's planner bugs, on real QEMU (TCG) and the test guest.

- A field that needs no restart (`protect: true` here) added to a running instance updates its record in
  place (`~`, same process), so a later prune leaves it alone and `status` says "match".
- A rename with the same disk and pruning on: the start of the new name waits for the stop of the old
  one, which releases QEMU's write lock on the image (created here with qemu-img).
- A RerunOnFailure instance its guest powered off is started again by a later edit of its manifest
  (Halted, then back to RerunOnFailure), not left off with "No changes".
- A migration carries such fields into the target's record, so no record-only pass follows it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest, SerialLog
from executor.kit import BOOT_TIMEOUT, World, make_world, record_of

from reconciler import qmp
from reconciler.actual import RunState

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def wait_ready(world: World, node: str, name: str) -> None:
    SerialLog(world.serial_log(node, name)).wait_for(f"reconciler-guest: ready {name}", BOOT_TIMEOUT)


def status_row(world: World, name: str) -> dict[str, object]:
    shown = world.cli("status", "--json")
    assert shown.code == 0, shown.text
    rows = json.loads(shown.out)
    rows = rows["instances"] if isinstance(rows, dict) else rows
    found = [r for r in rows if r["name"] == name and r["actual"] != "unmanaged"]  # others' QEMUs too
    assert len(found) == 1, rows
    (row,) = found
    return dict(row)


def powerdown(world: World, node: str, name: str) -> None:
    """Press the ACPI power button over the instance's control socket; the guest powers itself off."""
    async def go() -> None:
        async with qmp.session(world.paths(node, name).qmp, 5.0) as s:
            await s.execute("system_powerdown", timeout=5.0)
            await s.wait_event(["SHUTDOWN"], 30.0)

    asyncio.run(go())


def test_protect_added_later_is_recorded_and_survives_a_prune(world: World) -> None:
    world.instance("keep", "node-a")
    assert world.apply().code == 0
    wait_ready(world, "node-a", "keep")
    (pid,) = world.qemu_pids("keep")

    world.instance("keep", "node-a", protect=True)
    planned = world.cli("plan")
    assert planned.code == 0, planned.text
    assert "  ~ keep on node-a (record updated in place)\n" in planned.out, planned.out
    assert "      protect: false -> true\n" in planned.out
    assert status_row(world, "keep")["spec_match"] is False  # plan and status agree: it differs
    updated = world.apply()
    assert updated.code == 0, updated.text
    assert "Apply complete: 0 started, 0 stopped, 0 restarted, 0 migrated, 1 record updated." in updated.out
    assert world.qemu_pids("keep") == [pid]  # no restart
    rec = record_of(world, "node-a", "keep")
    assert rec.spec.protect is True and rec.pid == pid
    assert status_row(world, "keep")["spec_match"] is True
    again = world.apply()
    assert again.code == 0 and "No changes" in again.out, again.text

    world.remove("keep")
    pruned = world.apply("--prune", "--allow-empty")
    assert pruned.code == 0, pruned.text
    assert "keep on node-a (running): protect: true; prune never stops it" in pruned.out
    assert world.qemu_pids("keep") == [pid]


def test_rename_with_the_same_disk_starts_after_the_old_name_stops(world: World, tmp_path: Path) -> None:
    image = tmp_path / "shared.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "4M"], check=True, timeout=30)
    disk = [{"path": str(image), "format": "raw"}]
    # r1 ignores the power button: its stop takes the 2 s grace, then `quit`; a start of r2 in the same
    # phase would open the image while r1 still holds its write lock.
    world.instance("r1", "node-a", disks=disk, ignore_acpi=True, shutdownTimeout="2s")
    assert world.apply().code == 0
    wait_ready(world, "node-a", "r1")

    world.remove("r1")
    world.instance("r2", "node-a", disks=disk)
    renamed = world.apply("--prune")
    assert renamed.code == 0, renamed.text  # before the fix: r2 failed on QEMU's "write" lock
    assert "  - r1 on node-a  [phase 0]\n" in renamed.out, renamed.out
    assert "  + r2 on node-a  [phase 1]\n" in renamed.out, renamed.out
    assert f"      # after r1 releases disk {image}\n" in renamed.out
    assert renamed.out.index("r1: stopped on node-a") < renamed.out.index("r2: starting on node-a")
    assert "Apply complete: 1 started, 1 stopped, 0 restarted, 0 migrated." in renamed.out
    wait_ready(world, "node-a", "r2")
    assert world.qemu_pids("r1") == [] and len(world.qemu_pids("r2")) == 1


def test_rerun_on_failure_powered_off_by_its_guest_starts_on_a_later_edit(world: World) -> None:
    world.instance("rer", "node-a", runStrategy="RerunOnFailure")
    assert world.apply().code == 0
    wait_ready(world, "node-a", "rer")
    powerdown(world, "node-a", "rer")
    [off] = world.live("rer")
    assert off.state is RunState.SHUTDOWN
    left = world.apply()
    assert left.code == 0 and "No changes" in left.out, left.text  # the guest's power-off is respected

    world.instance("rer", "node-a", runStrategy="Halted")
    halted = world.apply()
    assert halted.code == 0, halted.text
    assert world.qemu_pids("rer") == []
    assert record_of(world, "node-a", "rer").spec.run_strategy.value == "Halted"

    world.instance("rer", "node-a", runStrategy="RerunOnFailure")  # a new intent: run it
    planned = world.cli("plan")
    assert "  + rer on node-a\n" in planned.out, planned.out
    assert "manifests changed since: a new intent" in planned.out
    assert '      run_strategy: "Halted" -> "RerunOnFailure"\n' in planned.out
    started = world.apply()
    assert started.code == 0, started.text
    assert "Apply complete: 1 started" in started.out
    wait_ready(world, "node-a", "rer")
    assert len(world.qemu_pids("rer")) == 1
    rec = record_of(world, "node-a", "rer")
    assert rec.stop_cause is None and rec.spec.run_strategy.value == "RerunOnFailure"


def test_migration_records_the_fields_that_need_no_restart(world: World) -> None:
    world.instance("mig", "node-a")
    assert world.apply().code == 0
    wait_ready(world, "node-a", "mig")

    world.instance("mig", "node-b", protect=True, shutdownTimeout="5s")  # moved; two no-restart changes
    moved = world.apply()
    assert moved.code == 0, moved.text
    assert "Apply complete: 0 started, 0 stopped, 0 restarted, 1 migrated." in moved.out
    rec = record_of(world, "node-b", "mig")
    assert rec.spec.protect is True and rec.spec.shutdown_timeout == 5.0 and rec.spec.node == "node-b"
    again = world.apply()
    assert again.code == 0 and "No changes" in again.out, again.text  # not a second, record-only, pass
