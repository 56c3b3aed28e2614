"""Unit (pure): status rows from desired + actual state, the aligned table, QMP state mapping, -name."""

from __future__ import annotations

import pytest

from reconciler import discovery, model, procs
from reconciler.actual import ActualInstance, ActualState, RunState, StopCause, UnmanagedProcess
from reconciler.commands import status

NOW = 1_000_000.0
WEB = model.InstanceSpec(name="web", memory_mib=512, vcpus=2, node="n1")
DB = model.InstanceSpec(name="db", memory_mib=1024, node="n1", run_strategy=model.RunStrategy.HALTED)
NEW = model.InstanceSpec(name="new", memory_mib=64, node="n2", run_strategy=model.RunStrategy.ONCE)
DESIRED = model.DesiredState(instances={"web": WEB, "db": DB, "new": NEW},
                             nodes={"n1": model.NodeSpec("n1", "/s1"), "n2": model.NodeSpec("n2", "/s2")})
OLD_WEB = model.InstanceSpec(name="web", memory_mib=256, node="n1")
ACTUAL = ActualState(
    instances=(
        ActualInstance("db", "n1", RunState.STALE, DB, model.spec_hash(DB), pid=77,
                       detail="pid 77 is not running"),
        ActualInstance("gone", "n1", RunState.CRASHED, OLD_WEB, "h", stop_cause=StopCause.UNKNOWN),
        ActualInstance("web", "n1", RunState.RUNNING, OLD_WEB, model.spec_hash(OLD_WEB), pid=42,
                       started_at=NOW - 3725, qmp_status="running"),
        ActualInstance("web", "n2", RunState.PAUSED, WEB, model.spec_hash(WEB), pid=43, started_at=NOW - 5,
                       qmp_status="inmigrate"),
    ),
    unmanaged=(UnmanagedProcess(99, "by-hand", ("qemu-system-x86_64", "-m", "2048", "-name", "by-hand")),),
)

EXPECTED_TABLE = """\
NAME     NODE  DESIRED  ACTUAL         PID  MEMORY  VCPUS  UPTIME  SPEC     DETAIL
db       n1    stopped  stale pidfile  77   1024M   1      -       match    pid 77 is not running
gone     n1    orphan   crashed        -    256M    1      -       -        no cause recorded
new      n2    once     stopped        -    64M     1      -       -        never started
web      n1    running  running        42   256M    1      1h02m   differs
web      n2    running  migrating      43   512M    2      5s      match
by-hand  -     -        unmanaged      99   2048M   -      -       -        not started by the reconciler
"""


def test_table() -> None:
    assert status.render_table(status.build_rows(DESIRED, ACTUAL, NOW)) == EXPECTED_TABLE


def test_without_manifests_nothing_is_called_orphan() -> None:
    rows = status.build_rows(None, ACTUAL, NOW)
    assert {r.desired for r in rows if r.actual != "unmanaged"} == {"?"}
    assert status.render_table([]) == "no instances\n"


def test_json_is_stable() -> None:
    rows = status.build_rows(DESIRED, ACTUAL, NOW)
    assert status.render_json(rows) == status.render_json(status.build_rows(DESIRED, ACTUAL, NOW))
    assert status.render_json(rows).startswith('{\n  "format_version": 1,\n  "instances": [\n')


@pytest.mark.parametrize(("qmp_status", "state"), [
    ("running", RunState.RUNNING), ("paused", RunState.PAUSED), ("prelaunch", RunState.PAUSED),
    ("shutdown", RunState.SHUTDOWN), ("inmigrate", RunState.INMIGRATE), ("postmigrate", RunState.POSTMIGRATE),
    ("finish-migrate", RunState.PAUSED), ("guest-panicked", RunState.CRASHED),
    ("brand-new", RunState.UNKNOWN),
])
def test_qmp_states(qmp_status: str, state: RunState) -> None:
    assert discovery.QMP_STATES.get(qmp_status, RunState.UNKNOWN) is state


@pytest.mark.parametrize(("cmdline", "name"), [
    (["qemu", "-name", "guest=vm1,debug-threads=on"], "vm1"),
    (["qemu", "-name", "vm2,process=x"], "vm2"),
    (["qemu", "-name", "vm3"], "vm3"),
    (["qemu", "-m", "16"], None),
    (["qemu", "-name"], None),
])
def test_guest_name(cmdline: list[str], name: str | None) -> None:
    assert procs.guest_name(cmdline) == name


@pytest.mark.parametrize(("targets", "names", "paths"), [
    (["web", "manifests/", "x.yaml", "db"], ["web", "db"], ["manifests/", "x.yaml"]),
    ([], [], []),
])
def test_split_targets(targets: list[str], names: list[str], paths: list[str]) -> None:
    assert status.split_targets(targets) == (names, paths)
