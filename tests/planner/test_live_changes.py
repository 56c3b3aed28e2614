"""Table-driven: which memory and vCPU changes the planner makes live (an UPDATE in the running QEMU),
which restart, and which wait (updatePolicy Pending, run strategy Manual); the per-field classes the
plan shows; the classes of the policy table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from reconciler.actual import ActualState, RunState
from reconciler.model import DesiredState, RunStrategy, UpdatePolicy
from reconciler.planner import FieldChange, make_plan
from reconciler.planner.actions import ChangeClass
from reconciler.planner.policy import POLICY, FieldPolicy, change_class, record_spec
from reconciler.render.json import plan_from_dict, plan_to_dict, render_json
from reconciler.render.text import render_text

from .factories import actual, brief, changed, desired, node, rec, spec

ROOMY = spec("web", 512, node="a", max_memory_mib=2048, vcpus=1, max_vcpus=4)
TIGHT = spec("web", 512, node="a")  # no maxMemory / maxVcpus: no live changes
LEFT = ("block node hd0123456789ab-format without its device",)  # a killed live change's, in QEMU


@dataclass(frozen=True)
class Case:
    id: str
    desired: DesiredState
    actual: ActualState
    actions: list[str]
    changes: list[str] = field(default_factory=list)  # "path old->new class" of the first action
    pending: list[str] = field(default_factory=list)  # "reason: path path"


CASES = [
    Case("memory-down-balloon", desired(changed(ROOMY, memory_mib=256)), actual(rec(ROOMY, "a")),
         ["update web a live_update"], ["memory_mib 512->256 live"]),
    Case("memory-up-dimm", desired(changed(ROOMY, memory_mib=1536)), actual(rec(ROOMY, "a")),
         ["update web a live_update"], ["memory_mib 512->1536 live"]),
    Case("memory-up-to-max", desired(changed(ROOMY, memory_mib=2048)), actual(rec(ROOMY, "a")),
         ["update web a live_update"], ["memory_mib 512->2048 live"]),
    Case("vcpus-up", desired(changed(ROOMY, vcpus=3)), actual(rec(ROOMY, "a")),
         ["update web a live_update"], ["vcpus 1->3 live"]),
    Case("vcpus-below-the-boot-ones-restarts", desired(changed(ROOMY, vcpus=2)),
         actual(rec(changed(ROOMY, vcpus=3), "a")), ["restart web a spec_changed"], ["vcpus 3->2 restart"]),
    Case("vcpus-down-to-the-boot-ones-live",  # the hotplugged CPUs are unplugged (device_del)
         desired(ROOMY), actual(replace(rec(changed(ROOMY, vcpus=3), "a"), boot_spec=ROOMY)),
         ["update web a live_update"], ["vcpus 3->1 live"]),
    Case("memory-without-max-restarts", desired(changed(TIGHT, memory_mib=256)), actual(rec(TIGHT, "a")),
         ["restart web a spec_changed"], ["memory_mib 512->256 restart"]),
    Case("vcpus-without-max-restarts", desired(changed(TIGHT, vcpus=2)), actual(rec(TIGHT, "a")),
         ["restart web a spec_changed"], ["vcpus 1->2 restart"]),
    Case("max-change-restarts", desired(changed(ROOMY, max_memory_mib=4096)), actual(rec(ROOMY, "a")),
         ["restart web a spec_changed"], ["max_memory_mib 2048->4096 restart"]),
    Case("above-the-running-max-restarts",
         desired(changed(ROOMY, memory_mib=3072, max_memory_mib=4096)), actual(rec(ROOMY, "a")),
         ["restart web a spec_changed"],
         ["memory_mib 512->3072 restart", "max_memory_mib 2048->4096 restart"]),
    Case("live-and-restart-mixed-is-a-restart",
         desired(changed(ROOMY, memory_mib=1024, machine="q35")), actual(rec(ROOMY, "a")),
         ["restart web a spec_changed"], ["memory_mib 512->1024 live", "machine \"pc\"->\"q35\" restart"]),
    Case("mixed-with-pending-applies-the-live-part",
         desired(changed(ROOMY, memory_mib=1024, machine="q35", update_policy=UpdatePolicy.PENDING)),
         actual(rec(changed(ROOMY, update_policy=UpdatePolicy.PENDING), "a")),
         ["update web a live_update"], ["memory_mib 512->1024 live"],
         pending=["update_pending: machine"]),
    Case("live-with-record-only", desired(changed(ROOMY, vcpus=2, protect=True)), actual(rec(ROOMY, "a")),
         ["update web a live_update"], ["vcpus 1->2 live", "protect false->true record"]),
    Case("manual-leaves-live-changes-pending",
         desired(changed(ROOMY, memory_mib=1024, run_strategy=RunStrategy.MANUAL)),
         actual(rec(changed(ROOMY, run_strategy=RunStrategy.MANUAL), "a")), [],
         pending=["manual: memory_mib"]),
    Case("paused-is-not-changed-live", desired(changed(ROOMY, memory_mib=1024)),
         actual(rec(ROOMY, "a", RunState.PAUSED)), []),
    Case("powered-off-guest-restarts-with-the-new-size", desired(changed(ROOMY, memory_mib=1024)),
         actual(rec(ROOMY, "a", RunState.SHUTDOWN)), ["restart web a guest_powered_off"],
         ["memory_mib 512->1024 live"]),
    Case("powered-off-guest-unchanged-resets-in-place", desired(changed(ROOMY, protect=True)),
         actual(rec(ROOMY, "a", RunState.SHUTDOWN)), ["restart web a guest_powered_off in_place"],
         ["protect false->true record"]),
    Case("leftovers-of-a-killed-live-change-are-an-update", desired(ROOMY),
         actual(replace(rec(ROOMY, "a"), leftovers=LEFT)), ["update web a live_leftovers"]),
    Case("leftovers-with-a-live-change-are-that-change", desired(changed(ROOMY, vcpus=2)),
         actual(replace(rec(ROOMY, "a"), leftovers=LEFT)), ["update web a live_update"],
         ["vcpus 1->2 live"]),
    Case("leftovers-of-a-paused-guest-wait", desired(ROOMY),
         actual(replace(rec(ROOMY, "a", RunState.PAUSED), leftovers=LEFT)), []),
    Case("node-change-migrates-first", desired(changed(ROOMY, memory_mib=1024, node="b")),
         actual(rec(ROOMY, "a")), ["migrate web a->b node_changed live"], ["node \"a\"->\"b\" migrate"]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_live_case(case: Case) -> None:
    plan = make_plan(case.desired, case.actual)
    assert brief(plan) == case.actions
    got = [f"{c.path} {c.old}->{c.new} {c.change_class.value}" for c in plan.actions[0].changes] \
        if plan.actions else []
    assert got == case.changes
    assert [f"{p.reason.value}: " + " ".join(c.path for c in p.changes) for p in plan.pending] == case.pending
    assert not plan.errors


def test_a_live_memory_change_counts_on_the_node() -> None:
    """A DIMM takes host memory as a start would: over the node's capacity is a plan error."""
    big = changed(ROOMY, memory_mib=2048)
    plan = make_plan(desired(big, nodes=(node("a", 1024), node("b"))), actual(rec(ROOMY, "a")))
    assert [e.kind.value for e in plan.errors] == ["capacity"]
    (action,) = plan.actions
    assert action.memory_mib == 2048


def test_policy_classes() -> None:
    assert POLICY["memory_mib"] is FieldPolicy.LIVE and POLICY["vcpus"] is FieldPolicy.LIVE
    assert POLICY["max_memory_mib"] is FieldPolicy.RESTART and POLICY["max_vcpus"] is FieldPolicy.RESTART
    assert change_class("memory_mib", TIGHT, changed(TIGHT, memory_mib=256)) is FieldPolicy.RESTART
    assert change_class("memory_mib", ROOMY, changed(ROOMY, memory_mib=256)) is FieldPolicy.LIVE
    assert change_class("labels", ROOMY, ROOMY) is FieldPolicy.IGNORE


def test_record_spec_takes_live_fields_only_when_made_live() -> None:
    want = changed(ROOMY, memory_mib=1024, vcpus=2, machine="q35", protect=True)
    assert record_spec(ROOMY, want, "a") == changed(ROOMY, protect=True)
    assert record_spec(ROOMY, want, "a", live=True) == changed(ROOMY, memory_mib=1024, vcpus=2, protect=True)
    over = changed(ROOMY, memory_mib=4096, max_memory_mib=4096)
    assert record_spec(ROOMY, over, "a", live=True) == ROOMY  # above what QEMU started with: not live


def test_text_shows_update_in_place_with_each_live_field() -> None:
    plan = make_plan(desired(changed(ROOMY, memory_mib=1024, vcpus=2)), actual(rec(ROOMY, "a")))
    assert render_text(plan) == (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  ~ web on a (update in place)\n"
        "      # changed in the running QEMU (hotplug, balloon); no restart needed\n"
        "      memory_mib: 512 -> 1024  # live\n"
        "      vcpus: 1 -> 2  # live\n"
        "\n"
        "Plan: 0 to start, 0 to restart, 0 to migrate, 0 to stop, 1 record to update in place (no restart).\n"
    )


def test_text_and_json_show_what_a_killed_live_change_left() -> None:
    left = ("block node hd0123456789ab-format without its device",
            "DIMM dimm0 (256 MiB) plugged, not in the record")
    plan = make_plan(desired(ROOMY), actual(replace(rec(ROOMY, "a"), leftovers=left)))
    assert render_text(plan) == (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  ~ web on a (update in place)\n"
        "      # a live change was killed halfway: QEMU is brought back to its record, live\n"
        "      # QEMU: block node hd0123456789ab-format without its device\n"
        "      # QEMU: DIMM dimm0 (256 MiB) plugged, not in the record\n"
        "\n"
        "Plan: 0 to start, 0 to restart, 0 to migrate, 0 to stop, 1 record to update in place (no restart).\n"
    )
    (action,) = json.loads(render_json(plan))["actions"]
    assert (action["reason"], action["leftovers"], action["changes"]) == ("live_leftovers", list(left), [])
    assert plan_from_dict(plan_to_dict(plan)) == plan  # a saved plan keeps them


def test_json_has_the_action_update_and_each_field_class() -> None:
    plan = make_plan(desired(changed(ROOMY, memory_mib=1024, protect=True)), actual(rec(ROOMY, "a")))
    data = json.loads(render_json(plan))
    (action,) = data["actions"]
    assert (action["kind"], action["reason"], action["memory_mib"]) == ("update", "live_update", 1024)
    assert action["changes"] == [
        {"path": "memory_mib", "old": 512, "new": 1024, "forces_restart": False, "class": "live"},
        {"path": "protect", "old": False, "new": True, "forces_restart": False, "class": "record"},
    ]
    assert plan_from_dict(plan_to_dict(plan)) == plan  # a saved plan keeps the classes


def test_change_classes() -> None:
    assert FieldChange("vcpus", "1", "2", False, live=True).change_class is ChangeClass.LIVE
    assert FieldChange("vcpus", "1", "2", True).change_class is ChangeClass.RESTART
    assert FieldChange("node", '"a"', '"b"', False).change_class is ChangeClass.MIGRATE
    assert FieldChange("labels", "[]", "[]", False).change_class is ChangeClass.RECORD


def test_the_manifest_docs_show_every_fields_class() -> None:
    """docs/manifests.md's class table has one row per model field, with the policy table's class."""
    text = (Path(__file__).parents[2] / "docs" / "manifests.md").read_text()
    section = text.split("### Live changes and each field's class", 1)[1]
    (table,) = [b for b in section.split("\n\n") if b.startswith("| field | in plans | class |")]
    rows = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    shown = {row[1]: row[2] for row in rows}
    assert set(shown) == set(POLICY)
    words = {FieldPolicy.RESTART: "restart", FieldPolicy.MIGRATE: "migrate-only",
             FieldPolicy.IGNORE: "record", FieldPolicy.LIVE: "live"}
    for name, policy in POLICY.items():
        if name != "name":
            assert shown[name].startswith(words[policy]), (name, shown[name])


def test_text_marks_live_fields_only_where_they_are_made_live() -> None:
    """In a restart (a mix with a restart-forcing change) the new process takes every change: no `# live`."""
    plan = make_plan(desired(changed(ROOMY, memory_mib=1024, machine="q35")), actual(rec(ROOMY, "a")))
    text = render_text(plan)
    assert "      memory_mib: 512 -> 1024\n" in text
    assert '      machine: "pc" -> "q35"  # forces restart\n' in text
