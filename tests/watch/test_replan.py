"""The daemon's replan (reconciler.watch.replan) equals the full `make_plan` after any sequence of
changes, while looking only at the instances that changed or were not settled (property test, pure)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import model
from reconciler.actual import ActualInstance, ActualState, Reach, RunState, UnreachableNode
from reconciler.model import DesiredState, InstanceSpec, NodeSpec, RunStrategy
from reconciler.planner import make_plan
from reconciler.watch.replan import Replanner

NODES = {n: NodeSpec(name=n, state_dir=f"/s/{n}", memory_mib=4096) for n in ("a", "b")}
NAMES = [f"vm{i}" for i in range(8)]


def spec(name: str, node: str = "a", memory: int = 256,
         strategy: RunStrategy = RunStrategy.ALWAYS) -> InstanceSpec:
    return InstanceSpec(name=name, node=node, memory_mib=memory, run_strategy=strategy)


def running(s: InstanceSpec, node: str | None = None) -> ActualInstance:
    return ActualInstance(name=s.name, node=node or s.node or "a", state=RunState.RUNNING, spec=s,
                          spec_hash=model.spec_hash(s), pid=1000 + NAMES.index(s.name))


def desired_of(specs: dict[str, InstanceSpec], nodes: dict[str, NodeSpec] = NODES,
               prune: bool = False) -> DesiredState:
    return DesiredState(instances=dict(sorted(specs.items())), nodes=nodes, prune=prune,
                        spec_hashes={n: model.spec_hash(s) for n, s in specs.items()})


# One change to the world: (what, instance index, a number for the new value).
CHANGE = st.tuples(st.sampled_from(["memory", "node", "halt", "drop-spec", "add-spec", "crash", "stop",
                                    "drop-record", "converge", "nodes", "prune", "unreachable", "nothing"]),
                   st.integers(0, len(NAMES) - 1), st.integers(1, 8))


@settings(max_examples=150, deadline=None)
@given(st.lists(CHANGE, min_size=1, max_size=12))
def test_replan_equals_the_full_plan(changes: list[tuple[str, int, int]]) -> None:
    specs = {n: spec(n, "a" if i % 2 else "b") for i, n in enumerate(NAMES[:6])}
    actual = {n: running(s) for n, s in specs.items()}
    nodes, prune, unreachable = NODES, False, ()
    replanner = Replanner()
    for what, i, k in changes:
        name = NAMES[i]
        if what == "memory" and name in specs:
            specs[name] = replace(specs[name], memory_mib=128 * k)
        elif what == "node" and name in specs:
            specs[name] = replace(specs[name], node="a" if k % 2 else "b")
        elif what == "halt" and name in specs:
            specs[name] = replace(specs[name], run_strategy=RunStrategy.HALTED)
        elif what == "drop-spec":
            specs.pop(name, None)
        elif what == "add-spec" and name not in specs:
            specs[name] = spec(name, memory=64 * k)
        elif what == "crash" and name in actual:
            actual[name] = replace(actual[name], state=RunState.CRASHED, pid=None)
        elif what == "stop" and name in actual:
            actual[name] = replace(actual[name], state=RunState.STOPPED, pid=None)
        elif what == "drop-record":
            actual.pop(name, None)
        elif what == "converge" and name in specs:  # what an executed action leaves
            actual[name] = running(specs[name])
        elif what == "nodes":
            nodes = NODES if k % 2 else {**NODES, "c": NodeSpec(name="c", state_dir="/s/c", memory_mib=64)}
        elif what == "prune":
            prune = bool(k % 2)
        elif what == "unreachable":
            unreachable = (UnreachableNode("b", Reach.UNREACHABLE, "x"),) if k % 3 == 0 else ()
        desired = desired_of(specs, nodes, prune)
        state = ActualState(instances=tuple(sorted(actual.values(), key=lambda r: (r.name, r.node))),
                            unreachable=unreachable)
        assert replanner.plan(desired, state) == make_plan(desired, state), (what, name)


def test_after_one_edit_only_the_edited_instance_is_planned() -> None:
    specs = {n: spec(n) for n in NAMES}
    actual = ActualState(instances=tuple(running(s) for s in specs.values()))
    replanner = Replanner()
    replanner.plan(desired_of(specs), actual)
    assert replanner.last_targets is None  # the first plan is full
    specs["vm3"] = replace(specs["vm3"], memory_mib=512)
    desired = desired_of(specs)
    plan = replanner.plan(desired, actual)
    assert replanner.last_targets == 1
    assert plan == make_plan(desired, actual) and [a.name for a in plan.actions] == ["vm3"]
    converged = ActualState(instances=tuple(running(s) for s in specs.values()))  # all new objects
    replanner.plan(desired, converged)
    assert replanner.last_targets == len(NAMES)
