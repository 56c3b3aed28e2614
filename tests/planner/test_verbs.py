"""The imperative verbs' plans (reconciler.planner.verbs), table-driven with exact expected output: the
actions, the hints that say when the next reconcile undoes a verb, the refusals, and the notes for
instances that are already as asked."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from reconciler.actual import ActualInstance, RunState, StopCause
from reconciler.errors import InstanceNotFound
from reconciler.model import DesiredState, RunStrategy
from reconciler.planner.verbs import NEXT_RECONCILE, Verb, verb_plan
from reconciler.render.text import render_text

from .factories import actual, brief, changed, desired, node, rec, spec

S = Verb.START
P = Verb.STOP
R = Verb.RESTART
B = Verb.REBOOT

WEB = spec("web", node="a")  # Always
MAN = spec("man", node="a", run_strategy=RunStrategy.MANUAL)
HALT = spec("halt", node="a", run_strategy=RunStrategy.HALTED)
RERUN = spec("rerun", node="a", run_strategy=RunStrategy.RERUN_ON_FAILURE)
ONCE = spec("once", node="a", run_strategy=RunStrategy.ONCE)
PROT = spec("prot", node="a", protect=True)
FREE = spec("free", memory_mib=256)  # no node: placed
ALL = (WEB, MAN, HALT, RERUN, ONCE, PROT, FREE)

UNDO_START = "starts it again (runStrategy Manual or Halted keeps it stopped)"


@dataclass(frozen=True)
class Case:
    id: str
    verb: Verb
    names: tuple[str, ...]
    recs: tuple[ActualInstance, ...]
    actions: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    prune: bool = False


def _state(name: str, state: RunState, node_name: str = "a",
           cause: StopCause | None = None) -> ActualInstance:
    s = next(x for x in ALL if x.name == name)
    return rec(s, node_name, state, cause)


CASES = [
    # start
    Case("start a never-started Manual instance", S, ("man",), (), ("start man a requested",)),
    Case("start a stopped Manual instance", S, ("man",), (_state("man", RunState.STOPPED),),
         ("start man a requested",)),
    Case("start a running one: nothing to do", S, ("web",), (_state("web", RunState.RUNNING),),
         notes=("web: already running on a (pid 1000); nothing to do",)),
    Case("start a stale pidfile: cleaned first", S, ("web",), (_state("web", RunState.STALE),),
         ("start web a requested clean_stale",)),
    Case("start a powered-off guest whose QEMU lives: in place", S, ("man",),
         (_state("man", RunState.SHUTDOWN),), ("restart man a requested in_place",)),
    Case("start a Halted instance says the next reconcile stops it", S, ("halt",),
         (_state("halt", RunState.STOPPED, cause=StopCause.RECONCILER),), ("start halt a requested",),
         warnings=(f"instance halt: run strategy Halted: {NEXT_RECONCILE} stops it again",)),
    Case("start an unscheduled instance: placed", S, ("free",), (), ("start free a requested",)),
    Case("start where its record is, for an instance with no node", S, ("free",),
         (_state("free", RunState.STOPPED, "b"),), ("start free b requested",)),
    Case("start with QMP unanswered: refused", S, ("web",), (_state("web", RunState.UNKNOWN),),
         errors=("instance web: its QEMU (pid 1000) on a runs but does not answer QMP; "
                 "`reconciler restart web` replaces the process",)),
    Case("start an orphan: no spec", S, ("gone",), (rec(None, "a", RunState.STOPPED, name="gone"),),
         errors=("instance gone: not declared in the manifests: there is no spec to start it with",)),
    # stop
    Case("stop a Manual instance: no hint", P, ("man",), (_state("man", RunState.RUNNING),),
         ("stop man a requested",)),
    Case("stop an Always instance says the next reconcile starts it", P, ("web",),
         (_state("web", RunState.RUNNING),), ("stop web a requested",),
         warnings=(f"instance web: run strategy Always: {NEXT_RECONCILE} {UNDO_START}",)),
    Case("stop a RerunOnFailure instance says so too", P, ("rerun",), (_state("rerun", RunState.PAUSED),),
         ("stop rerun a requested",),
         warnings=(f"instance rerun: run strategy RerunOnFailure: {NEXT_RECONCILE} {UNDO_START}",)),
    Case("stop a Once instance: it stays stopped", P, ("once",), (_state("once", RunState.RUNNING),),
         ("stop once a requested",)),
    Case("stop a hung QEMU (QMP unanswered): by signal", P, ("man",), (_state("man", RunState.UNKNOWN),),
         ("stop man a requested",)),
    Case("stop a stopped one: nothing to do", P, ("man",),
         (_state("man", RunState.STOPPED, cause=StopCause.GUEST),),
         notes=("man: already stopped (stopped on a); nothing to do",)),
    Case("stop a never-started one: nothing to do", P, ("man",), (),
         notes=("man: already stopped (never started); nothing to do",)),
    Case("stop a protected instance: refused", P, ("prot",), (_state("prot", RunState.RUNNING),),
         errors=("instance prot: protect: true; `reconciler stop` does not stop a protected instance "
                 "(set protect: false in its manifest first)",)),
    Case("stop every live copy", P, ("man",),
         (_state("man", RunState.RUNNING, "a"), _state("man", RunState.INMIGRATE, "b")),
         ("stop man a requested", "stop man b requested")),
    Case("stop an orphan", P, ("gone",), (rec(WEB, "b", name="gone"),), ("stop gone b requested",)),
    # restart
    Case("restart a running one: a new process", R, ("man",), (_state("man", RunState.RUNNING),),
         ("restart man a requested",)),
    Case("restart a powered-off guest: a new process, not in place", R, ("man",),
         (_state("man", RunState.SHUTDOWN),), ("restart man a requested",)),
    Case("restart a stopped one: start it", R, ("man",), (_state("man", RunState.STOPPED),),
         ("start man a requested",)),
    Case("restart a hung QEMU: replaced", R, ("web",), (_state("web", RunState.UNKNOWN),),
         ("restart web a requested",)),
    Case("restart with two live copies: refused", R, ("man",),
         (_state("man", RunState.RUNNING, "a"), _state("man", RunState.INMIGRATE, "b")),
         errors=("instance man: runs on several nodes at once (a (running), b (inmigrate)), left by an "
                 "interrupted migration; `reconciler apply` resolves it (or `reconciler stop` stops every "
                 "copy)",)),
    # reboot
    Case("reboot a running one", B, ("web",), (_state("web", RunState.RUNNING),),
         ("reboot web a requested",)),
    Case("reboot a powered-off guest", B, ("man",), (_state("man", RunState.SHUTDOWN),),
         ("reboot man a requested",)),
    Case("reboot a running Halted one says the next reconcile stops it", B, ("halt",),
         (_state("halt", RunState.RUNNING),), ("reboot halt a requested",),
         warnings=(f"instance halt: run strategy Halted: {NEXT_RECONCILE} stops it again",)),
    Case("reboot an orphan while pruning is on says it is stopped next", B, ("gone",),
         (rec(WEB, "a", name="gone"),), ("reboot gone a requested",), prune=True,
         warnings=(f"instance gone: not in the manifests and pruning is on: {NEXT_RECONCILE} stops it",)),
    Case("reboot a stopped one: refused", B, ("web",), (_state("web", RunState.CRASHED),),
         errors=("instance web: not running (crashed on a); `reconciler start web` starts it",)),
    Case("reboot without QMP: refused", B, ("web",), (_state("web", RunState.UNKNOWN),),
         errors=("instance web: its QEMU (pid 1000) on a does not answer QMP, which a reboot needs; "
                 "`reconciler restart web` replaces the process",)),
    Case("reboot a stranded migration target: refused", B, ("web",), (_state("web", RunState.INMIGRATE),),
         errors=("instance web: inmigrate on a after an interrupted migration; `reconciler restart web` "
                 "starts it afresh",)),
    # several names: one action each, sorted, duplicates once
    Case("several names", P, ("web", "man", "web"),
         (_state("web", RunState.RUNNING), _state("man", RunState.RUNNING)),
         ("stop man a requested", "stop web a requested"),
         warnings=(f"instance web: run strategy Always: {NEXT_RECONCILE} {UNDO_START}",)),
]


def _desired(prune: bool) -> DesiredState:
    return desired(*ALL, nodes=(node("a", 4096), node("b", 1024)), prune=prune)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_verb_plan(case: Case) -> None:
    made = verb_plan(case.verb, case.names, _desired(case.prune), actual(*case.recs))
    assert tuple(brief(made.plan)) == case.actions
    assert made.plan.warnings == case.warnings
    assert tuple(e.message for e in made.plan.errors) == case.errors
    assert made.notes == case.notes


def test_restart_takes_the_manifest_spec_and_node() -> None:
    running = changed(MAN, memory_mib=256)  # what runs; the manifest says 512 on node b
    want = changed(MAN, node="b")
    made = verb_plan(R, ["man"], desired(want), actual(rec(running, "a")))
    assert brief(made.plan) == ["restart man a->b requested"]
    assert [(c.path, c.old, c.new) for c in made.plan.actions[0].changes] == [
        ("node", '"a"', '"b"'), ("memory_mib", "256", "512")]


def test_start_of_a_powered_off_guest_with_a_changed_spec_is_a_new_process() -> None:
    running = changed(MAN, memory_mib=256)
    made = verb_plan(S, ["man"], desired(MAN), actual(rec(running, "a", RunState.SHUTDOWN)))
    assert brief(made.plan) == ["restart man a requested"]


def test_start_beyond_the_nodes_memory_is_a_capacity_error() -> None:
    big = spec("big", memory_mib=2048, node="b", run_strategy=RunStrategy.MANUAL)
    made = verb_plan(S, ["big"], desired(big, nodes=(node("a"), node("b", 1024))), actual())
    assert [e.message for e in made.plan.errors] == [
        "node b: the plan puts 2048 MiB of instance memory on it, it allows 1024 MiB (big +2048 MiB)"]


def test_an_unknown_name_is_one_error_before_anything_is_planned() -> None:
    with pytest.raises(InstanceNotFound) as err:
        verb_plan(P, ["web", "nope"], _desired(False), actual(_state("web", RunState.RUNNING)))
    assert str(err.value) == "instance nope: not declared in the manifests and not found on any node"


def test_the_plan_renders_with_the_hint_and_the_reboot_count() -> None:
    made = verb_plan(B, ["halt"], _desired(False), actual(_state("halt", RunState.RUNNING)))
    assert render_text(made.plan) == (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  @ halt on a (guest reset: system_reset + cont, same QEMU process)\n"
        "      # asked for on the command line\n"
        "\n"
        "Warnings:\n"
        "\n"
        f"  ! instance halt: run strategy Halted: {NEXT_RECONCILE} stops it again\n"
        "\n"
        "Plan: 0 to start, 0 to restart, 0 to migrate, 0 to stop, 1 to reboot.\n"
    )
