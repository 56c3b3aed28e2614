"""The daemon's incremental discovery bookkeeping (reconciler.watch.known): when a pass must look at
everything, which instances it looks at otherwise, and how what it found merges into what was known."""

from __future__ import annotations

import pytest

from reconciler.actual import (
    Activity,
    ActualInstance,
    ActualState,
    InFlight,
    RunState,
    UnmanagedProcess,
)
from reconciler.model import NodeSpec
from reconciler.watch.known import Known, Look, merge, settling
from reconciler.watch.triggers import Trigger, TriggerSource

A = NodeSpec(name="a", state_dir="/s/a")
B = NodeSpec(name="b", state_dir="/s/b")
NODES = {"a": A, "b": B}


def inst(name: str, node: str = "a", state: RunState = RunState.RUNNING, pid: int | None = 100,
         **kw: object) -> ActualInstance:
    return ActualInstance(name=name, node=node, state=state, spec=None, pid=pid, **kw)  # type: ignore[arg-type]


KNOWN = ActualState(  # sorted by name and node, as discovery gives it
    instances=(inst("off", state=RunState.STOPPED, pid=None), inst("vm1", pid=101), inst("vm2", pid=102),
               inst("vm3", "b", pid=103)),
    unmanaged=(UnmanagedProcess(pid=555, name="x", cmdline=("qemu",)),
               UnmanagedProcess(pid=777, name="y", cmdline=("qemu",))),
    in_flight=(InFlight(name="vm2", node="a", activity=Activity.STOPPING, command="apply", pid=9),))


@pytest.mark.parametrize(("names", "partial", "nodes", "expected"), [
    # nothing looked at: the known state stands
    (frozenset(), [], NODES, KNOWN),
    # vm1 looked at, now stopped; vm2 looked at and gone (pruned by hand); its in-flight action goes too
    (frozenset({"vm1", "vm2"}), [ActualState(instances=(inst("vm1", state=RunState.STOPPED, pid=None),))],
     NODES,
     ActualState(instances=(inst("off", state=RunState.STOPPED, pid=None),
                            inst("vm1", state=RunState.STOPPED, pid=None), inst("vm3", "b", pid=103)),
                 unmanaged=KNOWN.unmanaged)),
    # a new instance found on b, claiming the process that the last scan took as unmanaged
    (frozenset({"new"}), [ActualState(instances=(inst("new", "a", pid=777),))], NODES,
     ActualState(instances=(inst("new", "a", pid=777), inst("off", state=RunState.STOPPED, pid=None),
                            inst("vm1", pid=101), inst("vm2", pid=102), inst("vm3", "b", pid=103)),
                 unmanaged=KNOWN.unmanaged[:1], in_flight=KNOWN.in_flight)),
    # node b is no longer reachable: what was known of it is dropped
    (frozenset(), [], {"a": A},
     ActualState(instances=(inst("off", state=RunState.STOPPED, pid=None), inst("vm1", pid=101),
                            inst("vm2", pid=102)),
                 unmanaged=KNOWN.unmanaged, in_flight=KNOWN.in_flight)),
])
def test_merge(names: frozenset[str], partial: list[ActualState], nodes: dict[str, NodeSpec],
               expected: ActualState) -> None:
    assert merge(KNOWN, names, partial, nodes) == expected


def test_settling_names_the_uncertain_and_the_in_flight() -> None:
    state = ActualState(
        instances=(inst("ok"), inst("slow", qmp_unresponsive=True), inst("unk", state=RunState.UNKNOWN),
                   inst("off", state=RunState.STOPPED, pid=None)),
        in_flight=(InFlight(name="busy", node="a", activity=Activity.STARTING, command="apply", pid=9),))
    assert settling(state) == frozenset({"slow", "unk", "busy"})


def learned(k: Known) -> Known:
    assert k.look(NODES).full
    k.learned(NODES, KNOWN)
    return k


def test_first_look_is_full_then_only_touched_and_settling() -> None:
    k = Known()
    assert k.look(NODES) == Look(True, why="startup")
    k.learned(NODES, KNOWN)
    assert k.look(NODES) == Look(False, frozenset({"vm2"}))  # in flight
    k.touched("vm1")
    assert k.look(NODES) == Look(False, frozenset({"vm1", "vm2"}))
    assert k.look(NODES) == Look(False, frozenset({"vm2"}))  # taken: touched once, looked at once
    assert k.last == Look(False, frozenset({"vm2"}))


@pytest.mark.parametrize(("trigger", "full"), [
    (Trigger(TriggerSource.RESYNC), True),
    (Trigger(TriggerSource.STARTUP), True),
    (Trigger(TriggerSource.SIGHUP), True),
    (Trigger(TriggerSource.HOST, "h2 is back"), True),
    (Trigger(TriggerSource.QEMU, "something exited"), True),  # names no instance: a doubt
    (Trigger(TriggerSource.QEMU, "vm1@a: QEMU exited (crash)", instance="vm1"), False),
    (Trigger(TriggerSource.FILE, "moved x.yaml", ("x.yaml",), settled=True), False),
    (Trigger(TriggerSource.FOLLOWUP), False),
    (Trigger(TriggerSource.BACKOFF), False),
])
def test_triggers_that_doubt(trigger: Trigger, full: bool) -> None:
    k = learned(Known())
    k.heard([trigger])
    look = k.look(NODES)
    assert look.full is full
    if not full:
        expected = {"vm2"} | ({trigger.instance} if trigger.instance else set())
        assert look.names == frozenset(expected)


def test_a_doubt_or_other_nodes_make_the_next_look_full_once() -> None:
    k = learned(Known())
    k.doubt("another run held the lock of node a")
    k.doubt("second reason")
    assert k.look(NODES) == Look(True, why="another run held the lock of node a")
    k.learned(NODES, KNOWN)
    assert not k.look(NODES).full
    assert k.look({"a": A}) == Look(True, why="the reachable nodes changed")
    k.learned({"a": A}, KNOWN)
    assert not k.look({"a": A}).full
    moved = NodeSpec(name="a", state_dir="/elsewhere")
    assert k.look({"a": moved}).full  # same name, another state directory
