"""Fuzzing the whole pure pipeline: random worlds -> make_plan -> text and JSON, never an exception.

Desired state is valid by construction (it comes from generated manifests through the real loader, so it
has every shape the loader can build); actual state is random: records in every RunState and StopCause,
on declared and undeclared nodes, with the desired spec, another instance's spec, or none, duplicates on
several nodes. make_plan must not raise, must be deterministic (same input -> equal plan and identical
bytes), the JSON must round-trip, and every error/warning must be one line.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from reconciler.actual import ActualInstance, ActualState, RunState, StopCause
from reconciler.model import DesiredState
from reconciler.planner import ActionKind, make_plan
from reconciler.render.json import plan_from_dict, plan_to_dict, render_json
from reconciler.render.text import RenderOptions, render_text

from .contract import load_bytes
from .manifests import dump, manifest_sets
from .profiles import fuzz


@st.composite
def worlds(draw: st.DrawFn) -> tuple[DesiredState, ActualState]:
    desired = load_bytes({"m.yaml": dump(draw(manifest_sets()))}).desired
    assert desired is not None
    names = [*desired.instances, "orphan-1", "orphan-2"]
    nodes = [*desired.nodes, "gone-node"]
    specs = [None, *desired.instances.values()]
    recs = []
    for _ in range(draw(st.integers(0, 8))):
        state = draw(st.sampled_from(list(RunState)))
        recs.append(ActualInstance(
            name=draw(st.sampled_from(names)), node=draw(st.sampled_from(nodes)), state=state,
            spec=draw(st.sampled_from(specs)), pid=1000 if state.has_process else None,
            started_at=draw(st.one_of(st.none(), st.floats(0, 2e9))),
            stop_cause=draw(st.one_of(st.none(), st.sampled_from(list(StopCause)))),
            revision=draw(st.one_of(st.none(), st.just("abc123"))),
            qmp_unresponsive=state is RunState.UNKNOWN and draw(st.booleans())))
    unique = {(r.name, r.node): r for r in recs}  # discovery gives one record per (name, node)
    return desired, ActualState(tuple(unique.values()))


@fuzz(300)
@given(worlds(), st.one_of(st.none(), st.booleans()), st.booleans(), st.booleans(), st.booleans())
def test_make_plan_never_raises_and_is_deterministic(
    world: tuple[DesiredState, ActualState], prune: bool | None, targeted: bool, allow_empty: bool,
    force: bool,
) -> None:
    desired, actual = world
    targets = frozenset([*list(desired.instances)[:1], "nope"]) if targeted else None
    plan = make_plan(desired, actual, prune=prune, targets=targets, allow_empty=allow_empty, force=force)
    again = make_plan(desired, ActualState(tuple(reversed(actual.instances))), prune=prune, targets=targets,
                      allow_empty=allow_empty, force=force)
    assert again == plan
    text = render_text(plan)
    assert text == render_text(again)
    assert render_text(plan, RenderOptions(color=True))
    assert render_json(plan) == render_json(again)
    assert plan_from_dict(json.loads(render_json(plan))) == plan
    assert plan_from_dict(plan_to_dict(plan)) == plan
    for line in [e.message for e in plan.errors] + list(plan.warnings):
        assert "\n" not in line
    declared = set(desired.nodes)
    for action in plan.actions:  # actions only land on declared nodes or come from recorded ones
        assert action.node in declared or action.node in {r.node for r in actual.instances}
    unresponsive = {(r.name, r.node) for r in actual.instances if r.qmp_unresponsive}
    for action in plan.actions:  # signals only under --force, only to a verified process that is silent
        if action.by_signal:
            assert force and action.kind is ActionKind.STOP and (action.name, action.node) in unresponsive
