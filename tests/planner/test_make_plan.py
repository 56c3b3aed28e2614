"""Table-driven planner cases: (desired, actual, options) -> exact actions, pending, orphans, errors."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from reconciler.actual import ActualState, RunState, StopCause
from reconciler.model import (
    CacheMode,
    DesiredState,
    Disk,
    KernelBoot,
    Migration,
    MigrationMode,
    Nic,
    NicMode,
    RunStrategy,
    UpdatePolicy,
    Vnc,
)
from reconciler.planner import FieldChange, Handoff, make_plan

from .factories import actual, brief, changed, desired, node, rec, spec

R, S = RunState, StopCause
WEB = spec("web", node="a")
DISKED = spec("db", node="a", disks=(Disk("/d/db.img", boot=True), Disk("/d/data.img")))
KERNEL = spec("k", node="a", kernel=KernelBoot(kernel="/boot/vmlinuz", root="/dev/vda"))


@dataclass(frozen=True)
class Case:
    id: str
    desired: DesiredState
    actual: ActualState
    actions: list[str]
    pending: list[str] = field(default_factory=list)  # "name node reason: paths"
    orphans: list[str] = field(default_factory=list)  # "name node state fate"
    errors: list[str] = field(default_factory=list)  # "kind subject"
    warnings: int = 0
    options: dict[str, Any] = field(default_factory=dict)


def _strategy(s: RunStrategy, **kw: Any) -> Any:
    return changed(WEB, run_strategy=s, **kw)


# Each run strategy against each "not running" situation: (state, cause) -> expected action or None.
_OFF_SITUATIONS = {
    "guest-poweroff-shutdown": (R.SHUTDOWN, None),
    "guest-poweroff-stopped": (R.STOPPED, S.GUEST),
    "crashed": (R.CRASHED, S.CRASH),
    "crash-stopped": (R.STOPPED, S.CRASH),
    "stopped-by-us": (R.STOPPED, S.RECONCILER),
    "killed": (R.STOPPED, S.KILLED),
    "stale": (R.STALE, None),
}
_EXPECT_OFF = {
    RunStrategy.ALWAYS: {
        "guest-poweroff-shutdown": "restart web a guest_powered_off in_place",
        "guest-poweroff-stopped": "start web a guest_powered_off",
        "crashed": "start web a crashed",
        "crash-stopped": "start web a crashed",
        "stopped-by-us": "start web a not_running",
        "killed": "start web a stopped_outside",
        "stale": "start web a stale_pidfile clean_stale",
    },
    RunStrategy.RERUN_ON_FAILURE: {
        "crashed": "start web a crashed",
        "crash-stopped": "start web a crashed",
        "stopped-by-us": "start web a not_running",
        "killed": "start web a stopped_outside",
        "stale": "start web a stale_pidfile clean_stale",
    },
    RunStrategy.ONCE: {},
    RunStrategy.MANUAL: {},
    RunStrategy.HALTED: {"guest-poweroff-shutdown": "stop web a wanted_stopped"},
}

STRATEGY_CASES = [
    Case(
        f"{strategy.value}-{situation}",
        desired(_strategy(strategy)),
        actual(rec(_strategy(strategy), "a", state, cause)),
        [e] if (e := _EXPECT_OFF[strategy].get(situation)) else [],
    )
    for strategy in RunStrategy
    for situation, (state, cause) in _OFF_SITUATIONS.items()
]

CASES = [
    Case("in-sync", desired(WEB), actual(rec(WEB, "a")), []),
    Case("new", desired(WEB), actual(), ["start web a new"]),
    Case("stale-pidfile-names-another-process", desired(WEB),
         actual(replace(rec(WEB, "a", R.STALE), pidfile_foreign=True)),
         ["start web a pidfile_other_process clean_stale"]),
    Case("new-once", desired(_strategy(RunStrategy.ONCE)), actual(), ["start web a new"]),
    Case("new-manual", desired(_strategy(RunStrategy.MANUAL)), actual(), []),
    Case("new-halted", desired(_strategy(RunStrategy.HALTED)), actual(), []),
    Case("halted-running", desired(_strategy(RunStrategy.HALTED)),
         actual(rec(WEB, "a")), ["stop web a wanted_stopped"]),
    Case("halted-running-protected", desired(_strategy(RunStrategy.HALTED, protect=True)),
         actual(rec(WEB, "a")), [], errors=["protected instance web"]),
    Case("memory-changed", desired(changed(WEB, memory_mib=1024)), actual(rec(WEB, "a")),
         ["restart web a spec_changed"]),
    Case("vcpus-changed", desired(changed(WEB, vcpus=2)), actual(rec(WEB, "a")),
         ["restart web a spec_changed"]),
    Case("disk-cache-changed-with-the-write-cache",  # the device's write-cache flag: fixed at realize
         desired(changed(DISKED, disks=(DISKED.disks[0], Disk("/d/data.img", cache=CacheMode.WRITETHROUGH)))),
         actual(rec(DISKED, "a")), ["restart db a spec_changed"]),
    Case("disk-cache-changed-write-cache-kept",  # blockdev-reopen
         desired(changed(DISKED, disks=(DISKED.disks[0], Disk("/d/data.img", cache=CacheMode.UNSAFE)))),
         actual(rec(DISKED, "a")), ["update db a live_update"]),
    Case("kernel-cmdline-changed",
         desired(changed(KERNEL, kernel=KernelBoot("/boot/vmlinuz", "/dev/vda", cmdline="quiet"))),
         actual(rec(KERNEL, "a")), ["restart k a spec_changed"]),
    Case("vnc-added", desired(changed(WEB, vnc=Vnc())), actual(rec(WEB, "a")),
         ["restart web a spec_changed"]),
    Case("extra-args", desired(changed(WEB, extra_args=("-rtc", "base=utc"))), actual(rec(WEB, "a")),
         ["restart web a spec_changed"]),
    Case("ignored-fields-only",
         desired(changed(WEB, labels=(("tier", "web"),), protect=True, shutdown_timeout=5.0,
                         update_policy=UpdatePolicy.PENDING, migration=Migration(max_bandwidth=10),
                         run_strategy=RunStrategy.RERUN_ON_FAILURE)),
         actual(rec(WEB, "a")), ["update web a record_only"]),
    Case("node-changed-live", desired(changed(WEB, node="b")), actual(rec(WEB, "a")),
         ["migrate web a->b node_changed live"]),
    Case("node-changed-offline",
         desired(changed(WEB, node="b", migration=Migration(mode=MigrationMode.OFFLINE))),
         actual(rec(WEB, "a")), ["migrate web a->b node_changed offline"]),
    Case("node-and-memory-changed", desired(changed(WEB, node="b", memory_mib=1024)), actual(rec(WEB, "a")),
         ["restart web a->b relocate"]),
    Case("paused-counts-as-running", desired(changed(WEB, vcpus=4)), actual(rec(WEB, "a", R.PAUSED)),
         ["restart web a spec_changed"]),
    Case("pending-policy", desired(changed(WEB, memory_mib=1024, update_policy=UpdatePolicy.PENDING)),
         actual(rec(WEB, "a")), ["update web a record_only"], pending=["web a update_pending: memory_mib"]),
    Case("pending-policy-already-recorded",
         desired(changed(WEB, memory_mib=1024, update_policy=UpdatePolicy.PENDING)),
         actual(rec(changed(WEB, update_policy=UpdatePolicy.PENDING), "a")), [],
         pending=["web a update_pending: memory_mib"]),
    Case("pending-policy-node-change",
         desired(changed(WEB, memory_mib=1024, node="b", update_policy=UpdatePolicy.PENDING)),
         actual(rec(WEB, "a")), ["migrate web a->b node_changed live"],
         pending=["web a update_pending: memory_mib"]),
    Case("pending-applied-on-guest-restart",
         desired(changed(WEB, memory_mib=1024, update_policy=UpdatePolicy.PENDING)),
         actual(rec(WEB, "a", R.SHUTDOWN)), ["restart web a guest_powered_off"]),
    Case("manual-drift", desired(_strategy(RunStrategy.MANUAL, memory_mib=1024, node="b")),
         actual(rec(_strategy(RunStrategy.MANUAL), "a")), [], pending=["web a manual: node memory_mib"]),
    Case("manual-protect-added", desired(_strategy(RunStrategy.MANUAL, protect=True, memory_mib=1024)),
         actual(rec(_strategy(RunStrategy.MANUAL), "a")), ["update web a record_only"],
         pending=["web a manual: memory_mib"]),
    Case("poweroff-with-spec-change", desired(changed(WEB, vcpus=2)), actual(rec(WEB, "a", R.SHUTDOWN)),
         ["restart web a guest_powered_off"]),
    Case("poweroff-node-change", desired(changed(WEB, node="b")), actual(rec(WEB, "a", R.SHUTDOWN)),
         ["restart web a->b guest_powered_off"]),
    Case("crashed-node-change", desired(changed(WEB, node="b")), actual(rec(WEB, "a", R.CRASHED, S.CRASH)),
         ["start web b crashed"]),
    Case("unknown-state", desired(changed(WEB, vcpus=2)), actual(rec(WEB, "a", R.UNKNOWN)), [], warnings=1),
    Case("unreadable-record", desired(WEB), actual(rec(None, "a", name="web")), [], warnings=1),
    Case("orphan-no-prune", desired(WEB), actual(rec(WEB, "a"), rec(spec("old"), "b")), [],
         orphans=["old b running would stop"]),
    Case("orphan-prune", desired(WEB), actual(rec(WEB, "a"), rec(spec("old"), "b")),
         ["stop old b pruned"], orphans=["old b running stop"], options={"prune": True}),
    Case("orphan-prune-from-manifest", desired(WEB, prune=True), actual(rec(WEB, "a"), rec(spec("old"), "b")),
         ["stop old b pruned"], orphans=["old b running stop"]),
    Case("orphan-prune-overridden-off", desired(WEB, prune=True), actual(rec(spec("old"), "b")),
         ["start web a new"], orphans=["old b running would stop"], options={"prune": False}),
    Case("orphan-prune-protected", desired(WEB), actual(rec(WEB, "a"), rec(spec("old", protect=True), "b")),
         [], orphans=["old b running protected"], options={"prune": True}),
    Case("orphan-stopped-record", desired(WEB), actual(rec(WEB, "a"), rec(spec("old"), "b", R.STOPPED)),
         [], options={"prune": True}),
    Case("empty-manifests-prune", desired(), actual(rec(spec("old"), "b")),
         ["stop old b pruned"], orphans=["old b running stop"], errors=["empty_manifests manifests"],
         options={"prune": True}),
    Case("empty-manifests-prune-allowed", desired(), actual(rec(spec("old"), "b")),
         ["stop old b pruned"], orphans=["old b running stop"], options={"prune": True, "allow_empty": True}),
    Case("empty-manifests-no-prune", desired(), actual(), []),
    Case("unscheduled-most-free", desired(spec("u", 512), nodes=(node("a", 2048), node("b", 4096))),
         actual(), ["start u b new"]),
    Case("unscheduled-tie-by-name", desired(spec("u", 512), nodes=(node("b", 2048), node("a", 2048))),
         actual(), ["start u a new"]),
    Case("unscheduled-unknown-capacity-wins", desired(spec("u", 512), nodes=(node("a", 8192), node("b"))),
         actual(), ["start u b new"]),
    Case("unscheduled-counts-running",
         desired(spec("u", 512), spec("big", 3072, node="a"), nodes=(node("a", 4096), node("b", 2048))),
         actual(rec(spec("big", 3072, node="a"), "a")), ["start u b new"]),
    Case("unscheduled-bigger-first",
         desired(spec("s", 512), spec("t", 1536), nodes=(node("a", 2048), node("b", 1024))),
         actual(), ["start s b new", "start t a new"]),
    Case("unscheduled-no-room", desired(spec("u", 4096), nodes=(node("a", 2048), node("b", 1024))),
         actual(), [], errors=["placement instance u"]),
    Case("unscheduled-stays-where-it-runs", desired(spec("u", 512)), actual(rec(spec("u", 512), "b")), []),
    Case("unscheduled-restarts-where-it-was", desired(spec("u", 512)),
         actual(rec(spec("u", 512), "b", R.CRASHED, S.CRASH)), ["start u b crashed"]),
    Case("capacity-exceeded",
         desired(spec("x", 1024, node="a"), spec("y", 1536, node="a"), nodes=(node("a", 2048),)),
         actual(), ["start x a new", "start y a new"], errors=["capacity node a"]),
    Case("capacity-migration-counts-on-target",
         desired(spec("x", 1024, node="b"), spec("y", 1536, node="b"), nodes=(node("a"), node("b", 2048))),
         actual(rec(spec("x", 1024, node="a"), "a"), rec(spec("y", 1536, node="b"), "b")),
         ["migrate x a->b node_changed live"], errors=["capacity node b"]),
    Case("capacity-stop-before-start",
         desired(spec("old", 1024, node="a", run_strategy=RunStrategy.HALTED), spec("new", 1024, node="a"),
                 nodes=(node("a", 1536),)),
         actual(rec(spec("old", 1024, node="a"), "a")),
         ["stop old a wanted_stopped", "start new a new p1"]),
    Case("capacity-migrate-out-before-start",
         desired(spec("m", 1024, node="b"), spec("n", 1024, node="a"), nodes=(node("a", 1536), node("b"))),
         actual(rec(spec("m", 1024, node="a"), "a")),
         ["migrate m a->b node_changed live", "start n a new p1"]),
    Case("capacity-not-tight-all-parallel",
         desired(spec("old", 512, node="a", run_strategy=RunStrategy.HALTED), spec("new", 512, node="a"),
                 nodes=(node("a", 2048),)),
         actual(rec(spec("old", 512, node="a"), "a")),
         ["start new a new", "stop old a wanted_stopped"]),
    Case("capacity-swap-cycle",
         desired(spec("p", 1024, node="b"), spec("q", 1024, node="a"),
                 nodes=(node("a", 1024), node("b", 1024))),
         actual(rec(spec("p", 1024, node="a"), "a"), rec(spec("q", 1024, node="b"), "b")),
         ["migrate p a->b node_changed live", "migrate q b->a node_changed live"], errors=["ordering plan"]),
    Case("two-nodes-source-running-target-inmigrate", desired(changed(WEB, node="b")),
         actual(rec(WEB, "a"), rec(WEB, "b", R.INMIGRATE)),
         ["stop web b duplicate", "migrate web a->b node_changed p1 live"]),
    Case("two-nodes-target-running-source-postmigrate", desired(changed(WEB, node="b")),
         actual(rec(WEB, "a", R.POSTMIGRATE), rec(changed(WEB, node="b"), "b")), ["stop web a duplicate"]),
    Case("two-nodes-target-record-names-old-node", desired(changed(WEB, node="b")),
         actual(rec(WEB, "a", R.POSTMIGRATE), rec(WEB, "b")),
         ["stop web a duplicate", "update web b record_only p1"]),
    Case("two-nodes-both-running", desired(WEB), actual(rec(WEB, "a"), rec(WEB, "b")), [],
         errors=["split_brain instance web"]),
    Case("two-nodes-dead-record-ignored", desired(changed(WEB, node="b")),
         actual(rec(WEB, "a", R.STOPPED, S.RECONCILER), rec(changed(WEB, node="b"), "b")), []),
    Case("stranded-inmigrate", desired(WEB), actual(rec(WEB, "a", R.INMIGRATE)),
         ["restart web a stranded_migration"]),
    Case("stranded-postmigrate-halted", desired(_strategy(RunStrategy.HALTED)),
         actual(rec(WEB, "a", R.POSTMIGRATE)), ["stop web a wanted_stopped"]),
    Case("unknown-node", desired(changed(WEB, node="zz")), actual(), [],
         errors=["unknown_node instance web"]),
    Case("targets-limit", desired(WEB, spec("other", node="b")), actual(), ["start web a new"],
         options={"targets": frozenset({"web"})}),
    Case("targets-limit-orphans", desired(WEB), actual(rec(WEB, "a"), rec(spec("old"), "b")), [],
         options={"targets": frozenset({"web"}), "prune": True}),
    Case("targets-unknown", desired(WEB), actual(rec(WEB, "a")), [],
         errors=["unknown_target instance nope"], options={"targets": frozenset({"nope"})}),
    Case("targets-capacity-counts-others",
         desired(spec("x", 1024, node="a"), spec("y", 1536, node="a"), nodes=(node("a", 2048),)),
         actual(rec(spec("x", 1024, node="a"), "a")), ["start y a new"], errors=["capacity node a"],
         options={"targets": frozenset({"y"})}),
]

# Bug 1: fields that need no restart update the applied record in place (`~`), running or stopped.
RECORD_CASES = [
    Case("protect-added", desired(changed(WEB, protect=True)), actual(rec(WEB, "a")),
         ["update web a record_only"]),
    Case("labels-changed", desired(changed(WEB, labels=(("tier", "db"),))), actual(rec(WEB, "a")),
         ["update web a record_only"]),
    Case("run-strategy-changed", desired(_strategy(RunStrategy.RERUN_ON_FAILURE)), actual(rec(WEB, "a")),
         ["update web a record_only"]),
    Case("shutdown-timeout-changed", desired(changed(WEB, shutdown_timeout=90.0)), actual(rec(WEB, "a")),
         ["update web a record_only"]),
    Case("migration-settings-changed", desired(changed(WEB, migration=Migration(max_downtime_ms=50))),
         actual(rec(WEB, "a")), ["update web a record_only"]),
    Case("declared-node-where-it-runs", desired(spec("u", node="b")), actual(rec(spec("u"), "b")),
         ["update u b record_only"]),
    Case("protect-and-restart-field", desired(changed(WEB, protect=True, vcpus=2)), actual(rec(WEB, "a")),
         ["restart web a spec_changed"]),
    Case("protect-and-migration", desired(changed(WEB, protect=True, node="b")), actual(rec(WEB, "a")),
         ["migrate web a->b node_changed live"]),
    Case("protect-added-to-halted-stopped", desired(_strategy(RunStrategy.HALTED, protect=True)),
         actual(rec(_strategy(RunStrategy.HALTED), "a", R.STOPPED, S.RECONCILER)),
         ["update web a record_only"]),
    Case("once-stopped-labels", desired(_strategy(RunStrategy.ONCE, labels=(("a", "b"),))),
         actual(rec(_strategy(RunStrategy.ONCE), "a", R.STOPPED, S.GUEST)), ["update web a record_only"]),
    Case("stale-record-not-updated", desired(_strategy(RunStrategy.HALTED)),
         actual(rec(WEB, "a", R.STALE)), []),
    Case("unknown-state-not-updated", desired(changed(WEB, protect=True)), actual(rec(WEB, "a", R.UNKNOWN)),
         [], warnings=1),
]

# Bug 4: a RerunOnFailure instance its guest powered off stays off until the manifests change; a change
# made since (any field, the run strategy too) is a new intent and starts it.
_ROF = _strategy(RunStrategy.RERUN_ON_FAILURE)
RERUN_CASES = [
    Case("rerun-poweroff-unchanged", desired(_ROF), actual(rec(_ROF, "a", R.STOPPED, S.GUEST)), []),
    Case("rerun-poweroff-then-halted", desired(_strategy(RunStrategy.HALTED)),
         actual(rec(_ROF, "a", R.STOPPED, S.GUEST)), ["update web a record_only"]),
    Case("rerun-poweroff-halted-then-back", desired(_ROF),
         actual(rec(_strategy(RunStrategy.HALTED), "a", R.STOPPED, S.GUEST)),
         ["start web a changed_since_poweroff"]),
    Case("rerun-poweroff-memory-changed", desired(changed(_ROF, memory_mib=1024)),
         actual(rec(_ROF, "a", R.STOPPED, S.GUEST)), ["start web a changed_since_poweroff"]),
    Case("rerun-poweroff-node-changed", desired(changed(_ROF, node="b")),
         actual(rec(_ROF, "a", R.STOPPED, S.GUEST)), ["start web b changed_since_poweroff"]),
    Case("rerun-shutdown-labels-changed", desired(changed(_ROF, labels=(("x", "y"),))),
         actual(rec(_ROF, "a", R.SHUTDOWN)), ["restart web a changed_since_poweroff in_place"]),
    Case("rerun-shutdown-vcpus-changed", desired(changed(_ROF, vcpus=2)),
         actual(rec(_ROF, "a", R.SHUTDOWN)), ["restart web a changed_since_poweroff"]),
    Case("rerun-shutdown-unchanged", desired(_ROF), actual(rec(_ROF, "a", R.SHUTDOWN)), []),
    Case("once-poweroff-changed-stays-off", desired(_strategy(RunStrategy.ONCE, memory_mib=1024)),
         actual(rec(_strategy(RunStrategy.ONCE), "a", R.STOPPED, S.GUEST)), []),
]

# Bug 3: a start that needs what another instance's stop releases runs in a later phase.
_D = (Disk("/srv/r.img", boot=True),)
_NIC = (Nic("52:54:00:12:34:56", mode=NicMode.USER),)
HANDOFF_CASES = [
    Case("rename-same-disk", desired(spec("r2", node="a", disks=_D), prune=True),
         actual(rec(spec("r1", node="a", disks=_D), "a")),
         ["stop r1 a pruned", "start r2 a new p1"], orphans=["r1 a running stop"]),
    Case("rename-disk-path-spelled-differently",
         desired(spec("r2", node="a", disks=(Disk("/srv//x/../r.img", boot=True),)), prune=True),
         actual(rec(spec("r1", node="a", disks=_D), "a")),
         ["stop r1 a pruned", "start r2 a new p1"], orphans=["r1 a running stop"]),
    Case("rename-other-node", desired(spec("r2", node="b", disks=_D), prune=True),
         actual(rec(spec("r1", node="a", disks=_D), "a")),
         ["stop r1 a pruned", "start r2 b new p1"], orphans=["r1 a running stop"]),
    Case("different-disks-parallel",
         desired(spec("r2", node="a", disks=(Disk("/srv/other.img", boot=True),)), prune=True),
         actual(rec(spec("r1", node="a", disks=_D), "a")),
         ["stop r1 a pruned", "start r2 a new"], orphans=["r1 a running stop"]),
    Case("vnc-display-handed-over",
         desired(spec("old", node="a", vnc=Vnc(display=3), run_strategy=RunStrategy.HALTED),
                 spec("new", node="a", vnc=Vnc(bind="0.0.0.0", display=3))),
         actual(rec(spec("old", node="a", vnc=Vnc(display=3)), "a")),
         ["stop old a wanted_stopped", "start new a new p1"]),
    Case("mac-handed-over",
         desired(spec("old", node="a", nics=_NIC, run_strategy=RunStrategy.HALTED),
                 spec("new", node="a", nics=(Nic("52:54:00:12:34:56".upper(), mode=NicMode.USER),))),
         actual(rec(spec("old", node="a", nics=_NIC), "a")),
         ["stop old a wanted_stopped", "start new a new p1"]),
    Case("restart-releases-disk",
         desired(changed(spec("a1", node="a", disks=_D), disks=(Disk("/srv/a1.img", boot=True),)),
                 spec("b1", node="a", disks=_D)),
         actual(rec(spec("a1", node="a", disks=_D), "a")),
         ["restart a1 a spec_changed", "start b1 a new p1"]),
    Case("restart-takes-released-disk",
         desired(spec("a1", node="a", disks=_D, vcpus=2),
                 spec("b1", node="a", run_strategy=RunStrategy.HALTED)),
         actual(rec(spec("a1", node="a"), "a"), rec(spec("b1", node="a", disks=_D), "a")),
         ["stop b1 a wanted_stopped", "restart a1 a spec_changed p1"]),
    Case("disk-swap-cycle",
         desired(spec("p", node="a", disks=(Disk("/y", boot=True),)), spec("q", node="a", disks=_D)),
         actual(rec(spec("p", node="a", disks=_D), "a"),
                rec(spec("q", node="a", disks=(Disk("/y", boot=True),)), "a")),
         ["restart p a spec_changed", "restart q a spec_changed"], errors=["ordering plan"]),
    Case("handoff-chain",
         desired(spec("a1", node="a", run_strategy=RunStrategy.HALTED),
                 spec("b1", node="a", disks=_D, vnc=Vnc(display=1)),
                 spec("c1", node="a", vnc=Vnc(display=2))),
         actual(rec(spec("a1", node="a", disks=_D), "a"), rec(spec("b1", node="a", vnc=Vnc(display=2)), "a")),
         ["stop a1 a wanted_stopped", "restart b1 a spec_changed p1", "start c1 a new p2"]),
    Case("in-place-restart-takes-nothing",
         desired(spec("a1", node="a", run_strategy=RunStrategy.HALTED), spec("b1", node="a", disks=_D)),
         actual(rec(spec("a1", node="a", disks=_D), "a"),
                rec(spec("b1", node="a", disks=_D), "a", R.SHUTDOWN)),
         ["stop a1 a wanted_stopped", "restart b1 a guest_powered_off in_place"]),
]


ALL_CASES = STRATEGY_CASES + CASES + RECORD_CASES + RERUN_CASES + HANDOFF_CASES


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_plan_case(case: Case) -> None:
    plan = make_plan(case.desired, case.actual, **{"prune": None, "targets": None, "allow_empty": False,
                                                    **case.options})
    assert brief(plan) == case.actions
    assert [f"{p.name} {p.node} {p.reason.value}: " + " ".join(c.path for c in p.changes)
            for p in plan.pending] == case.pending
    assert [f"{o.name} {o.node} {o.state} {o.fate.value}" for o in plan.orphans] == case.orphans
    assert [f"{e.kind.value} {e.subject}" for e in plan.errors] == case.errors
    assert len(plan.warnings) == case.warnings
    assert plan.empty == (not case.actions)


def test_field_changes_name_paths_and_restart() -> None:
    new = changed(DISKED, memory_mib=1024, labels=(("a", "b"),),
                  disks=(Disk("/d/db.img", boot=True), Disk("/d/data.img", cache=CacheMode.WRITETHROUGH)))
    plan = make_plan(desired(new), actual(rec(DISKED, "a")))
    (action,) = plan.actions
    assert action.changes == (
        FieldChange("memory_mib", "512", "1024", True),
        FieldChange("labels", "[]", '[["a","b"]]', False),
        FieldChange("disks[1].cache", '"none"', '"writethrough"', True),
    )


def test_relocate_lists_node_first() -> None:
    plan = make_plan(desired(changed(WEB, node="b", vcpus=2)), actual(rec(WEB, "a")))
    assert [c.path for c in plan.actions[0].changes] == ["node", "vcpus"]


def test_disk_count_change_names_the_entry_removed() -> None:
    plan = make_plan(desired(changed(DISKED, disks=DISKED.disks[:1])), actual(rec(DISKED, "a")))
    got = [(c.path, c.new, c.forces_restart) for c in plan.actions[0].changes]
    assert got == [("disks[1]", "null", True)]  # a boot-time disk: a restart


def test_protected_is_restarted_but_error_names_halted_stop() -> None:
    plan = make_plan(desired(changed(WEB, protect=True, vcpus=2)), actual(rec(WEB, "a")))
    assert brief(plan) == ["restart web a spec_changed"]
    plan = make_plan(desired(_strategy(RunStrategy.HALTED, protect=True)), actual(rec(WEB, "a")))
    assert plan.errors[0].message == "instance web: protect: true; run strategy Halted would stop it on a"


def test_capacity_error_names_node_and_figures() -> None:
    plan = make_plan(desired(spec("x", 1024, node="a"), spec("y", 1536, node="a"), nodes=(node("a", 2048),)),
                     actual())
    assert plan.errors[0].message == (
        "node a: the plan puts 2560 MiB of instance memory on it, it allows 2048 MiB "
        "(x +1024 MiB, y +1536 MiB)"
    )


def test_deterministic_regardless_of_input_order() -> None:
    specs = [spec(f"vm{i}", 256) for i in range(20)]
    recs = [rec(s, "a") for s in specs[:10]]
    d1 = desired(*specs, nodes=(node("a", 8192), node("b", 8192)))
    d2 = desired(*reversed(specs), nodes=(node("b", 8192), node("a", 8192)))
    assert make_plan(d1, actual(*recs)) == make_plan(d2, actual(*reversed(recs)))


def test_unmanaged_processes_are_never_in_a_plan() -> None:
    from reconciler.actual import UnmanagedProcess

    stray = UnmanagedProcess(pid=4711, name="web", cmdline=("qemu-system-x86_64", "-name", "web"))
    plan = make_plan(desired(WEB), ActualState(instances=(rec(WEB, "a"),), unmanaged=(stray,)), prune=True)
    assert plan == make_plan(desired(WEB), actual(rec(WEB, "a")), prune=True)
    assert plan.actions == () and plan.orphans == ()


def test_handoffs_name_what_a_start_waits_for() -> None:
    cases = {c.id: c for c in HANDOFF_CASES}
    plan = make_plan(cases["handoff-chain"].desired, cases["handoff-chain"].actual)
    assert [(a.name, a.handoffs) for a in plan.actions] == [
        ("a1", ()),
        ("b1", (Handoff("a1", "disk /srv/r.img"),)),
        ("c1", (Handoff("b1", "VNC display :2"),)),
    ]
    (cycle,) = make_plan(cases["disk-swap-cycle"].desired, cases["disk-swap-cycle"].actual).errors
    assert cycle.message == ("plan: memory moves and resource hand-offs (disks, VNC displays, MACs, taps) "
                             "form a cycle no ordering can satisfy (p, q)")
