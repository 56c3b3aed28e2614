"""Unit (pure): why a recorded QEMU is not running, the words the plan and `status` use for it, what an
action in flight looks like, and what is pending."""

from __future__ import annotations

import json

import pytest

from reconciler import discovery, model, procs
from reconciler.actual import Activity, ActualInstance, ActualState, InFlight, RunState, StopCause
from reconciler.commands import status
from reconciler.planner import Reason, make_plan

NOW = 1_000_000.0
GONE = procs.Check(42, procs.Identity.GONE, "pid 42 is not running")
ZOMBIE = procs.Check(42, procs.Identity.ZOMBIE, "pid 42 has exited (zombie)")
REUSED = procs.Check(42, procs.Identity.OTHER_START, "pid 42 (sleep) started at 5.00, the record says 1.00")
OTHER = procs.Check(43, procs.Identity.OTHER_CMDLINE, "pid 43 (bash) runs another command line")


@pytest.mark.parametrize(("check", "pidfile_pid", "pidfile_exists", "expected"), [
    # SIGKILL (or a crash): QEMU could not remove its pidfile.
    (GONE, 42, True, discovery.ExitEvidence(
        RunState.CRASHED, StopCause.CRASH,
        "QEMU (pid 42) ended without removing its pidfile: killed by SIGKILL, or crashed")),
    (ZOMBIE, 42, True, discovery.ExitEvidence(
        RunState.CRASHED, StopCause.CRASH,
        "QEMU (pid 42) ended without removing its pidfile: killed by SIGKILL, or crashed")),
    # A SIGTERM (or a quit from another client): QEMU exited cleanly and removed its pidfile.
    (GONE, None, False, discovery.ExitEvidence(
        RunState.STOPPED, StopCause.KILLED,
        "QEMU exited cleanly but not by the reconciler (a signal such as SIGTERM, or a quit over QMP)")),
    # The PID QEMU had now belongs to another process: never "process gone".
    (REUSED, 42, True, discovery.ExitEvidence(
        RunState.STALE, None,
        "pidfile names another process: pid 42 (sleep) started at 5.00, the record says 1.00", foreign=True)),
    (OTHER, 43, True, discovery.ExitEvidence(
        RunState.STALE, None, "pidfile names another process: pid 43 (bash) runs another command line",
        foreign=True)),
    (procs.Check(43, procs.Identity.GONE, "pid 43 is not running"), 43, True, discovery.ExitEvidence(
        RunState.STALE, None, "stale pidfile: pid 43 is not running")),
    (GONE, None, True, discovery.ExitEvidence(
        RunState.STALE, None, "pidfile unreadable; the recorded process is gone")),
])
def test_exit_evidence(check: procs.Check, pidfile_pid: int | None, pidfile_exists: bool,
                       expected: discovery.ExitEvidence) -> None:
    assert discovery.exit_evidence(check, 42, pidfile_pid, pidfile_exists) == expected


@pytest.mark.parametrize(("reason", "words"), [
    (Reason.CRASHED, "QEMU crashed; the run strategy restarts it"),
    (Reason.STOPPED_OUTSIDE,
     "QEMU was stopped outside the reconciler (a signal or a QMP quit); the run strategy restarts it"),
    (Reason.PIDFILE_OTHER,
     "QEMU is not running and its pidfile names another process (never touched); "
     "cleaned up before the start"),
    (Reason.STALE_PIDFILE, "stale pidfile (process gone); cleaned up before the start"),
])
def test_reason_words(reason: Reason, words: str) -> None:
    assert reason.words == words


@pytest.mark.parametrize(("cause", "words"), [
    (StopCause.RECONCILER, "stopped by the reconciler"),
    (StopCause.GUEST, "the guest powered off"),
    (StopCause.CRASH, "crashed"),
    (StopCause.KILLED, "stopped outside the reconciler"),
    (StopCause.UNKNOWN, "no cause recorded"),
])
def test_stop_cause_words(cause: StopCause, words: str) -> None:
    assert cause.words == words


@pytest.mark.parametrize(("flight", "label"), [
    (InFlight("vm", "n1", Activity.STOPPING, "apply", 123), "stopping (apply, PID 123)"),
    (InFlight("vm", "n1", Activity.STARTING, "watch", 7), "starting (watch, PID 7)"),
    (InFlight("vm", "n1", Activity.MIGRATING_OUT, "apply", 9, "n2"), "migrating out to n2 (apply, PID 9)"),
    (InFlight("vm", "n2", Activity.MIGRATING_IN, "apply", 9, "n1"), "migrating in from n1 (apply, PID 9)"),
    (InFlight("vm", "n1", Activity.UPDATING, "apply", 5), "updating its record (apply, PID 5)"),
])
def test_in_flight_label(flight: InFlight, label: str) -> None:
    assert flight.label == label


def test_every_intent_kind_is_shown_as_an_activity() -> None:
    """A live run's intent of any kind is shown by `status`, never a KeyError (UPDATE came later)."""
    from reconciler.intent import IntentKind

    assert set(discovery._ACTIVITIES) == set(IntentKind)


@pytest.mark.parametrize(("cmdline", "command"), [
    (["/usr/bin/python3", "-m", "reconciler", "apply", "--yes", "manifests"], "apply"),
    (["/usr/local/bin/reconciler", "--version"], "reconciler"),
    (["/usr/local/bin/reconciler", "watch", "-v"], "watch"),
    (["python3", "/src/reconciler/__main__.py", "stop", "vm1"], "stop"),
    (["sleep", "60"], "reconciler"),
])
def test_command_of_the_intent_writer(cmdline: list[str], command: str) -> None:
    assert discovery.command_in(cmdline) == command


@pytest.mark.parametrize(("cmdline", "found"), [
    (["qemu", "-pidfile", "/srv/st/instances/vm1/qemu.pid", "-daemonize"], ("/srv/st", "vm1")),
    (["qemu", "-pidfile", "/srv/st/instances/vm1/other.pid"], None),
    (["qemu", "-pidfile", "/srv/st/vms/vm1/qemu.pid"], None),
    (["qemu", "-pidfile", "st/instances/vm1/qemu.pid"], None),  # relative: cannot be located
    (["qemu", "-pidfile", "/srv/st/instances/VM_1/qemu.pid"], None),  # not a name we could have made
    (["qemu", "-m", "16"], None),
])
def test_state_dir_of_a_qemu_command_line(cmdline: list[str], found: tuple[str, str] | None) -> None:
    assert discovery._state_dir_of(cmdline) == found


WEB = model.InstanceSpec(name="web", memory_mib=512, node="n1")
MAN = model.InstanceSpec(name="man", memory_mib=64, node="n1", run_strategy=model.RunStrategy.MANUAL)
DESIRED = model.DesiredState(instances={"web": WEB, "man": MAN}, nodes={"n1": model.NodeSpec("n1", "/s1")})


def test_rows_show_why_it_stopped_what_is_pending_and_what_runs() -> None:
    actual = ActualState(
        instances=(
            ActualInstance("man", "n1", RunState.STOPPED, MAN, model.spec_hash(MAN),
                           stop_cause=StopCause.KILLED, stopped_at=NOW - 60, detail=""),
            ActualInstance("old", "n1", RunState.UNKNOWN, WEB, "h", pid=44,
                           detail="QMP did not answer in time"),
            ActualInstance("web", "n1", RunState.CRASHED, WEB, model.spec_hash(WEB),
                           stop_cause=StopCause.CRASH,
                           detail="QEMU (pid 42) ended without removing its pidfile: killed by SIGKILL, "
                                  "or crashed"),
        ),
        in_flight=(InFlight("old", "n1", Activity.STOPPING, "apply", 123),),
    )
    rows = status.build_rows(DESIRED, actual, NOW, make_plan(DESIRED, actual))
    assert status.render_table(rows) == (
        "NAME  NODE  DESIRED  ACTUAL                     PID  MEMORY  VCPUS  UPTIME  SPEC   DETAIL\n"
        "man   n1    manual   stopped                    -    64M     1      -       match  "
        "stopped outside the reconciler\n"
        "old   n1    orphan   stopping (apply, PID 123)  44   512M    1      -       -      "
        "QMP did not answer in time\n"
        "web   n1    running  crashed                    -    512M    1      -       match  "
        "QEMU (pid 42) ended without removing its pidfile: killed by SIGKILL, or crashed; "
        "next apply: start (QEMU crashed; the run strategy restarts it)\n"
    )
    doc = {r["name"]: r for r in json.loads(status.render_json(rows))["instances"]}
    assert {k: doc["man"][k] for k in ("actual", "stop_cause", "stopped_at", "in_flight", "pending")} == {
        "actual": "stopped", "stop_cause": "killed", "stopped_at": NOW - 60, "in_flight": None, "pending": []}
    assert doc["old"]["actual"] == "unknown"
    assert doc["old"]["in_flight"] == {"name": "old", "node": "n1", "activity": "stopping",
                                       "command": "apply", "pid": 123, "peer_node": None}
    assert doc["web"]["stop_cause"] == "crash"
    assert doc["web"]["pending"] == [
        {"action": "start", "reason": "crashed", "words": "QEMU crashed; the run strategy restarts it"}]
