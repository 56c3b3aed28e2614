"""End-to-end: saved plans, the node lock, and crash safety. A stale saved plan is refused; two applies do
not interleave; an apply SIGKILLed during a start or a migration leaves a state the next `plan` shows
truthfully and the next `apply` converges from, with exactly one QEMU per instance."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest, SerialLog
from executor.kit import BOOT_TIMEOUT, Lines, World, make_world, record_of

from reconciler import argv, launch, manifest, model
from reconciler import intent as intents
from reconciler.actual import RunState
from reconciler.errors import ExitCode
from reconciler.statedir import ensure_dir, write_json

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TICK = re.compile(r"reconciler-guest: tick (\d+)")
PIDFILE = re.compile(r"^\d+$")


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def test_saved_plan_applies_as_reviewed_or_is_refused_when_stale(world: World, tmp_path: Path) -> None:
    world.instance("web1", "node-a")
    saved = str(tmp_path / "web1.plan")
    assert world.cli("plan", "--out", saved).code == 0
    world.instance("web1", "node-a", memory="160M")
    stale = world.cli("apply", "--plan", saved)
    assert stale.code == ExitCode.STALE_PLAN, stale.text
    assert "is stale: instance web1: manifest changed" in stale.err
    assert world.qemu_pids("web1") == []
    assert world.cli("plan", "--out", saved).code == 0
    fresh = world.cli("apply", "--plan", saved)  # reviewed already: no confirmation asked
    assert fresh.code == 0, fresh.text
    assert record_of(world, "node-a", "web1").spec.memory_mib == 160
    again = world.cli("apply", "--plan", saved)  # the world moved on since the plan was saved
    assert again.code == ExitCode.STALE_PLAN and "instance web1 on node-a: new record" in again.err


def test_two_applies_do_not_interleave(world: World) -> None:
    world.instance("deaf", "node-a", ignore_acpi=True, shutdownTimeout="3s")
    assert world.apply().code == 0
    SerialLog(world.serial_log("node-a", "deaf")).wait_for("ready deaf", BOOT_TIMEOUT)
    world.instance("deaf", "node-a", ignore_acpi=True, shutdownTimeout="3s", runStrategy="Halted")
    first = Lines(world.spawn("apply", "--yes"))
    first.wait_for("deaf: stopping on node-a", 30)  # holds both node locks until the stop ends
    refused = world.cli("apply", "--yes", "--lock-timeout", "0")
    assert refused.code == ExitCode.LOCKED, refused.text
    assert re.search(r"is held by PID \d+ on .* \(apply\)", refused.err), refused.err
    second = Lines(world.spawn("apply", "--yes"))
    second.wait_for("waiting for the node lock", 30)
    code, text = first.finish()
    assert code == 0 and "deaf: stopped on node-a (quit)" in text, text
    code, text = second.finish()
    assert code == 0 and "No changes" in text, text  # it planned after the first one finished


def test_intent_adopts_a_qemu_launched_before_its_record(world: World) -> None:
    """The crash window made deterministic: intent written, QEMU launched, writer dead, no record."""
    world.instance("web1", "node-a")
    desired = manifest.load([str(world.manifests)]).desired
    assert desired is not None
    spec = desired.instances["web1"]
    built = argv.build_launch(spec, world.node("node-a"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    it = intents.Intent(intents.IntentKind.START, "web1", "node-a", time.time(), int(dead.stdout), 0.0,
                        argv=built.argv, spec=spec)
    write_json(built.paths.intent, intents.to_jsonable(it))
    ran = asyncio.run(launch.launch("web1", built.argv, built.paths, 30.0))
    plan = world.cli("plan")
    assert "No changes" in plan.out, plan.out  # adopted: neither unmanaged nor started a second time
    rec = record_of(world, "node-a", "web1")
    assert rec is not None and rec.pid == ran.pid and rec.argv == built.argv
    assert not Path(built.paths.intent).exists()
    assert world.qemu_pids("web1") == [ran.pid]


def test_stale_intent_without_process_is_cleaned(world: World) -> None:
    world.instance("web1", "node-a")
    paths = world.paths("node-a", "web1")
    gone = ("qemu-system-x86_64", "-pidfile", paths.pidfile)
    it = intents.Intent(intents.IntentKind.START, "web1", "node-a", time.time(), 999_999_999, 0.0,
                        argv=gone, spec=model.InstanceSpec("web1", 64))
    write_json(paths.intent, intents.to_jsonable(it))
    assert world.actual().find("web1") == ()
    assert not Path(paths.dir).exists()


def test_sigkill_during_start_then_apply_converges(world: World) -> None:
    world.instance("web1", "node-a")
    world.instance("db1", "node-b")
    pidfile = Path(world.paths("node-a", "web1").pidfile)
    ensure_dir(pidfile.parent)  # to watch it from the start (an empty directory means nothing)
    proc = world.spawn("apply", "--yes")
    SerialLog(pidfile).wait_for(PIDFILE, 30)  # QEMU is up; its record is probably not written yet
    proc.kill()  # our own child
    proc.wait(10)
    assert proc.stdout is not None
    proc.stdout.close()
    _converges(world, {"web1": "node-a", "db1": "node-b"})


def test_sigkill_during_migration_then_apply_converges(world: World) -> None:
    world.instance("web1", "node-a", migration={"maxBandwidth": "8M"})
    assert world.apply().code == 0
    SerialLog(world.serial_log("node-a", "web1")).wait_for(TICK, BOOT_TIMEOUT)
    world.instance("web1", "node-b", migration={"maxBandwidth": "8M"})
    out = Lines(world.spawn("apply", "--yes"))
    out.wait_for("%", 30)  # under way: target inmigrate on node-b, source running on node-a
    out.proc.kill()
    out.finish()
    assert len(world.qemu_pids("web1")) == 2  # QEMU's own migration goes on without us
    world.instance("web1", "node-b")  # full speed from now on (migration settings need no restart)
    _converges(world, {"web1": "node-b"})


def _converges(world: World, where: dict[str, str]) -> None:
    plan = world.cli("plan")
    assert plan.code == 0, plan.text
    done = world.apply()
    assert done.code == 0, done.text
    final = world.apply()
    assert final.code == 0 and "No changes" in final.out, final.text
    for name, node in where.items():
        pids = world.qemu_pids(name)
        assert len(pids) == 1, (name, pids)
        live = [i for i in world.actual().find(name) if i.state.has_process]
        assert [(i.node, i.state, i.pid) for i in live] == [(node, RunState.RUNNING, pids[0])]
        SerialLog(world.serial_log(node, name)).wait_for(TICK, BOOT_TIMEOUT)
