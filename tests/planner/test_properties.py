"""Properties of the planner: applying a plan and planning again gives an empty plan; determinism."""

from __future__ import annotations

from dataclasses import fields, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.actual import ActualInstance, ActualState, RunState, StopCause
from reconciler.model import DesiredState, InstanceSpec, Migration, MigrationMode, RunStrategy, UpdatePolicy
from reconciler.planner import make_plan
from reconciler.planner.policy import POLICY

from .factories import node
from .simulate import simulate

NAMES = ("a1", "b2", "c3", "d4", "e5")
NODES = ("n1", "n2", "n3")

specs = st.builds(
    InstanceSpec,
    name=st.sampled_from(NAMES),
    memory_mib=st.sampled_from((256, 512, 1024)),
    vcpus=st.sampled_from((1, 2)),
    node=st.one_of(st.none(), st.sampled_from(NODES)),
    run_strategy=st.sampled_from(tuple(RunStrategy)),
    update_policy=st.sampled_from(tuple(UpdatePolicy)),
    protect=st.booleans(),
    migration=st.builds(Migration, mode=st.sampled_from(tuple(MigrationMode))),
)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[DesiredState, ActualState]:
    declared = {s.name: s for s in draw(st.lists(specs, max_size=5))}
    capacities = draw(st.lists(st.one_of(st.none(), st.sampled_from((1024, 2048, 4096))),
                               min_size=3, max_size=3))
    nodes = {n: node(n, c) for n, c in zip(NODES, capacities, strict=True)}
    recs: list[ActualInstance] = []
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=5)):
        base = declared.get(name) or draw(specs.map(lambda s, n=name: replace(s, name=n)))
        for where in draw(st.lists(st.sampled_from(NODES), unique=True, min_size=1, max_size=2)):
            recorded = draw(st.sampled_from((base, replace(base, vcpus=3), None)))
            state = draw(st.sampled_from(tuple(RunState)))
            cause = draw(st.one_of(st.none(), st.sampled_from(tuple(StopCause))))
            recs.append(ActualInstance(name, where, state, recorded, stop_cause=cause))
    desired = DesiredState(instances=declared, nodes=nodes, prune=draw(st.booleans()))
    return desired, ActualState(instances=tuple(recs))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.one_of(st.none(), st.booleans()))
def test_planning_the_applied_state_gives_an_empty_plan(world: tuple[DesiredState, ActualState],
                                                         prune: bool | None) -> None:
    desired, actual = world
    plan = make_plan(desired, actual, prune=prune, allow_empty=True)
    if plan.errors:
        return  # an erroneous plan is never applied
    after = simulate(plan, actual, desired)
    again = make_plan(desired, after, prune=prune, allow_empty=True)
    assert again.actions == (), (plan.actions, again.actions)
    assert again.errors == ()


@settings(max_examples=200, deadline=None)
@given(worlds())
def test_plan_is_deterministic(world: tuple[DesiredState, ActualState]) -> None:
    desired, actual = world
    shuffled = ActualState(instances=tuple(reversed(actual.instances)))
    assert make_plan(desired, actual) == make_plan(desired, shuffled)


def test_policy_table_covers_every_spec_field() -> None:
    assert set(POLICY) == {f.name for f in fields(InstanceSpec)}
