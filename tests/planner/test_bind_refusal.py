"""The plan refuses a migration whose target could not bind the instance's VNC display (planner.binds).

Nodes sharing an address are one host: the source holds the display until the migration ends. A live
instance holding the display on the target's host (on any node with that address) blocks it too, unless
the plan takes that instance away in an earlier phase. Exact errors and rendered text.
"""

# ruff: noqa: E501  (expected lines are kept whole, as users see them)
from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.actual import RunState
from reconciler.model import InstanceSpec, NodeSpec, Vnc
from reconciler.planner import make_plan
from reconciler.planner.actions import Action, ActionKind, Reason
from reconciler.planner.binds import migration_problems
from reconciler.render.text import render_text

from .factories import actual, brief, desired, node, rec, spec

A, B = node("a"), node("b")  # both 127.0.0.1: one host
B2 = replace(B, address="127.0.0.2")  # another host
C2 = replace(node("c"), address="127.0.0.2")  # shares B2's host
WEB = spec("web", node="a", vnc=Vnc(display=1))
MOVED = replace(WEB, node="b")


Holder = tuple[InstanceSpec, str]  # a live instance's applied spec and the node its process is on


def _errors(nodes: tuple[NodeSpec, ...], holders: list[Holder]) -> list[str]:
    plan = make_plan(desired(MOVED, *(s for s, _ in holders), nodes=nodes),
                     actual(rec(WEB, "a"), *(rec(s, n) for s, n in holders)))
    assert brief(plan)[0] == "migrate web a->b node_changed live"
    return [e.message for e in plan.errors]


CASES = [
    pytest.param(
        (A, B), [],
        ["instance web: cannot migrate a -> b: VNC display 1 (port 5901 on 127.0.0.1) stays held by the source until the migration ends (a and b share the address); change vnc.display with the node to move it by a restart"],
        id="shared_address",
    ),
    pytest.param((A, B2), [], [], id="other_address"),
    pytest.param(
        (A, B2), [(spec("other", node="b", vnc=Vnc(display=1)), "b")],
        ["instance web: cannot migrate a -> b: VNC display 1 (port 5901 on 127.0.0.2) is in use by instance other on b"],
        id="held_on_target",
    ),
    pytest.param(
        (A, B2, C2), [(spec("other", node="c", vnc=Vnc(bind="0.0.0.0", display=1)), "c")],
        ["instance web: cannot migrate a -> b: VNC display 1 (port 5901 on 127.0.0.2) is in use by instance other on c"],
        id="held_on_a_node_sharing_the_target_address",
    ),
    pytest.param(
        (A, B2), [(spec("other", node="b", vnc=Vnc(bind="127.0.0.2", display=1)), "b")],
        [],
        id="other_bind_address",
    ),
    pytest.param(
        (A, B2), [(spec("other", node="b", vnc=Vnc(display=2)), "b")],
        [],
        id="other_display",
    ),
    pytest.param(
        (A, B2), [(spec("other", node="a", vnc=Vnc(display=1)), "a")],
        [],
        id="held_on_another_host",
    ),
]


@pytest.mark.parametrize(("nodes", "holders", "expected"), CASES)
def test_migration_that_cannot_bind_its_display_is_refused(
    nodes: tuple[NodeSpec, ...], holders: list[Holder], expected: list[str]
) -> None:
    assert _errors(nodes, holders) == expected


def test_migration_without_vnc_between_nodes_sharing_an_address_is_planned() -> None:
    plain = replace(WEB, vnc=None)
    plan = make_plan(desired(replace(plain, node="b"), nodes=(A, B)), actual(rec(plain, "a")))
    assert brief(plan) == ["migrate web a->b node_changed live"]
    assert plan.errors == ()


def test_refusal_rendered() -> None:
    plan = make_plan(desired(MOVED, nodes=(A, B)), actual(rec(WEB, "a")))
    assert render_text(plan) == (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  -> web from a to b (live migration)\n"
        "      # the node changed in the manifests\n"
        "      node: \"a\" -> \"b\"\n"
        "\n"
        "Errors:\n"
        "\n"
        "  x instance web: cannot migrate a -> b: VNC display 1 (port 5901 on 127.0.0.1) stays held by the "
        "source until the migration ends (a and b share the address); change vnc.display with the node to "
        "move it by a restart\n"
        "\n"
        "Plan: 0 to start, 0 to restart, 1 to migrate, 0 to stop.\n"
        "1 error: this plan cannot be applied.\n"
    )


def test_a_holder_stopped_in_an_earlier_phase_releases_the_display() -> None:
    holder = spec("other", node="b", vnc=Vnc(display=1))
    state = actual(rec(WEB, "a"), rec(holder, "b"))
    nodes = {n.name: n for n in (A, B2)}
    stop = Action("other", ActionKind.STOP, Reason.PRUNED, "b")
    move = Action("web", ActionKind.MIGRATE, Reason.NODE_CHANGED, "b", source_node="a", phase=1)
    assert migration_problems([stop, move], state, nodes) == []
    same_phase = [stop, replace(move, phase=0)]
    assert [p.message for p in migration_problems(same_phase, state, nodes)] == [
        "instance web: cannot migrate a -> b: VNC display 1 (port 5901 on 127.0.0.2) is in use by instance other on b"
    ]


def test_a_holder_without_a_process_holds_nothing() -> None:
    holder = spec("other", node="b", vnc=Vnc(display=1))
    state = actual(rec(WEB, "a"), rec(holder, "b", RunState.STOPPED))
    move = Action("web", ActionKind.MIGRATE, Reason.NODE_CHANGED, "b", source_node="a")
    assert migration_problems([move], state, {n.name: n for n in (A, B2)}) == []
